"""GPU convolution (cuda/conv.cu): forward, backward-input, backward-weight, backward-bias; mirrors
backends/cpp/conv.py. Each call takes one of three paths:

- depthwise (groups == C_in, any channel multiplier): direct kernels for all three passes, a
  thread per output (forward) or input (dgrad) pixel; wgrad, like the bias gradient, is a
  two-stage fixed-order reduction over N*OH*OW (block sums per slice of pixels, then the slices);
- pointwise (1x1, stride 1, no padding, no dilation): x is its own cols matrix, so forward and
  dgrad are one batched GEMM (a product per image and group) against x or dy as they lie; wgrad
  takes the general path with x rearranged to columns instead of im2col (for a chunk of one image,
  x itself);
- otherwise im2col + GEMM on cuBLAS (``dev.matmul``), over chunks of the batch: per chunk of nb
  images, cols (G, K, nb*P) with K = C_in/G*KH*KW, P = OH*OW (the layout is in conv.cu), and
    forward: (G, C_out/G, nb*P) = w (G, C_out/G, K) @ cols, put into y with the bias by a kernel;
    dgrad:   dcols (G, K, nb*P) = w^T @ dy in columns, then col2im, a gather (each dx element sums
             its taps in a fixed order);
    wgrad:   dw (G, C_out/G, K) += dy in columns @ cols^T, chunk after chunk, in chunk order.
  One GEMM per group spans the whole chunk, so cuBLAS gets products nb*P columns wide.

float16 is rounded once per result. ``dev.matmul`` returns its operands' dtype, so a GEMM whose
result is finished elsewhere (the bias added, col2im's sum over taps, wgrad's sum over chunks)
runs on float32 operands, which the kernels write as they convert (im2col, pixels_to_columns);
a GEMM that writes a result itself (pointwise dgrad, pointwise forward without bias) takes the
float16 arrays as they lie, computing in float32 (cuBLAS's compute type). On a GPU the float16
im2col path thus runs float32 GEMMs, not float16 tensor-core ones.

Workspace: a chunk's cols plus its C_out x nb*P matrix (the forward's GEMM result, or dy in
columns), and for wgrad with groups > 1 a second cols (CuPy copies the transposed operand of a
batched GEMM; a single group is a 2-d product, whose transpose cuBLAS takes as a flag), all in the
accumulation dtype (float32 for float16), is at most :data:`WORKSPACE_BYTES`: nb is the largest
batch chunk that fits. A single image whose workspace exceeds the bound is processed alone, and
the workspace is then that one image's. Besides it: the weight in GEMM form (transposed for dgrad;
float32 for float16), the wgrad accumulator (C_out*K), the reduction partials (rows x slices), a
pointwise forward's GEMM result when a bias is added to it (the size of y, in the accumulation
dtype), and cuBLAS's own workspace.

No floating-point atomics: every kernel reduces in a fixed order, so results are bit-identical
from run to run on one device.
"""

import functools
import math

import numpy as np

from ._device import Module, capped_blocks, ctype, device_of, grid_blocks, instances, threads_per_block

_TYPES = ("__half", "float", "double")
KERNELS = Module("conv", tuple(
    name for kernel in ("im2col", "col2im", "pixels_to_columns", "store_pixels", "depthwise_forward",
                        "depthwise_backward_input", "depthwise_backward_weight", "bias_backward", "sum_slices")
    for name in instances(kernel, _TYPES)))

#: The bound on one call's workspace (see the module docstring).
WORKSPACE_BYTES = 256 << 20

#: The ConvParams fields every convolution kernel takes, in the order of conv.cu's FC_GEO_PARAMS.
_GEOMETRY = ("C_in", "H", "W", "C_out", "OH", "OW", "KH", "KW", "stride_h", "stride_w", "pad_t", "pad_l",
             "dil_h", "dil_w")


def _acc(dtype):
    """The dtype the kernels accumulate ``dtype`` in (conv.cu's acc_t): float32 for float16."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


@functools.lru_cache(maxsize=256)
def _geometry(p):
    """The kernels' geometry arguments of ``p``, made once per problem (a frozen, hashable params
    object): per-call host time is what small layers on a GPU are made of."""
    return tuple(np.int32(getattr(p, f)) for f in _GEOMETRY)


def _depthwise(p):
    return p.groups == p.C_in


def _pointwise(p):
    return (p.KH, p.KW, p.stride_h, p.stride_w, p.dil_h, p.dil_w) == (1,) * 6 and not any(
        (p.pad_t, p.pad_b, p.pad_l, p.pad_r))


def _launch(dev, kernel, dtype, items, args):
    """``kernel`` instantiated for ``dtype``, a grid-stride loop over ``items``."""
    threads = threads_per_block(256)
    KERNELS.launch(dev, f"{kernel}<{ctype(dtype)}>", grid_blocks(dev, items, threads), threads, args)


def _reduce(dev, kernel, dtype, inputs, rows, inner, items, args):
    """``rows x inner`` sums over ``items`` pixels each, in two fixed-order stages: ``kernel`` writes
    block sums per (row, slice) of the pixels, then sum_slices adds each row's slices in order.
    Slices: enough (row, slice) blocks to fill the device, at least two pixels per thread."""
    threads = threads_per_block(256)
    slices = max(1, min(math.ceil(dev.max_blocks(threads) / rows), math.ceil(items / (2 * threads))))
    partial = dev.empty((rows, slices, inner), _acc(dtype))  # (rows, slices, inner)
    KERNELS.launch(dev, f"{kernel}<{ctype(dtype)}>", capped_blocks(rows * slices), threads,
                   (*inputs, partial, np.int32(slices), *args))
    out = dev.empty((rows, inner), dtype)  # (rows, inner)
    _launch(dev, "sum_slices", dtype, rows * inner, (partial, out, np.int64(rows), np.int32(slices), np.int32(inner)))
    return out


def _chunks(p, dtype, cols_copies=1):
    """``(n0, nb)`` batch chunks whose workspace fits WORKSPACE_BYTES (at least one image each):
    per image ``cols_copies`` im2col matrices (C_in*KH*KW x P) and one C_out x P matrix."""
    per_image = (cols_copies * p.C_in * p.KH * p.KW + p.C_out) * p.OH * p.OW * _acc(dtype).itemsize
    nb = max(1, min(p.N, WORKSPACE_BYTES // per_image))
    return [(n0, min(nb, p.N - n0)) for n0 in range(0, p.N, nb)]


def _matmul(dev, a, b):
    """(G, M, K) @ (G, K, N) -> (G, M, N). A single group as a 2-d product: CuPy hands cuBLAS a
    transposed 2-d operand as a flag, while it copies a transposed batched one."""
    if a.shape[0] == 1:
        return dev.matmul(a[0], b[0])[None]
    return dev.matmul(a, b)


def _columns(dev, a, groups):
    """Images a (nb, C, P) as GEMM columns (G, C/G, nb*P) in the accumulation dtype: image j's pixel p
    in column j*P + p. For one image that is a itself, unless it needs converting."""
    nb, C, P = a.shape
    acc = _acc(a.dtype)
    if nb == 1 and a.dtype == acc:
        return a.reshape(groups, C // groups, P)
    out = dev.empty((C, nb * P), acc)  # (C, nb*P)
    _launch(dev, "pixels_to_columns", a.dtype, a.size, (a, out, np.int64(nb), np.int32(C), np.int64(P)))
    return out.reshape(groups, C // groups, nb * P)


def _im2col(dev, x, p):
    """cols (G, K, nb*P) of the images x (nb, C_in, H, W), in the accumulation dtype."""
    nb, P = x.shape[0], p.OH * p.OW
    if _pointwise(p):
        return _columns(dev, x.reshape(nb, p.C_in, P), p.groups)
    cols = dev.empty((p.C_in * p.KH * p.KW, nb * P), _acc(x.dtype))  # (C_in*KH*KW, nb*P)
    _launch(dev, "im2col", x.dtype, nb * p.C_in * P, (x, cols, np.int64(nb), *_geometry(p)))
    return cols.reshape(p.groups, -1, nb * P)


def _store(dev, src, b, y, nb, p, columns):
    """y (nb, C_out, OH, OW) = src + b, rounded: src in GEMM columns, or already in y's layout."""
    _launch(dev, "store_pixels", y.dtype, y.size,
            (src, b, y, np.int64(nb), np.int32(p.C_out), np.int64(p.OH * p.OW), np.int32(columns)))


def conv2d_forward(x, w, b, p):
    dev = device_of(x)
    with dev.activate():
        x, w, b = dev.contiguous(x), dev.contiguous(w), dev.contiguous(b)
        G, P, acc = p.groups, p.OH * p.OW, _acc(x.dtype)
        if _depthwise(p):
            y = dev.empty(p.y_shape, x.dtype)  # (N, C_out, OH, OW)
            _launch(dev, "depthwise_forward", x.dtype, y.size, (x, w, b, y, np.int64(p.N), *_geometry(p)))
            return y
        wg = w.reshape(G, p.C_out // G, -1)  # (G, C_out/G, K)
        if _pointwise(p) and b is None:
            # (G, C_out/G, C_in/G) @ (N, G, C_in/G, P): the GEMMs write y itself
            return dev.matmul(wg, x.reshape(p.N, G, p.C_in // G, P)).reshape(p.y_shape)  # (N, C_out, OH, OW)
        y = dev.empty(p.y_shape, x.dtype)  # (N, C_out, OH, OW)
        wg = wg.astype(acc, copy=False)
        if _pointwise(p):  # the same GEMMs in the accumulation dtype, then the bias
            ya = dev.matmul(wg, x.reshape(p.N, G, p.C_in // G, P).astype(acc, copy=False))  # (N, G, C_out/G, P)
            _store(dev, ya, b, y, p.N, p, columns=False)
            return y
        for n0, nb in _chunks(p, x.dtype):
            yc = _matmul(dev, wg, _im2col(dev, x[n0:n0 + nb], p))  # (G, C_out/G, nb*P)
            _store(dev, yc, b, y[n0:n0 + nb], nb, p, columns=True)
        return y


def conv2d_backward_input(dy, w, p):
    dev = device_of(dy)
    with dev.activate():
        dy, w = dev.contiguous(dy), dev.contiguous(w)
        G, P = p.groups, p.OH * p.OW
        if _depthwise(p):
            dx = dev.empty(p.x_shape, dy.dtype)  # (N, C_in, H, W)
            _launch(dev, "depthwise_backward_input", dy.dtype, dx.size, (dy, w, dx, np.int64(p.N), *_geometry(p)))
            return dx
        wt = w.reshape(G, p.C_out // G, -1).transpose(0, 2, 1)  # (G, K, C_out/G)
        if _pointwise(p):
            # (G, C_in/G, C_out/G) @ (N, G, C_out/G, P): the GEMMs write dx itself
            return dev.matmul(wt, dy.reshape(p.N, G, p.C_out // G, P)).reshape(p.x_shape)  # (N, C_in, H, W)
        wt = dev.xp.ascontiguousarray(wt, dtype=_acc(dy.dtype))
        dx = dev.empty(p.x_shape, dy.dtype)  # (N, C_in, H, W)
        for n0, nb in _chunks(p, dy.dtype):
            dcols = _matmul(dev, wt, _columns(dev, dy[n0:n0 + nb].reshape(nb, p.C_out, P), G))  # (G, K, nb*P)
            _launch(dev, "col2im", dy.dtype, nb * p.C_in * p.H * p.W,
                    (dcols, dx[n0:n0 + nb], np.int64(nb), *_geometry(p)))
        return dx


def conv2d_backward_weight(dy, x, p):
    dev = device_of(dy)
    with dev.activate():
        dy, x = dev.contiguous(dy), dev.contiguous(x)
        G, P = p.groups, p.OH * p.OW
        if _depthwise(p):
            dw = _reduce(dev, "depthwise_backward_weight", dy.dtype, (dy, x), p.C_out, p.KH * p.KW, p.N * P,
                         (np.int64(p.N), *_geometry(p)))  # (C_out, KH*KW)
            return dw.reshape(p.w_shape)
        dw = None  # (G, C_out/G, K) in the accumulation dtype
        for n0, nb in _chunks(p, dy.dtype, cols_copies=1 if G == 1 else 2):
            cols = _im2col(dev, x[n0:n0 + nb], p)  # (G, K, nb*P)
            dyc = _columns(dev, dy[n0:n0 + nb].reshape(nb, p.C_out, P), G)  # (G, C_out/G, nb*P)
            part = _matmul(dev, dyc, cols.transpose(0, 2, 1))  # (G, C_out/G, K)
            if dw is None:
                dw = part
            else:
                dw += part
        return dw.astype(dy.dtype, copy=False).reshape(p.w_shape)  # (C_out, C_in/G, KH, KW)


def conv2d_backward_bias(dy):
    dev = device_of(dy)
    with dev.activate():
        dy = dev.contiguous(dy)
        N, C, OH, OW = dy.shape
        db = _reduce(dev, "bias_backward", dy.dtype, (dy,), C, 1, N * OH * OW,
                     (np.int64(N), np.int32(C), np.int64(OH * OW)))  # (C, 1)
        return db.reshape(C)  # (C_out,)
