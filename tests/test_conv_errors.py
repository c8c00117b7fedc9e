"""Bad input to the convolution ops: the same clear error on every backend, inputs untouched."""

import numpy as np
import pytest

import fastconv
from support import bad_input_cases, check_bad_input

f32 = np.float32
X, W = np.ones((2, 4, 6, 5), f32), np.ones((6, 4, 3, 2), f32)


def _x(shape=(2, 4, 6, 5), dtype=f32):
    return np.ones(shape, dtype)


CASES = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("x_2d", fastconv.conv2d, (_x((6, 5)), W), {}, ValueError,
     "expected x with 3 dims (C_in, H, W) or 4 dims (N, C_in, H, W), got shape (6, 5)"),
    ("empty_image", fastconv.conv2d, (_x((1, 4, 9, 0)), W), {"padding": 1}, ValueError,
     "x of shape (1, 4, 9, 0) has an empty image; only the batch may be empty"),
    ("transpose_empty_image", fastconv.conv_transpose2d, (_x((1, 4, 9, 0)), np.ones((4, 2, 3, 3), f32)), {},
     ValueError, "has an empty image"),
    ("w_3d", fastconv.conv2d, (X, np.ones((6, 2, 3), f32)), {}, ValueError, "expected w with 4 dims"),
    ("channel_mismatch", fastconv.conv2d, (X, np.ones((6, 3, 3, 2), f32)), {}, ValueError, "input channels per group"),
    ("groups_not_dividing", fastconv.conv2d, (X, W), {"groups": 3}, ValueError, "groups=3 must divide"),
    ("groups_zero", fastconv.conv2d, (X, W), {"groups": 0}, ValueError, "groups >= 1"),
    ("negative_padding", fastconv.conv2d, (X, W), {"padding": -1}, ValueError, "non-negative"),
    ("negative_side_padding", fastconv.conv2d, (X, W), {"padding": ((0, -1), (1, 1))}, ValueError, "non-negative"),
    ("bad_padding_string", fastconv.conv2d, (X, W), {"padding": "full"}, ValueError, "'full'"),
    ("same_with_stride", fastconv.conv2d, (X, W), {"padding": "same", "stride": 2}, ValueError, "stride 1"),
    ("kernel_larger_than_padded", fastconv.conv2d, (_x((2, 4, 2, 5)), W), {"dilation": 2}, ValueError, "larger than the padded input"),
    ("stride_zero", fastconv.conv2d, (X, W), {"stride": (1, 0)}, ValueError, "stride >= 1"),
    ("stride_float", fastconv.conv2d, (X, W), {"stride": 1.5}, TypeError, "stride"),
    ("stride_bool", fastconv.conv2d, (X, W), {"stride": True}, TypeError, "stride"),
    ("dilation_triple", fastconv.conv2d, (X, W), {"dilation": (1, 1, 1)}, TypeError, "dilation"),
    ("integer_x", fastconv.conv2d, (_x(dtype=np.int32), W), {}, TypeError, "float32 or float64, got int32"),
    ("float16_x", fastconv.conv2d, (_x(dtype=np.float16), W), {}, TypeError, "float16"),
    ("mixed_dtypes", fastconv.conv2d, (_x(dtype=np.float64), W), {}, TypeError, "one dtype"),
    ("list_input", fastconv.conv2d, (X.tolist(), W), {}, TypeError, "numpy.ndarray"),
    ("bias_shape", fastconv.conv2d, (X, W, np.ones(5, f32)), {}, ValueError, "expected b of shape (6,)"),
    ("bias_2d", fastconv.conv2d, (X, W, np.ones((6, 1), f32)), {}, ValueError, "expected b with 1 dims"),
    ("dy_shape", fastconv.conv2d_backward, (np.ones((2, 6, 4, 3), f32), X, W), {}, ValueError, "expected dy of shape (2, 6, 4, 4)"),
    ("needs_short", fastconv.conv2d_backward, (np.ones((2, 6, 4, 4), f32), X, W), {"needs": (True, True)}, TypeError, "needs"),
    ("needs_not_bool", fastconv.conv2d_backward, (np.ones((2, 6, 4, 4), f32), X, W), {"needs": (1, 1, 1)}, TypeError, "needs"),
    ("conv1d_4d", fastconv.conv1d, (X, W), {}, ValueError, "expected x with 2 dims (C_in, L) or 3 dims (N, C_in, L)"),
    ("conv1d_negative_side", fastconv.conv1d, (_x((2, 4, 9)), np.ones((6, 4, 3), f32)), {"padding": (-1, 2)}, ValueError, "non-negative"),
    ("transpose_output_padding", fastconv.conv_transpose2d, (X, np.ones((4, 3, 3, 3), f32)), {"stride": 2, "output_padding": 2}, ValueError, "output_padding 2"),
    ("transpose_channels", fastconv.conv_transpose2d, (X, np.ones((3, 3, 3, 3), f32)), {}, ValueError, "x has C_in=4"),
    ("transpose_same", fastconv.conv_transpose2d, (X, np.ones((4, 3, 3, 3), f32)), {"padding": "same"}, ValueError, "padding"),
    ("transpose_output_too_small", fastconv.conv_transpose2d, (_x((2, 4, 1, 1)), np.ones((4, 3, 1, 1), f32)), {"padding": 1}, ValueError, "too small"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(CASES))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


def test_read_only_and_huge_channel_counts_do_not_crash(backend):
    x = np.ones((1, 4096, 1, 1), f32)
    x.setflags(write=False)
    w = np.ones((3, 4096, 1, 1), f32)
    y = fastconv.conv2d(x, w, backend=backend)
    assert y.shape == (1, 3, 1, 1) and (y == 4096).all()


def test_remembered_configurations_are_still_validated():
    """conv_params and pool_params remember what they computed per argument list (a model's layers
    repeat theirs every step), keyed so that arguments which compare equal to a remembered good
    one but are mistakes (True for 1, 1.0 for 1) still raise; errors are never remembered."""
    from fastconv._params import conv_params

    good = fastconv.conv2d(X, W, stride=1, padding=(1, 1), dilation=1, groups=1, backend="reference")
    key = ("conv2d", X.shape, W.shape, 1, (1, 1), 1, 1)
    assert key in conv_params.cache
    for bad, error in [({"stride": True}, TypeError), ({"padding": (1.0, 1)}, TypeError),
                       ({"padding": (True, 1)}, TypeError), ({"groups": True}, TypeError),
                       ({"dilation": 0}, ValueError)]:
        for _ in range(2):  # the second time too: nothing of the first failure is remembered
            with pytest.raises(error):
                fastconv.conv2d(X, W, **{"stride": 1, "padding": (1, 1), "dilation": 1, "groups": 1, **bad},
                                backend="reference")
    # a spelling the cache does not key (a NumPy integer, a list) takes the full path: same result
    for spelled in [{"padding": [1, 1]}, {"padding": np.int64(1)}, {"stride": (np.int32(1), 1)}]:
        np.testing.assert_array_equal(fastconv.conv2d(X, W, **{"padding": 1, **spelled}, backend="reference"), good)
    with pytest.raises(ValueError, match="kernel_size >= 1"):
        fastconv.max_pool2d(X, 0)
    fastconv.max_pool2d(X, 2)
    with pytest.raises(TypeError, match="ceil_mode"):
        fastconv.max_pool2d(X, 2, ceil_mode=1)  # ceil_mode=True would be remembered; 1 is refused
