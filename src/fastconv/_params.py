"""Frozen parameter objects and the one place where output shapes are computed.

The public API turns the many spellings users may write (``padding=1``, ``(1, 2)``, ``'same'``,
``((top, bottom), (left, right))``) into one explicit form before any backend runs. Backends
receive these objects and never re-derive a size, so a shape bug can only live here.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass


# --------------------------------------------------------------------------------------------
# results remembered per configuration: validation once per layer, not once per call
# --------------------------------------------------------------------------------------------

class _NotPlain(Exception):
    """An argument :func:`_plain` does not key a cache with (the call takes the full path)."""


_BOOL, _LIST, _FLOAT = object(), object(), object()  # tags no user value can spell


def _plain(value):
    """``value`` as a cache key that equals another only for an argument of the same types.

    Plain Python ints, strs and None key as themselves; tuples element by element; a bool, a float
    and a list get a private tag, so ``stride=True`` or ``stride=1.0`` can never meet the entry of
    ``stride=1`` (which compare equal) nor a list that of a tuple (a NaN never meets any entry).
    Anything else (a NumPy integer, ...) is not cached: it takes the full path, whose validation
    decides about it every time.
    """
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if kind is tuple:
        for v in value:
            if type(v) is not int:
                return tuple(map(_plain, value))
        return value  # the common case, a shape or an (h, w) of ints: no new tuple
    if kind is bool:
        return (_BOOL, value)
    if kind is float:  # momentum, eps: a float never meets an int's entry (1.0 == 1)
        return (_FLOAT, value)
    if kind is list:
        return (_LIST, tuple(map(_plain, value)))
    raise _NotPlain


#: entries per cached function before it starts over (a model has a few dozen configurations)
CACHE_SIZE = 4096


def remembered(fn):
    """``fn(op, *args)``, a pure function of its arguments that validates them (raising
    ValueError/TypeError) and returns an immutable result, remembered per argument list.

    The call a model makes on every step (the same layer shapes and hyper-parameters) then costs
    a dict lookup instead of the validation: a fast path for inputs already known to be valid.
    Only results are kept, never errors, so a bad call raises its full message every time; and
    arguments of other types than :func:`_plain` takes always run the full validation.
    """
    cache: dict = {}

    @functools.wraps(fn)
    def cached(op, *args):
        try:
            key = (op, *map(_plain, args))
        except _NotPlain:
            return fn(op, *args)
        return kept(cache, key, fn, op, *args)

    cached.cache = cache  # for tests
    return cached


def kept(cache: dict, key, make, *args):
    """``cache[key]``, made by ``make(*args)`` and kept on a miss (errors are never kept); a full
    cache (CACHE_SIZE entries) is emptied first."""
    found = cache.get(key)
    if found is None:
        found = make(*args)
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[key] = found
    return found


# --------------------------------------------------------------------------------------------
# scalar normalisation
# --------------------------------------------------------------------------------------------

def _is_int(value) -> bool:
    # bool is an int subclass, but `stride=True` is a mistake, not a stride of 1; a plain int
    # first, without the ABC check (the common case, several times a call)
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def as_int(op: str, name: str, value, *, minimum: int | None = None) -> int:
    """``value`` as a plain int, or a TypeError/ValueError that names the op and the value."""
    if not _is_int(value):
        raise TypeError(f"{op}: expected {name} to be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: expected {name} >= {minimum}, got {value}")
    return value


def as_pair(op: str, name: str, value, *, minimum: int | None = None,
            single: bool = True) -> tuple[int, int]:
    """An int, a sequence of two ints, or (with ``single``) a sequence of one int, as a pair
    ``(h, w)``. PyTorch's 2-d conv and pooling ops expand a 1-sequence like an int
    (``padding=(1,)`` is ``padding=1``), so every such parameter takes it."""
    kind = type(value)  # the common spellings first, without the general checks
    if kind is int:
        if minimum is None or value >= minimum:
            return (value, value)
    elif kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        if minimum is None or min(value) >= minimum:
            return value
    if _is_int(value):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and (len(value) == 2 or (single and len(value) == 1)):
        pair = tuple(value) * (3 - len(value))  # (k,) -> (k, k)
    else:
        expected = "an int or a pair of ints" + (" (or a 1-tuple)" if single else "")
        raise TypeError(f"{op}: expected {name} to be {expected}, got {value!r}")
    return tuple(as_int(op, name, v, minimum=minimum) for v in pair)


def as_single(op: str, name: str, value, *, minimum: int | None = None) -> int:
    """An int or a 1-sequence of an int (PyTorch's 1-d spelling ``(k,)``), as an int."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return as_int(op, name, value, minimum=minimum)


# --------------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvParams:
    """One 2-d convolution problem: sizes and hyper-parameters, padding explicit per side.

    The same object describes the forward (fprop), backward-input (dgrad) and backward-weight
    (wgrad) passes: x is (N, C_in, H, W), w is (C_out, C_in/groups, KH, KW), y and dy are
    (N, C_out, OH, OW).
    """

    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    KH: int
    KW: int
    OH: int
    OW: int
    stride_h: int = 1
    stride_w: int = 1
    pad_t: int = 0
    pad_b: int = 0
    pad_l: int = 0
    pad_r: int = 0
    dil_h: int = 1
    dil_w: int = 1
    groups: int = 1

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_in, self.H, self.W)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.C_out, self.C_in // self.groups, self.KH, self.KW)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_out, self.OH, self.OW)

    @property
    def flops(self) -> int:
        """Multiply-adds times two, per pass (the same count for fprop, dgrad and wgrad)."""
        return 2 * self.N * self.C_out * self.OH * self.OW * (self.C_in // self.groups) * self.KH * self.KW


@remembered
def conv_padding(op: str, padding, K: tuple[int, int], dilation: tuple[int, int],
                 stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """Any accepted padding spelling as ``(top, bottom, left, right)``."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1 (as in PyTorch), got stride {stride}")
            sides = []
            for k, d in zip(K, dilation):
                total = d * (k - 1)
                # PyTorch puts the odd pixel on the bottom/right side
                sides += [total // 2, total - total // 2]
            return tuple(sides)
        raise ValueError(f"{op}: padding must be an int, a pair, 'same', 'valid' or "
                         f"((top, bottom), (left, right)), got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        # explicit sides: a 1-tuple here would read as a side count, so pairs only
        (t, b), (l, r) = (as_pair(op, "padding", p, single=False) for p in padding)
        sides = (t, b, l, r)
    else:
        ph, pw = as_pair(op, "padding", padding)
        sides = (ph, ph, pw, pw)
    if min(sides) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return sides


def conv_output_size(size, k, pad_lo, pad_hi, stride, dilation):
    """Output size along one axis: windows of span dilation*(k-1)+1 over the padded input.
    Plain arithmetic, so it also serves symbolic sizes (fastconv.torch's fake kernels)."""
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


@remembered
def conv_params(op: str, x_shape, w_shape, stride, padding, dilation, groups) -> ConvParams:
    """Validate the hyper-parameters against the shapes and compute the output size."""
    N, C_in, H, W = x_shape
    C_out, C_in_g, KH, KW = w_shape
    stride = as_pair(op, "stride", stride, minimum=1)
    dilation = as_pair(op, "dilation", dilation, minimum=1)
    groups = as_int(op, "groups", groups, minimum=1)
    pad_t, pad_b, pad_l, pad_r = conv_padding(op, padding, (KH, KW), dilation, stride)
    if C_in % groups or C_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide C_in={C_in} and C_out={C_out}")
    if C_in_g * groups != C_in:
        raise ValueError(f"{op}: w has {C_in_g} input channels per group; x has C_in={C_in} with "
                         f"groups={groups}, so expected {C_in // groups}")
    if min(KH, KW) < 1 or C_out < 1 or C_in < 1:
        raise ValueError(f"{op}: expected non-empty channels and kernel, got x {tuple(x_shape)} and w {tuple(w_shape)}")
    span_h, span_w = dilation[0] * (KH - 1) + 1, dilation[1] * (KW - 1) + 1
    Hp, Wp = H + pad_t + pad_b, W + pad_l + pad_r
    if span_h > Hp or span_w > Wp:
        raise ValueError(f"{op}: kernel {KH}x{KW} with dilation {dilation} spans {span_h}x{span_w}, "
                         f"larger than the padded input {Hp}x{Wp}")
    if N > 0 and H * W == 0:
        # PyTorch: "only zero batch or zero channel inputs are supported"; padding would otherwise
        # make windows over an image that has no pixels
        raise ValueError(f"{op}: x of shape {tuple(x_shape)} has an empty image; only the batch "
                         f"may be empty")
    OH = conv_output_size(H, KH, pad_t, pad_b, stride[0], dilation[0])
    OW = conv_output_size(W, KW, pad_l, pad_r, stride[1], dilation[1])
    return ConvParams(N, C_in, H, W, C_out, KH, KW, OH, OW, stride[0], stride[1],
                      pad_t, pad_b, pad_l, pad_r, dilation[0], dilation[1], groups)


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolParams:
    """One 2-d pooling problem: x is (N, C, H, W), y and dy are (N, C, OH, OW).

    ``pad_h``/``pad_w`` are PyTorch's symmetric paddings; with ``ceil_mode`` the last window may
    reach past the bottom/right padding, and kernels clip it there.
    """

    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    OH: int
    OW: int
    stride_h: int
    stride_w: int
    pad_h: int = 0
    pad_w: int = 0
    dil_h: int = 1
    dil_w: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.OH, self.OW)


def pool_output_size(size: int, k: int, pad: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``: with ceil_mode a window may not start in the right padding."""
    span = dilation * (k - 1) + 1
    numerator = size + 2 * pad - span + ((stride - 1) if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@remembered
def pool_params(op: str, x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                count_include_pad=True, divisor_override=None) -> PoolParams:
    N, C, H, W = x_shape
    if min(C, H, W) < 1:
        # PyTorch: "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size"
        raise ValueError(f"{op}: expected x with non-empty C, H and W (only the batch may be "
                         f"empty), got shape {tuple(x_shape)}")
    KH, KW = as_pair(op, "kernel_size", kernel_size, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = (KH, KW)  # PyTorch: stride defaults to the kernel size
    SH, SW = as_pair(op, "stride", stride, minimum=1)
    PH, PW = as_pair(op, "padding", padding, minimum=0)
    DH, DW = as_pair(op, "dilation", dilation, minimum=1)
    if not isinstance(ceil_mode, bool) or not isinstance(count_include_pad, bool):
        raise TypeError(f"{op}: ceil_mode and count_include_pad must be bools, "
                        f"got {ceil_mode!r} and {count_include_pad!r}")
    if divisor_override is not None:
        divisor_override = as_int(op, "divisor_override", divisor_override)
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
    if PH > KH // 2 or PW > KW // 2:
        raise ValueError(f"{op}: padding {(PH, PW)} must be at most half the kernel size {(KH, KW)}")
    OH = pool_output_size(H, KH, PH, SH, DH, ceil_mode)
    OW = pool_output_size(W, KW, PW, SW, DW, ceil_mode)
    if OH < 1 or OW < 1:
        raise ValueError(f"{op}: input {H}x{W} with kernel {(KH, KW)}, stride {(SH, SW)}, padding "
                         f"{(PH, PW)}, dilation {(DH, DW)} gives output {OH}x{OW}, which is too small")
    # With dilation a window that starts in the padding can step over the whole image. PyTorch then
    # returns -inf with an index outside the image, which its own backward writes out of bounds
    # (a crash); here it is an error. Windows starting inside the image always hit it.
    for axis, size, k, s, pad, d, out in (("H", H, KH, SH, PH, DH, OH), ("W", W, KW, SW, PW, DW, OW)):
        for o in range(min(out, pad // s + 1)):
            start = o * s - pad
            if not any(0 <= start + t * d < size for t in range(k)):
                raise ValueError(f"{op}: window {o} along {axis} (taps {start}, {start + d}, ... with "
                                 f"dilation {d}) lies entirely in the padding of the input {H}x{W}")
    return PoolParams(N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW,
                      bool(ceil_mode), bool(count_include_pad), divisor_override)


@dataclass(frozen=True)
class AdaptivePoolParams:
    """Adaptive pooling, x (N, C, H, W) to y (N, C, OH, OW): window i along H spans
    ``[floor(i*H/OH), ceil((i+1)*H/OH))``, so windows may overlap and differ in size."""

    N: int
    C: int
    H: int
    W: int
    OH: int
    OW: int

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.OH, self.OW)


@remembered
def adaptive_output_size(op: str, output_size, image) -> tuple[int, int]:
    """``output_size`` (an int, or a pair whose ``None`` entries keep that size of ``image``, the
    input's (H, W)) as ``(OH, OW)``. As in PyTorch, a size may be 0 (an empty output), and a
    1-tuple is refused (unlike the conv and pooling windows, PyTorch does not expand it here)."""
    if _is_int(output_size):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise TypeError(f"{op}: expected output_size to be an int or a pair, got {output_size!r}")
    return tuple(size if o is None else as_int(op, "output_size", o, minimum=0)
                 for o, size in zip(output_size, image))


@remembered
def adaptive_pool_params(op: str, x_shape, output_size) -> AdaptivePoolParams:
    """``output_size`` an int or a pair; ``None`` in the pair keeps that input size (PyTorch).
    The batch and the channels may be empty, the image may not (PyTorch's rule)."""
    N, C, H, W = x_shape
    OH, OW = adaptive_output_size(op, output_size, (H, W))
    if H < 1 or W < 1:
        raise ValueError(f"{op}: expected a non-empty image, got {H}x{W}")
    return AdaptivePoolParams(N, C, H, W, OH, OW)


@remembered
def conv_transpose_params(op: str, x_shape, w_shape, stride, padding, output_padding, groups,
                          dilation) -> ConvParams:
    """A transposed convolution as the convolution whose backward-input it is.

    x is (N, C_in, H, W) and w is (C_in, C_out/groups, KH, KW); the output y is
    (N, C_out, OH, OW) with ``OH = (H-1)*stride - 2*padding + dilation*(KH-1) + output_padding + 1``.
    The returned params describe the *equivalent convolution* from y-space to x-space: its input is
    (N, C_out, OH, OW), its weight is w as given, its output is (N, C_in, H, W). Its OH/OW are set to
    H/W explicitly: with output_padding the formula could give one more row, which the transposed
    output does not have (kernels always use ``p.OH``/``p.OW``, never recompute them).
    """
    N, C_in, H, W = x_shape
    C_in_w, C_out_g, KH, KW = w_shape
    stride = as_pair(op, "stride", stride, minimum=1)
    dilation = as_pair(op, "dilation", dilation, minimum=1)
    groups = as_int(op, "groups", groups, minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair, got {padding!r}")
    ph, pw = as_pair(op, "padding", padding, minimum=0)
    oph, opw = as_pair(op, "output_padding", output_padding, minimum=0)
    if C_in_w != C_in:
        raise ValueError(f"{op}: w has {C_in_w} input channels (dim 0), x has C_in={C_in}")
    if C_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide C_in={C_in}")
    if min(KH, KW, C_out_g, C_in) < 1:
        raise ValueError(f"{op}: expected non-empty channels and kernel, got x {tuple(x_shape)} and w {tuple(w_shape)}")
    for o, s, d, axis in ((oph, stride[0], dilation[0], "H"), (opw, stride[1], dilation[1], "W")):
        if o >= s and o >= d:  # PyTorch's rule: smaller than either stride or dilation
            raise ValueError(f"{op}: output_padding {o} along {axis} must be smaller than either "
                             f"stride {s} or dilation {d}")
    OH = (H - 1) * stride[0] - 2 * ph + dilation[0] * (KH - 1) + oph + 1
    OW = (W - 1) * stride[1] - 2 * pw + dilation[1] * (KW - 1) + opw + 1
    # PyTorch's rule: an empty batch may have an empty image and an empty output; otherwise both
    # must have pixels
    if N > 0 and (H < 1 or W < 1):
        raise ValueError(f"{op}: x of shape {tuple(x_shape)} has an empty image; only the batch "
                         f"may be empty")
    if min(OH, OW) < (0 if N == 0 else 1):
        raise ValueError(f"{op}: input {H}x{W} with padding {(ph, pw)} gives output {OH}x{OW}, which is too small")
    return ConvParams(N, C_out_g * groups, OH, OW, C_in, KH, KW, H, W, stride[0], stride[1],
                      ph, ph, pw, pw, dilation[0], dilation[1], groups)


# --------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearParams:
    """A linear call's shapes: x as the 2-d ``x2_shape`` (M, in_features) the backends take, w as
    the 2-d ``w2_shape`` (out_features, in_features) (a 1-d w is one output feature), y's shape,
    and where the bias goes: ``b_frame`` None when there is no b or it is the ``(out_features,)``
    vector the backends add themselves, else the shape b is broadcast into and added to (the
    2-d ``(M, out_features)``, or ``y_shape``: see :func:`linear_params`)."""

    x2_shape: tuple[int, int]
    w2_shape: tuple[int, int]
    y_shape: tuple[int, ...]
    b_frame: tuple[int, ...] | None


def _broadcasts_into(shape, frame) -> bool:
    """True when an array of ``shape`` broadcasts to ``frame`` without changing it (NumPy's and
    PyTorch's rule: trailing axes aligned, each of the same size or 1)."""
    return len(shape) <= len(frame) and all(s in (1, f) for s, f in zip(reversed(shape), reversed(frame)))


@remembered
def linear_params(op: str, x_shape, w_shape, b_shape, x_contiguous: bool,
                  b_contiguous: bool | None) -> LinearParams:
    """``torch.nn.functional.linear``'s rules (PyTorch 2.13's ``at::linear``), shapes and layout only,
    so the NumPy API and fastconv.torch share them.

    x is (*, in_features) with at least 1 dim; w is (out_features, in_features) or (in_features,),
    which gives y (*, out_features) or (*). ``b_shape`` None is no bias. PyTorch adds a bias in one
    of two frames, and which bias shapes it takes depends on the frame:

    - a 2-d x, or a C-contiguous x with a bias that is a vector up to axes of size 1 (1-d, or
      ``(1, out_features)``, ``(M, 1)``, ... and itself C-contiguous): the product is one
      ``addmm`` on x's rows, so b must broadcast to ``(M, out_features)`` (M: the rows of x
      flattened; 1 for a 1-d x), and w must be 2-d;
    - otherwise b is added to y, and must broadcast to y's shape (a 1-d w takes a bias here only).

    Where both frames take a bias, they add it to the same elements (both take a b with more than
    one entry outside its last axis only when x's leading axes are one), so ``b_contiguous`` None,
    b's layout unknown (a backward given b's shape only), takes the first frame that fits.
    """
    if len(x_shape) < 1 or len(w_shape) < 1:
        raise ValueError(f"{op}: expected x and w with at least 1 dim, got shapes {tuple(x_shape)} and "
                         f"{tuple(w_shape)}")
    if len(w_shape) > 2:
        raise ValueError(f"{op}: expected w with 2 dims (out_features, in_features) or 1 dim (in_features,), "
                         f"got shape {tuple(w_shape)}")
    K = x_shape[-1]
    if K != w_shape[-1]:
        raise ValueError(f"{op}: x has {K} features in its last dim (shape {tuple(x_shape)}), "
                         f"but w {tuple(w_shape)} expects in_features={w_shape[-1]}")
    lead = tuple(x_shape[:-1])
    C_out = w_shape[0] if len(w_shape) == 2 else 1
    rows = (math.prod(lead), C_out)  # (M, out_features); M without -1: with M = 0 and K = 0 it would be ambiguous
    y_shape = (*lead, *w_shape[:-1])
    frame = None
    if b_shape is not None:
        if not isinstance(b_shape, (tuple, list)) or not all(_is_int(s) and s >= 0 for s in b_shape):
            raise TypeError(f"{op}: expected b_shape to be a tuple of sizes, got {b_shape!r}")
        b_shape = tuple(b_shape)
        vector = len(b_shape) == 1 or sum(s != 1 for s in b_shape) == 1
        addmm = (rows, True)  # PyTorch's addmm on the rows: needs a 2-d w
        added = (y_shape, False)  # b added to y
        if len(x_shape) == 2 or (vector and x_contiguous and b_contiguous):
            frames = (addmm,)
        elif vector and x_contiguous and b_contiguous is None:
            frames = (addmm, added)  # b's layout unknown: either of PyTorch's frames
        else:
            frames = (added,)
        frame = next((f for f, needs_matrix in frames
                      if _broadcasts_into(b_shape, f) and (len(w_shape) == 2 or not needs_matrix)), None)
        if frame is None and frames[0] is addmm and len(w_shape) != 2:
            raise ValueError(f"{op}: a w of 1 dim {tuple(w_shape)} takes no b of shape {b_shape} with an x "
                             f"of shape {tuple(x_shape)} (PyTorch adds this b in an addmm of x's rows, "
                             f"which needs a 2-d w)")
        if frame is None:
            into = "x's rows, out_features" if frames[0] is addmm else "y's shape"
            raise ValueError(f"{op}: expected b that broadcasts to {frames[0][0]} ({into}), got shape {b_shape} "
                             f"with x of shape {tuple(x_shape)}")
        if b_shape == (C_out,):  # the vector the backends add to each row themselves
            frame = None
    return LinearParams((rows[0], K), (C_out, K), y_shape, frame)


# --------------------------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------------------------

def batch_norm_channels(op: str, x_shape, *, name: str = "x", **vectors) -> int:
    """The channel count C of a batch-norm x (N, C, *), after checking x and each given (C,)
    vector (``vectors``: name -> shape, or None when not given) against it; shapes only, so the
    NumPy API and fastconv.torch's fake kernels share these rules.

    x has 2 or more dims, or is an empty 1-d x, which PyTorch takes as having no channels
    (C = 0); with no channels there is nothing for weight and bias to scale, and PyTorch refuses
    them (an IndexError), so this does too.
    """
    if len(x_shape) >= 2:
        C = x_shape[1]
    elif len(x_shape) == 1 and x_shape[0] == 0:
        C = 0
    else:
        raise ValueError(f"{op}: expected {name} with 2 or more dims (N, C, *) (or an empty 1-d array), "
                         f"got shape {tuple(x_shape)}")
    if C == 0 and (vectors.get("weight") is not None or vectors.get("bias") is not None):
        raise ValueError(f"{op}: x of shape {tuple(x_shape)} has no channels; expected weight and "
                         f"bias None")
    for vector, shape in vectors.items():
        if shape is not None and tuple(shape) != (C,):
            raise ValueError(f"{op}: expected {vector} of shape ({C},), got {tuple(shape)}")
    return C


def batch_norm_forward_channels(op: str, x_shape, training: bool, *, running_mean=None,
                                running_var=None, weight=None, bias=None) -> int:
    """:func:`batch_norm_channels` plus the forward's own rules, PyTorch's: training needs more
    than one value per channel (the unbiased variance divides by n - 1), and inference normalises
    with the running statistics, so both are required."""
    C = batch_norm_channels(op, x_shape, running_mean=running_mean, running_var=running_var,
                            weight=weight, bias=bias)
    if training:
        if x_shape[0] * math.prod(x_shape[2:]) == 1:  # values per channel
            raise ValueError(f"{op}: expected more than 1 value per channel when training, "
                             f"got x of shape {tuple(x_shape)}")
    elif running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required in inference "
                         f"(training=False)")
    return C
