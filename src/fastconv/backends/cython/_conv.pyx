"""Cython 2-d convolution kernels: forward (fprop), backward-input (dgrad), backward-weight (wgrad),
backward-bias, for float32 and float64 (one fused source).

General layers are im2col + GEMM through SciPy's BLAS (_blas.pxd), per image and group, the
pixels of an image cut into column chunks so that the im2col workspace stays bounded (at most
about WS_ELEMS elements per thread, never a whole image of a big layer, never the batch):

- forward: y[n, g] (C_out/G x P) = w_g (C_out/G x Kg) cols (Kg x P), one chunk of P at a time;
- dgrad:   cols (Kg x P) = w_g^T dy[n, g], then col2im (im2col with +=) into dx, a chunk at a time;
- wgrad:   dw_g (C_out/G x Kg) = sum over images and chunks of dy[n, g] cols^T.

(Kg = C_in/groups*KH*KW, P = OH*OW.) Pointwise layers (1x1, stride 1, no padding) skip im2col:
x itself is the cols matrix. Depthwise layers (one input and one output channel per group) run
direct loops: a GEMM of depth KH*KW for one output channel would starve.

Threads: every kernel is one OpenMP ``prange`` over independent units of work (image x group x
chunk, or channel ranges where units must own their outputs), each unit calling BLAS on its own
thread. The adapter (conv.py) holds SciPy's BLAS at one thread meanwhile, so the two pools never
run at once.
"""

from cython.parallel cimport prange, threadid
from libc.limits cimport INT_MAX
from libc.string cimport memset

import numpy as np

from ._blas cimport gemm, real

#: Target size (elements) of one thread's im2col chunk: about 1 MiB of float32, which stays in the
#: L2 cache between im2col writing it and the GEMM reading it.
cdef Py_ssize_t WS_ELEMS = 1 << 18
#: Fewest pixels a chunk holds (unless the image has fewer): narrower GEMMs lose efficiency, and
#: the GEMM repacks the weight for every chunk.
cdef Py_ssize_t MIN_COLS = 128


cdef struct Geo:
    # ConvParams, plus the derived sizes: per group channel counts, taps, GEMM depth, planes
    Py_ssize_t N, C_in, H, W, C_out, KH, KW, OH, OW
    Py_ssize_t sh, sw, pt, pl, dh, dw, G
    Py_ssize_t Cig, Cog, KK, Kg, P, HW
    # per kernel column kw, (off, lo, hi) at [3*kw]: output column ow meets input column
    # ow*sw + off, which lies inside the image for ow in [lo, hi). Computed once per call, so that
    # the loops over rows never divide.
    const Py_ssize_t* colmap


cdef Geo _geometry(p, Py_ssize_t[::1] colmap) except *:
    """The Geo of ConvParams p; ``colmap`` (3*KW,) receives its column map and must outlive it."""
    cdef Geo g
    cdef Py_ssize_t kw, off
    g.N, g.C_in, g.H, g.W, g.C_out = p.N, p.C_in, p.H, p.W, p.C_out
    g.KH, g.KW, g.OH, g.OW = p.KH, p.KW, p.OH, p.OW
    g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, g.G = p.stride_h, p.stride_w, p.pad_t, p.pad_l, p.dil_h, p.dil_w, p.groups
    g.Cig, g.Cog = g.C_in // g.G, g.C_out // g.G
    g.KK = g.KH * g.KW
    g.Kg, g.P, g.HW = g.Cig * g.KK, g.OH * g.OW, g.H * g.W
    if max(g.Kg, g.P, g.HW, g.Cog) > INT_MAX:
        raise OverflowError(f"conv2d: a GEMM size ({g.Kg}, {g.P}, {g.HW} or {g.Cog}) exceeds BLAS's 32-bit int")
    for kw in range(g.KW):
        off = kw * g.dw - g.pl
        colmap[3 * kw] = off
        colmap[3 * kw + 1] = min(g.OW, 0 if off >= 0 else _cdiv(-off, g.sw))  # first ow with ow*sw + off >= 0
        colmap[3 * kw + 2] = max(colmap[3 * kw + 1], min(g.OW, 0 if off >= g.W else (g.W - 1 - off) // g.sw + 1))
    g.colmap = &colmap[0]
    return g


def _column_map(p):
    """The buffer _geometry fills with the column map: (3*KW,)."""
    return np.empty(3 * p.KW, dtype=np.intp)


cdef bint _pointwise(const Geo* g) noexcept nogil:
    """1x1, stride 1, no padding: the cols matrix of an image is the image itself, (C_in, H*W)."""
    return g.KK == 1 and g.sh == 1 and g.sw == 1 and g.pt == 0 and g.pl == 0 and g.OH == g.H and g.OW == g.W


cdef bint _depthwise(const Geo* g) noexcept nogil:
    """One input and one output channel per group: direct loops. (With several output channels
    per input channel the GEMM path wins: im2col once, then each cols element serves them all.)"""
    return g.C_in == g.G and g.C_out == g.G


cdef inline Py_ssize_t _cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


# --------------------------------------------------------------------------------------------
# the index map: which input pixels a run of output pixels meets at one kernel tap
# --------------------------------------------------------------------------------------------

cdef struct Span:
    Py_ssize_t start  # plane offset ih*W + iw0 of the pixel lane 0 meets (lanes < lo may lie off the row)
    Py_ssize_t lo, hi  # the lanes [lo, hi) that meet pixels inside the image


cdef inline bint _tap_span(const Geo* g, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh, Py_ssize_t ow,
                           Py_ssize_t run, Span* s) noexcept nogil:
    """Output pixels (oh, ow + t), t < run, meet tap (kh, kw) at input pixel (ih, iw0 + t*sw).
    False when row ih lies in the padding; else fills ``s``."""
    cdef Py_ssize_t ih = oh * g.sh - g.pt + kh * g.dh
    if ih < 0 or ih >= g.H:
        return False
    s.start = ih * g.W + ow * g.sw + g.colmap[3 * kw]
    s.lo = min(run, max(0, g.colmap[3 * kw + 1] - ow))
    s.hi = max(s.lo, min(run, g.colmap[3 * kw + 2] - ow))
    return True


cdef inline void _axpy(real a, const real* src, Py_ssize_t src_stride, real* dst, Py_ssize_t dst_stride,
                       Py_ssize_t n) noexcept nogil:
    """dst[t*dst_stride] += a * src[t*src_stride], t < n (unit strides apart: a loop that vectorises)."""
    cdef Py_ssize_t t
    if src_stride == 1 and dst_stride == 1:
        for t in range(n):
            dst[t] += a * src[t]
    else:
        for t in range(n):
            dst[t * dst_stride] += a * src[t * src_stride]


cdef void _cols_rows(real* image, const Geo* g, Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t q0, Py_ssize_t n,
                     real* cols, bint to_image) noexcept nogil:
    """Rows k0..k1 of one image's and group's im2col matrix, restricted to output pixels q0..q0+n:
    cols is (k1 - k0, n). Row k is tap (c, kh, kw) = (k // KK, k % KK // KW, k % KW).

    to_image False, im2col: cols = those rows, zeros where a tap meets padding (image is read only).
    to_image True, col2im: image += cols where a tap meets the image (the transpose of im2col).
    The segments are plain loops, not memset/memcpy calls: most are a few elements long (the build
    keeps GCC from turning them back into calls, see setup.py).
    """
    cdef Py_ssize_t c = k0 // g.KK, kh = k0 % g.KK // g.KW, kw = k0 % g.KW  # then counted, not divided
    cdef Py_ssize_t oh0 = q0 // g.OW, ow0 = q0 % g.OW, k, j, oh, ow, run, t
    cdef const real* src
    cdef real* plane
    cdef real* row
    cdef real* dst
    cdef Span s
    cdef bint inside
    for k in range(k0, k1):
        plane = image + c * g.HW
        row = cols + (k - k0) * n
        oh = oh0
        ow = ow0
        j = 0
        while j < n:  # one run of output pixels per output row
            run = min(g.OW - ow, n - j)
            inside = _tap_span(g, kh, kw, oh, ow, run, &s)
            if to_image:
                if inside:
                    _axpy(<real>1, row + j + s.lo, 1, plane + s.start + s.lo * g.sw, g.sw, s.hi - s.lo)
            else:
                if not inside:  # the whole run in the padding
                    s.start, s.lo, s.hi = 0, run, run
                dst = row + j
                src = plane + s.start
                for t in range(s.lo):
                    dst[t] = 0
                if g.sw == 1:
                    for t in range(s.lo, s.hi):
                        dst[t] = src[t]
                else:
                    for t in range(s.lo, s.hi):
                        dst[t] = src[t * g.sw]
                for t in range(s.hi, run):
                    dst[t] = 0
            j += run
            oh += 1
            ow = 0
        kw += 1
        if kw == g.KW:
            kw = 0
            kh += 1
            if kh == g.KH:
                kh = 0
                c += 1


# --------------------------------------------------------------------------------------------
# work splitting and workspace
# --------------------------------------------------------------------------------------------

cdef Py_ssize_t _chunk_width(Py_ssize_t rows) noexcept nogil:
    """Most pixels a chunk of a (rows x pixels) cols block may hold: about WS_ELEMS elements, but
    at least MIN_COLS pixels."""
    return max(MIN_COLS, WS_ELEMS // max(rows, 1))


cdef Py_ssize_t _parts(Py_ssize_t jobs, Py_ssize_t parts, Py_ssize_t most, int nthreads) noexcept nogil:
    """How many parts to cut each of ``jobs`` equal jobs into: ``parts`` at least, ``most`` at most,
    and, when the jobs*parts units are few, enough that every thread gets as many of them."""
    if nthreads > 1 and jobs * parts < 8 * nthreads:
        parts = _cdiv(_cdiv(jobs * parts, nthreads) * nthreads, jobs)
    return max(1, min(parts, most))


cdef Py_ssize_t _chunk(Py_ssize_t P, Py_ssize_t chunks) noexcept nogil:
    """Pixels per chunk when P pixels are cut into ``chunks`` nearly equal chunks."""
    return _cdiv(P, max(1, min(chunks, P)))


def _workspace(Py_ssize_t nthreads, Py_ssize_t size, dtype):
    """One workspace of ``size`` elements per thread: (nthreads, size), allocated here, under the GIL."""
    return np.empty((nthreads, max(size, 1)), dtype=dtype)


# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------

cdef void _forward_unit(const Geo* g, const real* x, const real* w, const real* b, real* y, Py_ssize_t u,
                        Py_ssize_t chunks, Py_ssize_t cq, real* ws) noexcept nogil:
    """Unit u = (image n, group, chunk): y[n, group's channels, chunk's pixels] = w_g cols (+ b)."""
    cdef Py_ssize_t n = u // (g.G * chunks), grp = u // chunks % g.G
    cdef Py_ssize_t q0 = u % chunks * cq, length = min(cq, g.P - q0), co, t
    cdef const real* xg = x + (n * g.C_in + grp * g.Cig) * g.HW
    cdef real* yg = y + (n * g.C_out + grp * g.Cog) * g.P + q0
    cdef real bias
    if length <= 0:
        return
    if _pointwise(g):
        gemm(False, False, g.Cog, length, g.Kg, <real>1, w + grp * g.Cog * g.Kg, g.Kg, xg + q0, g.HW,
             <real>0, yg, g.P)
    else:
        _cols_rows(<real*>xg, g, 0, g.Kg, q0, length, ws, False)  # cols: (Kg, length)
        gemm(False, False, g.Cog, length, g.Kg, <real>1, w + grp * g.Cog * g.Kg, g.Kg, ws, length,
             <real>0, yg, g.P)
    if b != NULL:  # while this block of y is in cache
        for co in range(g.Cog):
            bias = b[grp * g.Cog + co]
            for t in range(length):
                yg[co * g.P + t] += bias


cdef void _pad_plane(const real* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pt, Py_ssize_t pl, real* xp,
                     Py_ssize_t Hp, Py_ssize_t Wp) noexcept nogil:
    """xp (Hp, Wp)[r, c] = x (H, W)[r - pt, c - pl], zero outside x (the offsets may be negative)."""
    cdef Py_ssize_t r, c, c0 = min(Wp, max(0, pl)), c1 = min(Wp, max(c0, pl + W))
    cdef real* row
    for r in range(Hp):
        row = xp + r * Wp
        if r - pt < 0 or r - pt >= H:
            memset(row, 0, Wp * sizeof(real))
            continue
        for c in range(c0):
            row[c] = 0
        for c in range(c0, c1):
            row[c] = x[(r - pt) * W + c - pl]
        for c in range(c1, Wp):
            row[c] = 0


cdef enum:
    TILE = 16  # output columns a depthwise tile accumulates in registers


cdef Py_ssize_t _dw_workspace(const Geo* g) noexcept nogil:
    """Elements of _dw_forward_plane's workspace: the padded input plane xp (Hp, Wp)."""
    return (g.OH + (g.KH - 1) * g.dh) * (g.OW + (g.KW - 1) * g.dw)


def _tap_offsets(Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Wp):
    """Where tap (kh, kw) of an output pixel lies in a padded plane of width Wp, from the pixel
    of its first tap: (KH*KW,)."""
    return (np.arange(KH)[:, None] * dh * Wp + np.arange(KW)[None, :] * dw).astype(np.intp).ravel()


cdef void _dw_forward_plane(const Geo* g, const real* x, const real* w, real bias, real* y,
                            const Py_ssize_t* off, real* ws) noexcept nogil:
    """Depthwise (one channel in, one out): output plane y (OH, OW) from input plane x (H, W)
    and the channel's taps w (KH, KW).

    Stride 1: x and its padding are copied into ws as xp (Hp, Wp), Wp = OW + (KW-1)*dw (off:
    _tap_offsets for that width); then
    every TILE outputs of a row are summed over all taps in a local array the compiler keeps in
    vector registers (y is written once, not read and written per tap). Taps that meet the
    padding multiply its zeros, as the reference's do.
    Other strides: each output row tap by tap, over the columns inside the image."""
    cdef Py_ssize_t Wp = g.OW + (g.KW - 1) * g.dw, Hp = g.OH + (g.KH - 1) * g.dh, oh, ow, kh, kw, k, l, t
    cdef real* xp = ws
    cdef const real* row
    cdef const real* src
    cdef real acc[TILE]
    cdef real wk
    cdef Span s
    if g.sh == 1 and g.sw == 1:
        _pad_plane(x, g.H, g.W, g.pt, g.pl, xp, Hp, Wp)
        for oh in range(g.OH):
            row = xp + oh * Wp
            for t in range(_cdiv(g.OW, TILE) if g.OW >= TILE else 0):
                ow = min(t * TILE, g.OW - TILE)  # a ragged last tile overlaps the one before: same sums
                for l in range(TILE):
                    acc[l] = 0
                for k in range(g.KK):
                    wk = w[k]
                    src = row + off[k] + ow
                    for l in range(TILE):
                        acc[l] += wk * src[l]
                for l in range(TILE):
                    y[oh * g.OW + ow + l] = acc[l] + bias
            for ow in range(g.OW if g.OW < TILE else 0):  # rows narrower than a tile
                acc[0] = 0
                for k in range(g.KK):
                    acc[0] += w[k] * row[off[k] + ow]
                y[oh * g.OW + ow] = acc[0] + bias
        return
    memset(y, 0, g.P * sizeof(real))
    for oh in range(g.OH):
        for kh in range(g.KH):
            for kw in range(g.KW):
                if _tap_span(g, kh, kw, oh, 0, g.OW, &s):
                    _axpy(w[kh * g.KW + kw], x + s.start + s.lo * g.sw, g.sw, y + oh * g.OW + s.lo, 1,
                          s.hi - s.lo)
    for t in range(g.P):
        y[t] += bias


def conv2d_forward(const real[::1] x, const real[::1] w, const real[::1] b, real[::1] y, p, int nthreads):
    """y (N*C_out*OH*OW,) = conv2d(x, w, b) for ConvParams p; b may be None. Arrays flat, C order."""
    colmap = _column_map(p)
    cdef Geo g = _geometry(p, colmap)
    cdef const real* bp = NULL
    cdef Py_ssize_t chunks, cq, units, u
    cdef bint pointwise
    cdef real[:, ::1] ws
    cdef const Py_ssize_t[::1] off
    if b is not None:
        bp = &b[0]
    if _depthwise(&g):
        ws = _workspace(nthreads, _dw_workspace(&g), np.float32 if real is float else np.float64)
        off = _tap_offsets(g.KH, g.KW, g.dh, g.dw, g.OW + (g.KW - 1) * g.dw)
        for u in prange(g.N * g.C_out, nogil=True, num_threads=nthreads, schedule="static"):  # plane u = (n, c)
            _dw_forward_plane(&g, &x[0] + u * g.HW, &w[0] + u % g.C_out * g.KK,
                              <real>0 if bp == NULL else bp[u % g.C_out], &y[0] + u * g.P, &off[0],
                              &ws[threadid(), 0])
        return
    pointwise = _pointwise(&g)
    cq = _chunk(g.P, _parts(g.N * g.G, 1 if pointwise else _cdiv(g.P, _chunk_width(g.Kg)), g.P, nthreads))
    chunks = _cdiv(g.P, cq)
    ws = _workspace(nthreads, 0 if pointwise else g.Kg * cq, np.float32 if real is float else np.float64)
    units = g.N * g.G * chunks
    for u in prange(units, nogil=True, num_threads=nthreads, schedule="dynamic"):
        _forward_unit(&g, &x[0], &w[0], bp, &y[0], u, chunks, cq, &ws[threadid(), 0])


# --------------------------------------------------------------------------------------------
# backward-input (dgrad)
# --------------------------------------------------------------------------------------------

cdef void _dgrad_unit(const Geo* g, const real* dy, const real* w, real* dx, Py_ssize_t u, Py_ssize_t splits,
                      real* ws) noexcept nogil:
    """Unit u = (image n, group, channel part): the unit's dx planes, which no other unit touches:
    cols rows of its channels = w_g^T dy[n, g] chunk by chunk, each added into dx by col2im."""
    cdef Py_ssize_t n = u // (g.G * splits), grp = u // splits % g.G, part = u % splits
    cdef Py_ssize_t c0 = part * g.Cig // splits, c1 = (part + 1) * g.Cig // splits
    cdef Py_ssize_t k0 = c0 * g.KK, k1 = c1 * g.KK, cq = _chunk(g.P, _cdiv(g.P, _chunk_width(k1 - k0))), chunk, q0, length
    cdef real* dxg = dx + (n * g.C_in + grp * g.Cig) * g.HW
    cdef const real* dyg = dy + (n * g.C_out + grp * g.Cog) * g.P
    cdef const real* wg = w + grp * g.Cog * g.Kg
    memset(dxg + c0 * g.HW, 0, (c1 - c0) * g.HW * sizeof(real))
    if c0 == c1:
        return
    for chunk in range(_cdiv(g.P, cq)):
        q0 = chunk * cq
        length = min(cq, g.P - q0)
        # cols (k1 - k0, length) = (rows k0..k1 of w_g^T) dy chunk; w_g^T's rows are w_g's columns
        gemm(True, False, k1 - k0, length, g.Cog, <real>1, wg + k0, g.Kg, dyg + q0, g.P, <real>0, ws, length)
        _cols_rows(dxg, g, k0, k1, q0, length, ws, True)


cdef void _dgrad_pointwise_unit(const Geo* g, const real* dy, const real* w, real* dx, Py_ssize_t u,
                                Py_ssize_t chunks, Py_ssize_t cq) noexcept nogil:
    """Pointwise: unit u = (image n, group, chunk): dx[n, g, chunk] = w_g^T dy[n, g, chunk], no col2im."""
    cdef Py_ssize_t n = u // (g.G * chunks), grp = u // chunks % g.G
    cdef Py_ssize_t q0 = u % chunks * cq, length = min(cq, g.P - q0)
    if length > 0:
        gemm(True, False, g.Cig, length, g.Cog, <real>1, w + grp * g.Cog * g.Kg, g.Kg,
             dy + (n * g.C_out + grp * g.Cog) * g.P + q0, g.P, <real>0,
             dx + (n * g.C_in + grp * g.Cig) * g.HW + q0, g.HW)


cdef Geo _transposed(const Geo* g) noexcept nogil:
    """For a depthwise g at stride 1: the depthwise convolution whose forward is g's dgrad, dy
    (OH, OW) in, dx (H, W) out, with the taps flipped and padding d*(K-1) - pad (negative when the
    padding exceeds the kernel's span). It has no column map: only _dw_forward_plane's stride-1
    path reads it."""
    cdef Geo t = g[0]
    t.H, t.W, t.OH, t.OW, t.HW, t.P = g.OH, g.OW, g.H, g.W, g.P, g.HW
    t.pt = g.dh * (g.KH - 1) - g.pt
    t.pl = g.dw * (g.KW - 1) - g.pl
    t.colmap = NULL
    return t


cdef void _dw_dgrad_plane(const Geo* g, const real* dy, const real* w, real* dx) noexcept nogil:
    """Depthwise at a stride > 1: input-gradient plane dx (H, W) from its dy plane (OH, OW), each
    dy row scattered tap by tap into the columns inside the image."""
    cdef Py_ssize_t oh, kh, kw
    cdef Span s
    memset(dx, 0, g.HW * sizeof(real))
    for oh in range(g.OH):
        for kh in range(g.KH):
            for kw in range(g.KW):
                if _tap_span(g, kh, kw, oh, 0, g.OW, &s):
                    _axpy(w[kh * g.KW + kw], dy + oh * g.OW + s.lo, 1, dx + s.start + s.lo * g.sw, g.sw,
                          s.hi - s.lo)


def conv2d_backward_input(const real[::1] dy, const real[::1] w, real[::1] dx, p, int nthreads):
    """dx (N*C_in*H*W,) of the convolution p given dy. Arrays flat, C order."""
    colmap = _column_map(p)
    cdef Geo g = _geometry(p, colmap), t
    cdef Py_ssize_t chunks, cq, splits, units, u
    cdef real[:, ::1] ws
    cdef const real[::1] wf
    cdef const Py_ssize_t[::1] off
    if _depthwise(&g) and g.sh == 1 and g.sw == 1:
        # a stride-1 depthwise forward of dy: register-friendly long axpys instead of scattered adds
        t = _transposed(&g)
        wf = np.ascontiguousarray(np.asarray(w).reshape(g.C_out, g.KK)[:, ::-1]).reshape(-1)  # (C*KH*KW,)
        ws = _workspace(nthreads, _dw_workspace(&t), np.float32 if real is float else np.float64)
        off = _tap_offsets(t.KH, t.KW, t.dh, t.dw, t.OW + (t.KW - 1) * t.dw)
        for u in prange(g.N * g.C_in, nogil=True, num_threads=nthreads, schedule="static"):  # plane u = (n, c)
            _dw_forward_plane(&t, &dy[0] + u * g.P, &wf[0] + u % g.C_in * g.KK, <real>0, &dx[0] + u * g.HW,
                              &off[0], &ws[threadid(), 0])
        return
    if _depthwise(&g):
        for u in prange(g.N * g.C_in, nogil=True, num_threads=nthreads, schedule="static"):
            _dw_dgrad_plane(&g, &dy[0] + u * g.P, &w[0] + u % g.C_in * g.KK, &dx[0] + u * g.HW)
        return
    if _pointwise(&g):
        cq = _chunk(g.P, _parts(g.N * g.G, 1, g.P, nthreads))
        chunks = _cdiv(g.P, cq)
        for u in prange(g.N * g.G * chunks, nogil=True, num_threads=nthreads, schedule="dynamic"):
            _dgrad_pointwise_unit(&g, &dy[0], &w[0], &dx[0], u, chunks, cq)
        return
    # units own whole dx planes (col2im adds into neighbouring pixels): split channels, not pixels
    splits = _parts(g.N * g.G, 1, g.Cig, nthreads)
    ws = _workspace(nthreads, max(WS_ELEMS, _cdiv(g.Cig, splits) * g.KK * MIN_COLS),
                    np.float32 if real is float else np.float64)
    units = g.N * g.G * splits
    for u in prange(units, nogil=True, num_threads=nthreads, schedule="dynamic"):
        _dgrad_unit(&g, &dy[0], &w[0], &dx[0], u, splits, &ws[threadid(), 0])


# --------------------------------------------------------------------------------------------
# backward-weight (wgrad)
# --------------------------------------------------------------------------------------------

cdef void _wgrad_unit(const Geo* g, const real* dy, const real* x, real* dw, Py_ssize_t u, Py_ssize_t splits,
                      real* ws) noexcept nogil:
    """Unit u = (group, column part): columns k0..k1 of dw_g, summed over images and chunks in
    order (the same order on any number of threads) by the GEMM's accumulation into dw."""
    cdef Py_ssize_t grp = u // splits, part = u % splits
    cdef Py_ssize_t k0 = part * g.Kg // splits, k1 = (part + 1) * g.Kg // splits
    cdef Py_ssize_t cq = _chunk(g.P, _cdiv(g.P, _chunk_width(k1 - k0))), n, chunk, q0, length
    cdef bint pointwise = _pointwise(g), first = True
    cdef real* dwg = dw + grp * g.Cog * g.Kg + k0
    cdef const real* xg
    cdef const real* dyg
    if k0 == k1:
        return
    for n in range(g.N):
        xg = x + (n * g.C_in + grp * g.Cig) * g.HW
        dyg = dy + (n * g.C_out + grp * g.Cog) * g.P
        for chunk in range(_cdiv(g.P, cq)):
            q0 = chunk * cq
            length = min(cq, g.P - q0)
            if pointwise:  # cols rows k0..k1 are x's channels k0..k1
                gemm(False, True, g.Cog, k1 - k0, length, <real>1, dyg + q0, g.P, xg + k0 * g.HW + q0, g.HW,
                     <real>(0 if first else 1), dwg, g.Kg)
            else:
                _cols_rows(<real*>xg, g, k0, k1, q0, length, ws, False)  # cols: (k1 - k0, length)
                gemm(False, True, g.Cog, k1 - k0, length, <real>1, dyg + q0, g.P, ws, length,
                     <real>(0 if first else 1), dwg, g.Kg)
            first = False


cdef void _dw_wgrad_channel(const Geo* g, const real* dy, const real* x, real* dw, Py_ssize_t c,
                            real* lanes) noexcept nogil:
    """Depthwise: dw[c] (KH, KW), tap by tap a dot product of the channel's dy rows with the x
    rows the tap meets, over the columns inside the image only (padding adds nothing). Image by
    image, so that its two planes stay in L1 through all taps. At stride_w 1 the products go to
    TILE lane sums per tap, lanes (KK, TILE), which the compiler keeps in vector registers through
    an image's rows; the lanes are added at the end."""
    cdef Py_ssize_t n, oh, kh, kw, k, t, l, m
    cdef const real* a
    cdef const real* b
    cdef real acc[TILE]
    cdef real rest
    cdef Span s
    memset(lanes, 0, g.KK * TILE * sizeof(real))
    memset(dw + c * g.KK, 0, g.KK * sizeof(real))  # the taps' sums of the products left out of the lanes
    for n in range(g.N):
        for kh in range(g.KH):
            for kw in range(g.KW):
                k = kh * g.KW + kw
                for l in range(TILE):
                    acc[l] = lanes[k * TILE + l]
                rest = 0
                for oh in range(g.OH):
                    if not _tap_span(g, kh, kw, oh, 0, g.OW, &s):
                        continue
                    a = dy + (n * g.C_out + c) * g.P + oh * g.OW + s.lo
                    b = x + (n * g.C_in + c) * g.HW + s.start + s.lo * g.sw
                    m = s.hi - s.lo
                    if g.sw == 1:
                        for t in range(m // TILE):
                            for l in range(TILE):
                                acc[l] += a[t * TILE + l] * b[t * TILE + l]
                        t = m - m % TILE
                        while t + 4 <= m:  # the row's end: a vector of 4 lanes (the first 4 of acc)
                            for l in range(4):
                                acc[l] += a[t + l] * b[t + l]
                            t += 4
                        while t < m:
                            rest += a[t] * b[t]
                            t += 1
                    else:
                        for t in range(m):
                            rest += a[t] * b[t * g.sw]
                for l in range(TILE):
                    lanes[k * TILE + l] = acc[l]
                dw[c * g.KK + k] += rest
    for k in range(g.KK):
        for l in range(TILE):
            dw[c * g.KK + k] += lanes[k * TILE + l]


def conv2d_backward_weight(const real[::1] dy, const real[::1] x, real[::1] dw, p, int nthreads):
    """dw (C_out*C_in/groups*KH*KW,) of the convolution p given dy and x. Arrays flat, C order."""
    colmap = _column_map(p)
    cdef Geo g = _geometry(p, colmap)
    cdef Py_ssize_t splits, units, u
    cdef real[:, ::1] ws
    if _depthwise(&g):
        ws = _workspace(nthreads, g.KK * TILE, np.float32 if real is float else np.float64)
        for u in prange(g.C_out, nogil=True, num_threads=nthreads, schedule="static"):
            _dw_wgrad_channel(&g, &dy[0], &x[0], &dw[0], u, &ws[threadid(), 0])
        return
    # units own columns of dw: split its columns (cols rows) among the threads, not the batch
    splits = _parts(g.G, 1, g.Kg, nthreads)
    ws = _workspace(nthreads, 0 if _pointwise(&g) else max(WS_ELEMS, _cdiv(g.Kg, splits) * MIN_COLS),
                    np.float32 if real is float else np.float64)
    units = g.G * splits
    for u in prange(units, nogil=True, num_threads=nthreads, schedule="dynamic"):
        _wgrad_unit(&g, &dy[0], &x[0], &dw[0], u, splits, &ws[threadid(), 0])


# --------------------------------------------------------------------------------------------
# backward-bias
# --------------------------------------------------------------------------------------------

cdef real _channel_sum(const real* dy, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P, Py_ssize_t c) noexcept nogil:
    """sum of dy[:, c, :] (dy viewed as (N, C, P)), image by image, in 4 interleaved partial sums."""
    cdef real s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef const real* row
    cdef Py_ssize_t n, t
    for n in range(N):
        row = dy + (n * C + c) * P
        t = 0
        while t + 4 <= P:
            s0 += row[t]
            s1 += row[t + 1]
            s2 += row[t + 2]
            s3 += row[t + 3]
            t += 4
        while t < P:
            s0 += row[t]
            t += 1
    return (s0 + s1) + (s2 + s3)


def conv2d_backward_bias(const real[:, :, ::1] dy, real[::1] db, int nthreads):
    """db (C_out,) = dy summed over images and pixels; dy viewed as (N, C_out, OH*OW)."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], P = dy.shape[2], c
    for c in prange(C, nogil=True, num_threads=nthreads, schedule="static"):
        db[c] = _channel_sum(&dy[0, 0, 0], N, C, P, c)
