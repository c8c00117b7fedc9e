"""C++ convolution: forward, backward-input, backward-weight, backward-bias (csrc/conv.cpp).

Each pass runs the algorithm the C++ heuristics choose, or with autotune on (fastconv.autotune)
the fastest measured among those that apply: cpp's own (each Winograd tile the float32 conv
precision allows among them) and the Cython backend's im2col + BLAS.
"""

from ... import _cpp, _dispatch
from ...autotune import IM2COL, tuned
from ._util import contiguous, empty, nthreads


def _candidates(pass_name, p, dtype):
    """The algorithms autotune times for a pass: cpp's that apply, and im2col + BLAS where the
    Cython backend is built and takes the dtype."""
    def names():
        cpp = _cpp.conv2d_algorithms(p, pass_name, dtype)
        usable = _dispatch._usable("cython") and dtype.name in _dispatch.REGISTRY["cython"].dtypes("conv")
        return cpp + (IM2COL,) if usable and cpp != ("direct",) else cpp
    return names


def _cython(func):
    return _dispatch._function("cython", "conv", func)


def cpp_pass(pass_name, p, algo, x, w, dy, nthreads, b=None):
    """One pass of the conv with ConvParams ``p`` through the binding, in the algorithm named
    ("auto": the heuristics'), on C-contiguous arrays: "fwd" y (+ b), "dgrad" dx (x unused),
    "wgrad" dw (w unused). Also what the tests and benchmarks/autotune_tiles.py time and check."""
    if pass_name == "fwd":
        y = empty(p.y_shape, x.dtype)  # (N, C_out, OH, OW)
        _cpp.conv2d_forward(x, w, b, y, p, nthreads, algo)
        return y
    if pass_name == "dgrad":
        dx = empty(p.x_shape, dy.dtype)  # (N, C_in, H, W)
        _cpp.conv2d_backward_input(dy, w, dx, p, nthreads, algo)
        return dx
    dw = empty(p.w_shape, dy.dtype)  # (C_out, C_in/groups, KH, KW)
    _cpp.conv2d_backward_weight(dy, x, dw, p, nthreads, algo)
    return dw


def conv2d_forward(x, w, b, p):
    x, w, b = contiguous(x), contiguous(w), contiguous(b)
    nt = nthreads(p.flops)

    def run(algo):
        if algo == IM2COL:
            return _cython("conv2d_forward")(x, w, b, p)
        return cpp_pass("fwd", p, algo, x, w, None, nt, b)
    return tuned("fwd", p, x.dtype, _candidates("fwd", p, x.dtype), nt, run)


def conv2d_backward_input(dy, w, p):
    dy, w = contiguous(dy), contiguous(w)
    nt = nthreads(p.flops)

    def run(algo):
        if algo == IM2COL:
            return _cython("conv2d_backward_input")(dy, w, p)
        return cpp_pass("dgrad", p, algo, None, w, dy, nt)
    return tuned("dgrad", p, dy.dtype, _candidates("dgrad", p, dy.dtype), nt, run)


def conv2d_backward_weight(dy, x, p):
    dy, x = contiguous(dy), contiguous(x)
    nt = nthreads(p.flops)

    def run(algo):
        if algo == IM2COL:
            return _cython("conv2d_backward_weight")(dy, x, p)
        return cpp_pass("wgrad", p, algo, x, None, dy, nt)
    return tuned("wgrad", p, dy.dtype, _candidates("wgrad", p, dy.dtype), nt, run)


def conv2d_backward_bias(dy):
    db = empty((dy.shape[1],), dy.dtype)  # (C_out,)
    _cpp.conv2d_backward_bias(contiguous(dy), db, nthreads(dy.size))
    return db
