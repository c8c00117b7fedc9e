"""Numba convolution: forward (fprop), backward-input (dgrad), backward-weight (wgrad), backward-bias.

Two algorithms:

- **im2col + GEMM** (any convolution whose groups have several input channels). The output
  plane of an image is cut into tiles of whole output rows, and each tile is one BLAS call per
  group (:func:`~._blas.gemm`): ``w (C_out/groups, K) @ cols (K, tile columns)``, K =
  C_in/groups * KH * KW, with ``cols`` built in a small per-tile workspace (never for a whole
  image, let alone a batch). A 1x1 convolution with stride 1 and no padding has ``cols`` equal
  to x itself and no workspace at all.
- **direct loops** when each output channel reads a single input channel (depthwise, channel
  multiplier, or a 1-channel input): each input plane is staged once in the wide layout below,
  and each kernel tap is one multiply-add over the whole wide output plane, along memory.

The wide layout. Copying ``cols`` one output row at a time would spend most of its time on loop
overheads (rows are short: 7 to 224 pixels). Instead, the tile's input rows are first *staged*:
zero-padded and split by stride phase, ``stage[c, (ph, pw), r, q] = x[c, (oh0 + r) * sh + ph -
pad_t, q * sw + pw - pad_l]``. In the stage, tap (kh, kw) of output pixel (oh, ow) reads element
``(oh - oh0 + a) * Wq + ow + b`` of phase plane ``(kh*dil_h % sh, kw*dil_w % sw)``, with shifts
``a = kh*dil_h // sh``, ``b = kw*dil_w // sw`` and ``Wq = OW + (KW-1)*dil_w // sw``: so a whole
row of ``cols`` is *one contiguous run* of the stage, provided ``cols`` has Wq columns per
output row. Its ``Wq - OW`` extra columns per row are junk, computed and dropped in fprop, and
zeroed where a product would sum over them (wgrad's ``cols``, dgrad's gradient). dgrad runs the
same map backwards: the gradient of ``cols`` is added into a staged gradient by runs, which is
then added into dx.

Threads: one Numba thread pool per op (:func:`~._jit.run_with_blas` keeps BLAS on one thread
inside it). Units of work are (image, tile, block of channels); the blocks exist so that a batch
of one small image still gives every thread work. How work is split depends on the shape only,
never on the thread count, so every result is the same on any number of threads:

- fprop writes each output element once; dgrad adds each tile's gradient into dx, and tiles two
  apart never touch the same input rows, so even tiles run first, odd tiles second (a fixed
  order), and channel blocks own disjoint channels;
- wgrad sums over images and tiles: the units are cut into slices, each summed in order into its
  own copy of dw, and the copies are added in slice order. bias: one channel per unit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange

from .._common import empty
from ._blas import gemm
from ._jit import contiguous, inline_jit, jit, parallel_jit, run, run_with_blas
from ._loops import add, axpy, copy, fill, gather, inside, multiply_add, shift

#: At most this many columns of ``cols`` per tile ...
TILE_COLUMNS = 1024
#: ... and at most this many bytes of it: it stays in cache between its copy and the GEMM ...
WORKSPACE = 1 << 20
#: ... but at least this many columns (a thinner GEMM runs slowly).
MIN_COLUMNS = 128
#: Fewer (image, tile) units than this and tiles shrink (down to MIN_COLUMNS), then channels
#: are split into blocks too, down to ...
MIN_UNITS = 8
#: ... this many channels per block.
MIN_BLOCK = 64
#: wgrad sums each slice of its tiles into a partial copy of dw: at most this many copies, of
#: at most this many bytes together, and at least this many columns of cols per slice (filling
#: and adding up a copy must stay small next to the products summed into it).
MAX_SLICES = 16
SLICE_BYTES = 32 << 20
SLICE_COLUMNS = 512
#: Direct wgrad sums a tap's products over this many columns of a plane at a time.
DIRECT_CHUNK = 512


# --------------------------------------------------------------------------------------------
# planning: how a problem is cut into units (Python, from the shape alone)
# --------------------------------------------------------------------------------------------

class _Plan(NamedTuple):
    rows: int  # output rows per tile
    tiles: int  # tiles per image
    blocks: int  # channel blocks (fprop: of C_out/groups, dgrad: of C_in/groups, wgrad: of cols rows)
    slices: int  # wgrad: partial sums of dw (1 for the other passes)


def _geometry(p):
    """The sizes the kernels take, as one tuple of ints."""
    return (p.N, p.C_in, p.H, p.W, p.C_out, p.KH, p.KW, p.OH, p.OW, p.stride_h, p.stride_w,
            p.pad_t, p.pad_l, p.dil_h, p.dil_w, p.groups)


def _pointwise(p) -> bool:
    """A 1x1 convolution whose ``cols`` is x itself (stride 1, no padding)."""
    return (p.KH, p.KW, p.stride_h, p.stride_w, p.pad_t, p.pad_b, p.pad_l, p.pad_r) == (1, 1, 1, 1, 0, 0, 0, 0)


def _reach(p) -> int:
    """The row shift of the last kernel row in the stage, ``(KH-1)*dil_h // sh``: the stage holds
    this many rows more than the tile. Tiles of at least this many rows (and one) that are two
    apart stage disjoint input rows, which is what lets dgrad run even and odd tiles apart."""
    return max(1, (p.KH - 1) * p.dil_h // p.stride_h)


def _columns(p) -> int:
    """Columns of cols per output row: OW, plus the junk columns of the wide layout."""
    return p.OW if _pointwise(p) else _wide_columns(_geometry(p))


def _tile_rows(p, cols_rows: int, itemsize: int) -> int:
    """The most output rows whose cols (``cols_rows`` rows) fit TILE_COLUMNS and WORKSPACE (>= 1)."""
    return max(1, min(TILE_COLUMNS, WORKSPACE // (cols_rows * itemsize)) // _columns(p))


def _blocks(units: int, channels: int) -> int:
    """Channel blocks that bring ``units`` up to about MIN_UNITS, keeping MIN_BLOCK channels each;
    a count that leaves no block empty once the kernel gives each ceil(channels / blocks)."""
    if units >= MIN_UNITS:
        return 1
    blocks = max(1, min(-(-MIN_UNITS // units), channels // MIN_BLOCK))
    return -(-channels // -(-channels // blocks))


def _plan(p, itemsize: int, channels: int, min_rows: int = 1, at_once: int = 1) -> _Plan:
    """fprop and dgrad: the largest tiles that fit, smaller while there are fewer than MIN_UNITS of
    them but not under MIN_COLUMNS; then ``channels`` split into blocks if units are still few.
    ``at_once``: the share of the tiles that run at the same time (dgrad: half)."""
    K = (p.C_in // p.groups) * p.KH * p.KW
    low = max(min_rows, -(-MIN_COLUMNS // _columns(p)))
    rows = min(p.OH, max(low, min(_tile_rows(p, K, itemsize), p.N * p.OH // MIN_UNITS)))
    tiles = -(-p.OH // rows)
    return _Plan(rows, tiles, _blocks(max(1, p.N * tiles // at_once), channels), 1)


def _plan_wgrad(p, itemsize: int) -> _Plan:
    """wgrad: slices of at least SLICE_COLUMNS columns (at most MAX_SLICES, SLICE_BYTES of copies),
    blocks of cols rows if slices are few, then the largest tiles whose block of cols fits."""
    K = (p.C_in // p.groups) * p.KH * p.KW
    slices = max(1, min(p.N * p.OH, MAX_SLICES, SLICE_BYTES // (p.C_out * K * itemsize),
                        p.N * p.OH * _columns(p) // SLICE_COLUMNS))
    blocks = _blocks(slices, K)
    rows = min(p.OH, _tile_rows(p, -(-K // blocks), itemsize))
    tiles = -(-p.OH // rows)
    return _Plan(rows, tiles, blocks, min(slices, p.N * tiles))


# --------------------------------------------------------------------------------------------
# the wide layout: staging, cols, and back (on flat arrays, rows found by offset: see _loops)
# --------------------------------------------------------------------------------------------

@jit
def _wide_columns(g):
    """Wq: columns per output row in the wide layout, OW plus the last kernel column's shift."""
    KW, OW, sw, dil_w = g[6], g[8], g[10], g[14]
    return OW + (KW - 1) * dil_w // sw


@jit
def _stage_rows(g, rows):
    """Rows of a tile's stage: the tile's, the last kernel row's shift, and one row that the junk
    columns of the last output row may run into."""
    KH, sh, dil_h = g[5], g[9], g[13]
    return rows + (KH - 1) * dil_h // sh + 1


@inline_jit
def _phase_used(phase, taps, dil, stride):
    """Does any of ``taps`` kernel taps (dilation ``dil``) land on stride phase ``phase``?"""
    for t in range(taps):
        if t * dil % stride == phase:
            return True
    return False


@jit
def _tap_starts(g, stage):
    """Where the run of each kernel tap (kh, kw) starts in ``stage`` flattened, for its channel 0:
    in phase plane (kh*dil_h % sh, kw*dil_w % sw), shifted by kh*dil_h // sh rows and
    kw*dil_w // sw columns. (KH*KW,) int64."""
    KH, KW, sh, sw, dil_h, dil_w = g[5], g[6], g[9], g[10], g[13], g[14]
    rows, Wq = stage.shape[2], stage.shape[3]
    starts = np.empty(KH * KW, np.int64)  # (KH*KW,)
    for kh in range(KH):
        for kw in range(KW):
            plane = (kh * dil_h % sh) * sw + kw * dil_w % sw
            starts[kh * KW + kw] = (plane * rows + kh * dil_h // sh) * Wq + kw * dil_w // sw
    return starts


@jit
def _stage(x, dx, stage, n, c0, g, oh0):
    """Stage a tile's input rows from ``x``, or add a staged gradient back into ``dx``: exactly one
    of the two is given, the other is None.

    Forward: ``stage[c, ph*sw + pw, r, q] = x[n, c0 + c, (oh0 + r)*sh + ph - pad_t, q*sw + pw
    - pad_l]``, 0 in the padding, for every stage row; x is (N, C_in, H, W), stage (channels,
    sh*sw, stage rows, Wq). Back: ``dx[n, c0 + c, ih, iw] += stage[...]`` by the same map, padding
    dropped, for the stage rows a tap can reach (not the last, junk row), so that tiles two apart
    stay apart. Phase planes that no tap reads are skipped either way. Numba prunes the branches
    of the None argument before typing, so each direction compiles alone: the forward never types
    the back's writes against x, a read-only input."""
    _, C_in, H, W, _, KH, KW, _, _, sh, sw, pt, pl, dil_h, dil_w, _ = g
    channels, phases, rows, Wq = stage.shape
    flat_image, flat_stage = (x if dx is None else dx).reshape(-1), stage.reshape(-1)
    for c in range(channels):
        for ph in range(sh):
            if not _phase_used(ph, KH, dil_h, sh):
                continue
            for pw in range(sw):
                if not _phase_used(pw, KW, dil_w, sw):
                    continue
                lo, hi = inside(pw - pl, sw, W, Wq)
                for r in range(rows):
                    ih = (oh0 + r) * sh + ph - pt
                    at = ((c * phases + ph * sw + pw) * rows + r) * Wq
                    pixel = ((n * C_in + c0 + c) * H + ih) * W + pw - pl  # the image row's start, shifted
                    if dx is None:
                        if 0 <= ih < H:
                            gather(flat_stage, at, Wq, flat_image, pixel, lo, hi, sw)
                        else:
                            fill(flat_stage, at, Wq, 0)
                    elif 0 <= ih < H and r < rows - 1:
                        axpy(flat_image, pixel, sw, 1.0, flat_stage, at, 1, lo, hi)


@jit
def _cols(stage, g, r0, cols, width):
    """Rows r0 .. r0 + len(cols) of the tile's cols: cols[r - r0, :width] = the run of the stage that
    row r = (c, kh, kw) reads; the stage's channel 0 is channel ``r0 // (KH*KW)`` of cols."""
    starts = _tap_starts(g, stage)
    per_channel = stage.size // stage.shape[0]
    src, dst = stage.reshape(-1), cols.reshape(-1)
    c, tap = 0, r0 % starts.size  # c counts from the stage's channel 0
    for i in range(cols.shape[0]):
        copy(dst, i * cols.shape[1], src, c * per_channel + starts[tap], width)
        tap += 1
        if tap == starts.size:
            c, tap = c + 1, 0


@jit
def _cols_add(cols, g, r0, stage, width):
    """The adjoint of :func:`_cols`: each row of cols added into its run of the stage."""
    starts = _tap_starts(g, stage)
    per_channel = stage.size // stage.shape[0]
    src, dst = cols.reshape(-1), stage.reshape(-1)
    c, tap = 0, r0 % starts.size
    for i in range(cols.shape[0]):
        add(dst, c * per_channel + starts[tap], src, i * cols.shape[1], width)
        tap += 1
        if tap == starts.size:
            c, tap = c + 1, 0


@jit
def _zero_junk(wide, width, OW, Wq):
    """Zero the Wq - OW junk columns of every output row in wide[:, :width]."""
    flat = wide.reshape(-1)
    for i in range(wide.shape[0]):
        for q in range(OW, width, Wq):
            fill(flat, i * wide.shape[1] + q, Wq - OW, 0)


@jit
def _widen(dy, n, co0, oh0, Wq, wide, width):
    """wide[co, (oh - oh0)*Wq + ow] = dy[n, co0 + co, oh, ow] in wide[:, :width], junk columns 0:
    dy (N, C_out, OH, OW)."""
    _, C_out, OH, OW = dy.shape
    src, dst = dy.reshape(-1), wide.reshape(-1)
    for co in range(wide.shape[0]):
        for r in range(width // Wq):
            start = co * wide.shape[1] + r * Wq
            copy(dst, start, src, ((n * C_out + co0 + co) * OH + oh0 + r) * OW, OW)
            fill(dst, start + OW, Wq - OW, 0)


@jit
def _narrow(wide, y, n, co0, oh0, Wq, width, b):
    """y[n, co0 + co, oh] = wide[co, (oh - oh0)*Wq : + OW] for the rows in wide[:, :width]
    (+ b[co0 + co] unless b is empty): the adjoint of :func:`_widen`, junk dropped."""
    _, C_out, OH, OW = y.shape
    src, dst = wide.reshape(-1), y.reshape(-1)
    for co in range(wide.shape[0]):
        for r in range(width // Wq):
            start = ((n * C_out + co0 + co) * OH + oh0 + r) * OW
            copy(dst, start, src, co * wide.shape[1] + r * Wq, OW)
            if b.size:
                shift(dst, start, OW, b[co0 + co])


@inline_jit
def _tile(tile, tiles, rows, OH, OW):
    """Image, first and last output row, and first and last column of ``tile`` (image-major)."""
    n, t = divmod(tile, tiles)
    oh0 = t * rows
    oh1 = min(OH, oh0 + rows)
    return n, oh0, oh1, oh0 * OW, oh1 * OW


@inline_jit
def _unit(unit, blocks, channels, tiles, rows, OH, OW):
    """The tile (see :func:`_tile`) and the block of channels [c0, c1) of a unit of work; blocks
    of ceil(channels / blocks), the tile's units consecutive."""
    unit = np.int64(unit)  # signed: an unsigned prange index turns arithmetic float
    per_block = -(-channels // blocks)
    n, oh0, oh1, j0, j1 = _tile(unit // blocks, tiles, rows, OH, OW)
    c0 = unit % blocks * per_block
    return n, oh0, oh1, j0, j1, c0, min(channels, c0 + per_block)


# --------------------------------------------------------------------------------------------
# im2col + GEMM kernels
# --------------------------------------------------------------------------------------------

@parallel_jit
def _forward_gemm(x, w, b, y, g, rows, tiles, blocks, pointwise):
    """y[n, block of a group's channels, tile] = w[block] @ cols (+ b): x (N, C_in, H, W),
    w (C_out, K), b (C_out,) or (0,), y (N, C_out, OH, OW)."""
    N, C_in, H, W, C_out, KH, KW, OH, OW, sh, sw, _, _, _, _, groups = g
    Cig, Cog = C_in // groups, C_out // groups
    K = Cig * KH * KW
    Wq = OW if pointwise else _wide_columns(g)
    x3 = x.reshape(N, C_in, H * W)
    y3 = y.reshape(N, C_out, OH * OW)
    for unit in prange(N * tiles * blocks):
        n, oh0, oh1, j0, j1, co0, co1 = _unit(unit, blocks, Cog, tiles, rows, OH, OW)
        if pointwise:  # cols is x: the GEMM writes y directly
            for grp in range(groups):
                out = y3[n, grp * Cog + co0:grp * Cog + co1, j0:j1]  # (block, tile columns)
                gemm(1.0, w[grp * Cog + co0:grp * Cog + co1], x3[n, grp * Cig:(grp + 1) * Cig, j0:j1], 0.0, out)
                if b.size:
                    for co in range(co1 - co0):
                        out[co] += b[grp * Cog + co0 + co]
            continue
        width = (oh1 - oh0) * Wq
        stage = np.empty((Cig, sh * sw, _stage_rows(g, oh1 - oh0), Wq), x.dtype)  # (C_in/groups, phases, rows, Wq)
        cols = np.empty((K, width), x.dtype)  # (K, tile rows*Wq)
        wide = np.empty((co1 - co0, width), x.dtype)  # (block, tile rows*Wq)
        for grp in range(groups):
            _stage(x, None, stage, n, grp * Cig, g, oh0)
            _cols(stage, g, 0, cols, width)
            gemm(1.0, w[grp * Cog + co0:grp * Cog + co1], cols, 0.0, wide)
            _narrow(wide, y, n, grp * Cog + co0, oh0, Wq, width, b)


@parallel_jit
def _backward_input_gemm(dy, w, dx, g, rows, tiles, blocks, pointwise):
    """dx = col2im(w^T @ dy) per tile and block of C_in/groups: dy (N, C_out, OH, OW), w (C_out, K),
    dx (N, C_in, H, W). A pointwise dgrad is the GEMM alone, written straight into dx."""
    N, C_in, H, W, C_out, KH, KW, OH, OW, sh, sw, _, _, _, _, groups = g
    Cig, Cog = C_in // groups, C_out // groups
    per_block = -(-Cig // blocks)
    taps = KH * KW
    if pointwise:
        dy3 = dy.reshape(N, C_out, OH * OW)
        dx3 = dx.reshape(N, C_in, H * W)
        for unit in prange(N * tiles * blocks):
            n, _, _, j0, j1, ci0, ci1 = _unit(unit, blocks, Cig, tiles, rows, OH, OW)
            for grp in range(groups):
                w_g = w[grp * Cog:(grp + 1) * Cog, ci0:ci1]  # (C_out/groups, block)
                gemm(1.0, w_g.T, dy3[n, grp * Cog:(grp + 1) * Cog, j0:j1], 0.0,
                     dx3[n, grp * Cig + ci0:grp * Cig + ci1, j0:j1])
        return
    Wq = _wide_columns(g)
    planes = dx.reshape(N * C_in, H * W)
    for plane in prange(N * C_in):
        planes[plane] = 0
    for phase in range(2):  # even tiles, then odd: tiles two apart touch disjoint rows of dx
        per_image = (tiles - phase + 1) // 2
        for unit_ in prange(N * per_image * blocks):
            unit = np.int64(unit_)  # signed: an unsigned prange index turns arithmetic float
            n, t = divmod(unit // blocks, per_image)
            n, oh0, oh1, _, _ = _tile(n * tiles + 2 * t + phase, tiles, rows, OH, OW)
            ci0 = unit % blocks * per_block
            ci1 = min(Cig, ci0 + per_block)
            width = (oh1 - oh0) * Wq
            wide_dy = np.empty((Cog, width), dy.dtype)  # (C_out/groups, tile rows*Wq)
            cols = np.empty(((ci1 - ci0) * taps, width), dy.dtype)  # (block rows of cols, tile rows*Wq)
            stage = np.empty((ci1 - ci0, sh * sw, _stage_rows(g, oh1 - oh0), Wq), dy.dtype)
            for grp in range(groups):
                _widen(dy, n, grp * Cog, oh0, Wq, wide_dy, width)
                w_g = w[grp * Cog:(grp + 1) * Cog, ci0 * taps:ci1 * taps]  # (C_out/groups, block rows)
                gemm(1.0, w_g.T, wide_dy, 0.0, cols)
                _zero_junk(cols, width, OW, Wq)  # 0 already, unless w holds Inf or NaN (times dy's junk 0)
                stage[:] = 0
                _cols_add(cols, g, ci0 * taps, stage, width)
                _stage(None, dx, stage, n, grp * Cig + ci0, g, oh0)


@parallel_jit
def _backward_weight_gemm(dy, x, dw, g, rows, tiles, blocks, slices, pointwise):
    """dw = sum over images and tiles of dy @ cols^T: dy (N, C_out, OH, OW), x (N, C_in, H, W),
    dw (C_out, K). Unit (slice, block of cols rows) sums its slice's tiles, in order, into its
    slice's partial copy of dw (into dw itself when there is one slice); the copies are then
    added in slice order."""
    N, C_in, H, W, C_out, KH, KW, OH, OW, sh, sw, _, _, _, _, groups = g
    Cig, Cog = C_in // groups, C_out // groups
    K = Cig * KH * KW
    taps = KH * KW
    per_block = -(-K // blocks)
    units = N * tiles
    Wq = OW if pointwise else _wide_columns(g)
    x3 = x.reshape(N, C_in, H * W)
    dy3 = dy.reshape(N, C_out, OH * OW)
    partial = np.empty((slices if slices > 1 else 0, C_out, K), dw.dtype)  # (slices, C_out, K)
    for unit_ in prange(slices * blocks):
        unit = np.int64(unit_)  # signed: an unsigned prange index turns arithmetic float
        s, block = divmod(unit, blocks)
        r0 = block * per_block
        r1 = min(K, r0 + per_block)
        first, last = s * units // slices, (s + 1) * units // slices
        out = dw if slices == 1 else partial[s]  # (C_out, K)
        # the channels these rows of cols read (none staged when cols is x)
        stage = np.empty((0 if pointwise else (r1 - 1) // taps + 1 - r0 // taps, sh * sw,
                          _stage_rows(g, rows), Wq), x.dtype)
        cols = np.empty((r1 - r0, rows * Wq), x.dtype)  # (block rows of cols, tile rows*Wq)
        wide_dy = np.empty((Cog, rows * Wq), x.dtype)  # (C_out/groups, tile rows*Wq)
        for tile in range(first, last):
            n, oh0, oh1, j0, j1 = _tile(tile, tiles, rows, OH, OW)
            width = (oh1 - oh0) * Wq
            for grp in range(groups):
                if pointwise:
                    a_op = dy3[n, grp * Cog:(grp + 1) * Cog, j0:j1]  # (C_out/groups, tile columns)
                    b_op = x3[n, grp * Cig + r0:grp * Cig + r1, j0:j1]  # (block, tile columns)
                else:
                    _stage(x, None, stage, n, grp * Cig + r0 // taps, g, oh0)
                    _cols(stage, g, r0, cols, width)
                    _zero_junk(cols, width, OW, Wq)  # x's values there would meet dy's junk 0 (Inf * 0 = NaN)
                    _widen(dy, n, grp * Cog, oh0, Wq, wide_dy, width)
                    a_op = wide_dy[:, :width]  # (C_out/groups, tile rows*Wq)
                    b_op = cols[:, :width]  # (block rows, tile rows*Wq)
                gemm(1.0, a_op, b_op.T, 0.0 if tile == first else 1.0, out[grp * Cog:(grp + 1) * Cog, r0:r1])
    if slices > 1:
        for co in prange(C_out):
            dw[co] = partial[0, co]
            for s in range(1, slices):
                dw[co] += partial[s, co]


# --------------------------------------------------------------------------------------------
# direct kernels: every output channel reads one input channel (C_in/groups == 1)
# --------------------------------------------------------------------------------------------

@inline_jit
def _plane(unit, g, like):
    """Image and input channel of a direct kernel's unit (one input plane each), and an empty stage
    for the whole plane (see :func:`_stage`), in the dtype of ``like``."""
    n, ci = divmod(np.int64(unit), g[1])  # signed: an unsigned prange index turns arithmetic float
    return n, ci, np.empty((1, g[9] * g[10], _stage_rows(g, g[7]), _wide_columns(g)), like.dtype)


@parallel_jit
def _forward_direct(x, w, b, y, g):
    """y[n, co] = the sum over taps of w[co, tap] * x[n, co // (C_out/groups)] shifted: x (N, C_in, H, W),
    w (C_out, KH*KW), b (C_out,) or (0,), y (N, C_out, OH, OW). One input plane per unit, staged
    once for all its output channels; each tap one multiply-add over the wide output plane."""
    N, C_in, C_out, KH, KW, OH, groups = g[0], g[1], g[4], g[5], g[6], g[7], g[15]
    Wq = _wide_columns(g)
    for unit in prange(N * C_in):
        n, ci, stage = _plane(unit, g, x)  # stage: (1, phases, rows, Wq)
        _stage(x, None, stage, n, ci, g, 0)
        src, starts = stage.reshape(-1), _tap_starts(g, stage)
        wide = np.empty((1, OH * Wq), y.dtype)  # (1, OH*Wq) one output plane, wide
        for co in range(ci * (C_out // groups), (ci + 1) * (C_out // groups)):
            wide[:] = 0
            for tap in range(KH * KW):
                axpy(wide[0], 0, 1, w[co, tap], src, starts[tap], 1, 0, OH * Wq)
            _narrow(wide, y, n, co, 0, Wq, OH * Wq, b)


@parallel_jit
def _backward_input_direct(dy, w, dx, g):
    """dx[n, ci] = the sum over its output channels and taps of w * dy, added back into a staged
    plane: one input plane per unit, so no two units write the same pixel."""
    N, C_in, C_out, KH, KW, OH, OW, groups = g[0], g[1], g[4], g[5], g[6], g[7], g[8], g[15]
    Wq = _wide_columns(g)
    for unit in prange(N * C_in):
        n, ci, stage = _plane(unit, g, dy)  # stage: (1, phases, rows, Wq)
        stage[:] = 0
        dst, starts = stage.reshape(-1), _tap_starts(g, stage)
        wide_dy = np.empty((1, OH * Wq), dy.dtype)  # (1, OH*Wq) one output-gradient plane, wide
        for co in range(ci * (C_out // groups), (ci + 1) * (C_out // groups)):
            _widen(dy, n, co, 0, Wq, wide_dy, OH * Wq)
            for tap in range(KH * KW):
                start = starts[tap]
                weight = w[co, tap]
                if np.isfinite(weight):  # the junk columns add weight * 0 = 0
                    axpy(dst, start, 1, weight, wide_dy[0], 0, 1, 0, OH * Wq)
                else:  # Inf * 0 would be NaN: the output rows without their junk
                    for r in range(OH):
                        axpy(dst, start + r * Wq, 1, weight, wide_dy[0], r * Wq, 1, 0, OW)
        dx[n, ci] = 0
        _stage(None, dx, stage, n, ci, g, 0)


@parallel_jit
def _backward_weight_direct(dy, x, dw, g):
    """dw[co, tap] = the sum over images and output pixels of dy * x: one output channel per unit.
    Each tap's products are summed per wide output column over the images (a vector multiply-add
    over the plane), then the columns are added up, junk columns left out."""
    N, _, _, _, C_out, KH, KW, OH, OW, sh, sw, _, _, _, _, groups = g
    per_group = C_out // groups
    Wq = _wide_columns(g)
    for co_ in prange(C_out):
        co = np.int64(co_)  # signed: an unsigned prange index turns arithmetic float
        stage = np.empty((1, sh * sw, _stage_rows(g, OH), Wq), x.dtype)  # (1, phases, rows, Wq)
        src, starts = stage.reshape(-1), _tap_starts(g, stage)
        wide_dy = np.empty((1, OH * Wq), dy.dtype)  # (1, OH*Wq)
        size = OH * Wq
        acc = np.zeros(KH * KW * size, dw.dtype)  # (taps*OH*Wq,): per tap, per wide column
        for n in range(N):
            _stage(x, None, stage, n, co // per_group, g, 0)
            _widen(dy, n, co, 0, Wq, wide_dy, size)
            for q in range(0, size, DIRECT_CHUNK):  # a chunk of columns at a time: acc's stay in cache
                for tap in range(KH * KW):
                    multiply_add(acc, tap * size + q, wide_dy[0], q, src, starts[tap] + q, min(DIRECT_CHUNK, size - q))
        for tap in range(KH * KW):
            total = dw.dtype.type(0)
            for r in range(OH):
                for ow in range(OW):
                    total += acc[tap * size + r * Wq + ow]
            dw[co, tap] = total


@parallel_jit
def _backward_bias(dy, db):
    """db[co] = the sum of dy[:, co], in float64: dy (N, C_out, OH*OW). One channel per unit."""
    N, C_out, _ = dy.shape
    for co in prange(C_out):
        total = 0.0
        for n in range(N):
            for j in range(dy.shape[2]):
                total += dy[n, co, j]
        db[co] = total


# --------------------------------------------------------------------------------------------
# the backend's functions
# --------------------------------------------------------------------------------------------

def _direct(p) -> bool:
    return p.C_in // p.groups == 1


def conv2d_forward(x, w, b, p):
    y = empty(p.y_shape, x.dtype)  # (N, C_out, OH, OW)
    x, w2 = contiguous(x), contiguous(w).reshape(p.C_out, -1)  # w2: (C_out, C_in/groups*KH*KW)
    bias = contiguous(np.zeros(0, x.dtype) if b is None else b)  # (C_out,) or (0,): no bias
    if _direct(p):
        run(_forward_direct, x, w2, bias, y, _geometry(p))
    else:
        plan = _plan(p, x.itemsize, p.C_out // p.groups)
        run_with_blas(_forward_gemm, x, w2, bias, y, _geometry(p), plan.rows, plan.tiles, plan.blocks, _pointwise(p))
    return y


def conv2d_backward_input(dy, w, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C_in, H, W)
    dy, w2 = contiguous(dy), contiguous(w).reshape(p.C_out, -1)  # w2: (C_out, C_in/groups*KH*KW)
    if _direct(p):
        run(_backward_input_direct, dy, w2, dx, _geometry(p))
    else:
        plan = _plan(p, dy.itemsize, p.C_in // p.groups, min_rows=_reach(p), at_once=2)
        run_with_blas(_backward_input_gemm, dy, w2, dx, _geometry(p), plan.rows, plan.tiles, plan.blocks,
                      _pointwise(p))
    return dx


def conv2d_backward_weight(dy, x, p):
    dw = empty(p.w_shape, dy.dtype)  # (C_out, C_in/groups, KH, KW)
    dy, x, dw2 = contiguous(dy), contiguous(x), dw.reshape(p.C_out, -1)  # dw2: (C_out, C_in/groups*KH*KW)
    if _direct(p):
        run(_backward_weight_direct, dy, x, dw2, _geometry(p))
    else:
        plan = _plan_wgrad(p, dy.itemsize)
        run_with_blas(_backward_weight_gemm, dy, x, dw2, _geometry(p), plan.rows, plan.tiles, plan.blocks,
                      plan.slices, _pointwise(p))
    return dw


def conv2d_backward_bias(dy):
    dy = contiguous(dy)
    db = empty((dy.shape[1],), dy.dtype)  # (C_out,)
    run(_backward_bias, dy.reshape(dy.shape[0], dy.shape[1], -1), db)
    return db
