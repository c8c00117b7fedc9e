"""What only the C++ backend has: its kernel sets (AVX-512 / AVX2 / portable), its fast paths, its
threads (determinism, concurrency, the released GIL) and its bounded workspace. The generic matrix
in test_conv.py / test_pool.py / test_linear.py already checks every op against the reference."""

import contextlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastconv
from fastconv._params import conv_params
from fastconv._threads import num_threads
from fastconv.bench.suite import load_suite
from fastconv.problems import CONV_PROBLEMS, Conv
from support import assert_close, assert_equal, float32_conv_precision, randn, reference_conv_pass, small_ints

if fastconv.backend_status()["cpp"] is not None:
    pytest.skip(fastconv.backend_status()["cpp"], allow_module_level=True)

from fastconv import _cpp  # noqa: E402
from fastconv.backends.cpp import _util as cpp_util  # noqa: E402
from fastconv.backends.cpp import conv as cpp_conv  # noqa: E402

NAMES = ("y", "dx", "dw", "db")
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def _all_passes(c, x, w, b, dy, backend):
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend=backend)
    return (y, *fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend=backend))


def _params(c):
    return conv_params("conv2d", c.x_shape, c.w_shape, c.stride, c.padding, c.dilation, c.groups)


def _inputs(rng, c, make, dtype):
    x, w, b = make(rng, c.x_shape, dtype), make(rng, c.w_shape, dtype), make(rng, (c.C_out,), dtype)
    dy = make(rng, fastconv.conv2d(x, w, b, **c.kwargs, backend="reference").shape, dtype)
    return x, w, b, dy


# Problems that reach each fast path of csrc/conv.cpp, beyond the general problem list:
FAST_PATHS = [
    Conv("pointwise_many_images", 5, 9, 7, 7, 17, 1, 1),                 # B read as a matrix, tiles straddle images
    # flat wgrad of a whole batch in one chunk with a small dW: two halves of the batch (3 + 2 images)
    Conv("flat_wgrad_halves_odd_batch", 5, 6, 14, 14, 16, 5, 5),
    Conv("depthwise_stride1", 3, 6, 9, 21, 6, 3, 5, padding=(1, 2), groups=6),  # dgrad as a depthwise forward
    Conv("depthwise_strided", 2, 4, 11, 19, 8, 3, 3, stride=(2, 3), padding=1, dilation=(1, 2), groups=4),
    Conv("dgrad_col2im", 2, 7, 13, 11, 9, 3, 4, stride=(2, 3), padding=(1, 2)),  # stride > 1: GEMM + col2im
    Conv("dgrad_negative_pad", 2, 3, 6, 7, 5, 1, 2, padding=(2, 3)),      # flipped kernel with pad' < 0
    Conv("wgrad_slices", 4, 3, 48, 44, 5, 3, 3, padding=1),              # small dw, large batch: S > 1 slices
    Conv("wide_channels", 1, 70, 6, 5, 33, 3, 3, padding=1, groups=1),  # several packed panels and blocks
    # the forward's flat layout: stride phases some taps never use, one phase only, a strided 1x1,
    # output rows wider than a panel, a chunk of many images with groups
    Conv("flat_phase_subset", 2, 4, 14, 16, 6, 2, 4, stride=(3, 2), padding=(1, 2)),
    Conv("flat_one_phase", 2, 5, 17, 19, 7, 3, 3, stride=2, padding=2, dilation=2),
    Conv("flat_strided_1x1", 3, 8, 9, 11, 5, 1, 1, stride=2),
    Conv("flat_wide_rows", 1, 3, 5, 70, 4, 3, 3, padding=1),
    Conv("flat_many_images_groups", 9, 6, 5, 4, 9, 3, 2, padding=(2, 1), groups=3),
    # one depth block (147) and output rows wider than a panel (75, junk 3): the forward stores the
    # tiles within a row in y directly and the straddling ones through a tile, not staged
    Conv("flat_unstaged_stem", 2, 3, 21, 150, 9, 7, 7, stride=2, padding=3),
    # the weight read in place, except where its rows (forward) or depth steps (stride-1 dgrad) are a
    # multiple of 2 KiB apart, when its panels are packed as the kernel goes (C_in = 512): pointwise,
    # and a 3x3 whose 29 output channels leave a ragged panel in both passes
    Conv("weight_rows_2k_apart_pointwise", 2, 512, 3, 5, 29, 1, 1),
    Conv("weight_rows_2k_apart_3x3", 1, 512, 4, 3, 29, 3, 3, padding=1),
    # few pixels (49): the weight read in place by the general kernel, whose panels pad them less
    # than the few-rows kernel's; 30 output channels leave a ragged row panel, packed
    Conv("weight_in_place_few_pixels", 1, 20, 7, 7, 30, 3, 3, padding=1),
    # flat wgrad of few output channels: dW^T rows in tap-major order under the few-columns kernel
    # (C_in/groups a multiple of its MR), ragged and whole column panels, groups
    Conv("wgrad_tap_major", 2, 16, 9, 7, 5, 3, 3, padding=1),
    Conv("wgrad_tap_major_groups", 3, 32, 6, 5, 16, 3, 2, padding=(1, 0), stride=(1, 2), groups=2),
    # fewer output channels than one few-columns panel, C_in/groups not a multiple of its MR (LeNet's
    # conv1): the few-columns kernel with row pointers; ragged tap and column panels, groups
    Conv("wgrad_few_cols_rows", 2, 3, 11, 9, 6, 5, 4),
    Conv("wgrad_few_cols_rows_groups", 3, 6, 10, 8, 10, 3, 5, padding=(1, 0), groups=2),
    # a weight of 4 MiB or more (1 MiB pointwise): wgrad takes the packed im2col path, not the flat one
    Conv("wgrad_packed_large_weight", 2, 512, 5, 6, 256, 3, 3, padding=1),
    Conv("wgrad_packed_pointwise", 2, 1024, 3, 2, 256, 1, 1),
    # small images: B packed without junk columns (forward with 70 output channels, stride-1 dgrad
    # with 64; AVX-512), tiles straddling images; groups and stride phases
    Conv("compact_small_images", 3, 64, 6, 6, 70, 3, 3, padding=1),
    Conv("compact_groups_strided", 2, 16, 9, 7, 128, 3, 3, stride=2, padding=1, groups=2),
    # one image on 2 threads: private bands of output rows (10 + 9 at stride 2, 20 + 20 at 5x5)
    Conv("flat_private_bands_strided", 1, 4, 37, 41, 6, 3, 3, stride=2, padding=1),
    Conv("flat_private_bands_5x5", 1, 3, 40, 44, 8, 5, 5, padding=2),
    # 520 output channels (a ragged panel) over 640 columns: a unit of every row is wider than the
    # staging block, so units are cut by columns (B packed once), 7 of them, the last one ragged
    Conv("compact_column_units", 40, 8, 8, 7, 520, 3, 3, stride=2, padding=1),
    # depthwise forward's vector kernel (AVX-512 and AVX2, stride and dilation 1, 3x3 and 5x5; stride-1 dgrad
    # runs it too): a ragged last row block and column tile, rows narrower than a vector under a
    # row block taller than the plane, a channel multiplier reusing the padded plane
    Conv("dw_forward_ragged", 2, 5, 19, 37, 5, 3, 3, padding=1, groups=5),
    Conv("dw_forward_5x5_narrow_multiplier", 2, 3, 3, 9, 6, 5, 5, padding=(2, 1), groups=3),
    # depthwise wgrad's vector kernel (AVX-512 and AVX2, stride_w 1, 3x3 and 5x5): rows of several
    # vectors with a ragged last one (masked steps at both ends, plain ones between), rows narrower
    # than a vector, padding wider than the kernel's reach, a channel multiplier, no padding and
    # rows of whole vectors (every step plain), more channels than threads unevenly; and 3x4, which
    # it leaves to the portable loops
    Conv("dw_wgrad_ragged", 3, 5, 7, 37, 5, 3, 3, padding=1, groups=5),
    Conv("dw_wgrad_narrow", 2, 3, 6, 5, 3, 3, 3, padding=1, groups=3),
    Conv("dw_wgrad_5x5_stride_h", 2, 4, 13, 21, 4, 5, 5, stride=(2, 1), padding=2, groups=4),
    Conv("dw_wgrad_dilated_wide_pad", 2, 3, 9, 19, 3, 3, 3, padding=(3, 4), dilation=(2, 3), groups=3),
    Conv("dw_wgrad_multiplier", 2, 3, 8, 20, 6, 3, 3, padding=1, groups=3),
    Conv("dw_wgrad_plain", 2, 5, 10, 34, 5, 3, 3, padding=0, groups=5),
    Conv("dw_wgrad_3x4", 2, 3, 8, 20, 3, 3, 4, padding=1, groups=3),
    # its flattened kernel (stride 1, OW == W, planes of up to 128 vectors; plain loads but in the
    # planes at x's ends): rows narrower than a vector (a step spans rows) with a ragged last step,
    # a dilated 5x5, per-side padding with a channel multiplier, rows of two fp32 AVX2 vectors, a
    # top padding whose taps reach past the plane before (dw_wgrad_ragged, _narrow and _multiplier
    # take it too; _5x5_stride_h, _dilated_wide_pad and _plain take the row-by-row kernel)
    Conv("dw_wgrad_flat_rows_span_steps", 3, 5, 5, 3, 5, 3, 3, padding=1, groups=5),
    Conv("dw_wgrad_flat_pad_past_planes", 3, 4, 2, 3, 4, 3, 3, padding=((3, 0), (1, 1)), groups=4),
    Conv("dw_wgrad_flat_5x5_dilated", 2, 3, 7, 6, 3, 5, 5, padding=(2, 4), dilation=(1, 2), groups=3),
    Conv("dw_wgrad_flat_multiplier_per_side", 2, 3, 4, 7, 6, 3, 3, padding=((0, 2), (2, 0)), groups=3),
    Conv("dw_wgrad_flat_two_steps_per_row", 2, 4, 3, 16, 4, 3, 3, padding=1, groups=4),
    # depthwise forward at stride_w > 1, output by output (stride_w 2 with dilation 1: a constant
    # column stride; depthwise_strided above: stride 3, dilated): 3x3, 5x5, stride (1, 2)
    Conv("dw_forward_stride2", 2, 6, 9, 11, 6, 3, 3, stride=2, padding=1, groups=6),
    Conv("dw_forward_stride2_5x5_multiplier", 2, 3, 13, 10, 6, 5, 5, stride=2, padding=2, groups=3),
    Conv("dw_forward_stride_1_2", 2, 4, 7, 9, 4, 3, 3, stride=(1, 2), padding=(0, 1), groups=4),
    # depthwise forward on flattened small planes (3x3, 5x5, stride 1, OW == W, up to 32 outputs;
    # AVX-512 and AVX2; the stride-1 dgrad runs it too): a ragged last step, per-side padding with a
    # channel multiplier, dilation; plain loads but in the planes at x's ends
    Conv("dw_forward_flat_ragged", 3, 5, 5, 6, 5, 3, 3, padding=1, groups=5),
    Conv("dw_forward_flat_5x5_per_side_multiplier", 2, 3, 4, 7, 6, 5, 5, padding=((2, 2), (1, 3)), groups=3),
    Conv("dw_forward_flat_dilated", 2, 4, 5, 5, 4, 3, 3, padding=2, dilation=2, groups=4),
    # strided depthwise dgrad as a stride-1 forward of dy spread on the stride's lattice: 3x3 stride
    # 2, 5x5 at stride (2, 3), a stride wider than the kernel (gaps between the lattice's taps),
    # dilation, per-side padding whose bottom and right rows of the lattice fall past the padded
    # plane; a padding wider than the kernel's span scatters instead
    Conv("dw_dgrad_spread", 2, 5, 9, 12, 5, 3, 3, stride=2, padding=1, groups=5),
    Conv("dw_dgrad_spread_5x5_stride_2_3", 2, 3, 11, 13, 3, 5, 5, stride=(2, 3), padding=(2, 1), groups=3),
    Conv("dw_dgrad_spread_stride_over_kernel", 2, 4, 10, 9, 4, 2, 2, stride=3, groups=4),
    Conv("dw_dgrad_spread_dilated", 2, 3, 12, 11, 3, 3, 3, stride=2, padding=(2, 1), dilation=(2, 1), groups=3),
    Conv("dw_dgrad_spread_per_side", 2, 3, 9, 8, 3, 3, 3, stride=2, padding=((1, 4), (0, 5)), groups=3),
    Conv("dw_dgrad_wide_pad_scatters", 2, 3, 7, 8, 3, 3, 3, stride=2, padding=3, groups=3),
    # pointwise on small images with 64+ rows each way: AVX2's general kernel (6x16) where its
    # panels pad each image's 15 pixels less than the few-rows one's (4x24)
    Conv("pointwise_small_images_general_kernel", 3, 67, 3, 5, 70, 1, 1),
]

# Winograd F(2x2, 3x3) (csrc/winograd.cpp), forward and stride-1 dgrad: GEMM columns along padded
# tile rows (wide images) with a clipped last tile row and column; offset tables (narrow images)
# into padded output planes (odd sizes) or straight into y (even); a padding that leaves dgrad's
# zero or negative; asymmetric padding; more input channels than a depth block (dgrad: more
# output channels than one row panel of the general kernel); ragged row panels; wide blocks (U of
# 8 MiB or more: 362+ channels each way), through tables over two blocks, along rows, over two
# chunks of images
WINOGRAD = [
    Conv("winograd_rows_clipped", 2, 64, 9, 35, 64, 3, 3, padding=1),
    Conv("winograd_tables_cropped", 8, 65, 7, 7, 72, 3, 3, padding=1),
    Conv("winograd_tables_direct", 7, 64, 8, 10, 64, 3, 3, padding=1),
    Conv("winograd_pad_3", 1, 64, 20, 34, 66, 3, 3, padding=3),
    Conv("winograd_asymmetric_pad", 1, 64, 12, 40, 96, 3, 3, padding=(0, 2)),
    Conv("winograd_two_depth_blocks", 1, 300, 19, 13, 64, 3, 3, padding=1),
    Conv("winograd_32_channels_in", 9, 32, 11, 13, 48, 3, 3, padding=1),
    Conv("winograd_wide_tables", 14, 370, 5, 7, 380, 3, 3, padding=1),
    Conv("winograd_wide_rows", 2, 364, 6, 34, 366, 3, 3, padding=1),
    Conv("winograd_wide_chunks", 15, 370, 12, 12, 364, 3, 3, padding=1),
]
# Winograd wgrad (128+ channels each way): along rows, two blocks per image; through tables, over
# three chunks of images; dy's clipped tiles (odd OH, OW) and rows mode's junk tiles add nothing.
# Halves of the batch apart (F(2x2), F(3x3) at these sizes): one image each, 5 each in chunks,
# 2 + 1; the team on each block: one image, and F(4x4) (its S over kHalfSumBytes)
WINOGRAD_WGRAD = [
    Conv("winograd_wgrad_rows", 2, 128, 9, 35, 130, 3, 3, padding=1),
    Conv("winograd_wgrad_tables_chunks", 10, 129, 7, 7, 128, 3, 3, padding=1),
    Conv("winograd_wgrad_rows_two_blocks", 1, 128, 30, 62, 128, 3, 3, padding=1),
    Conv("winograd_wgrad_odd_halves", 3, 128, 10, 13, 128, 3, 3, padding=1),
]
# wgrad as dot products along the pixels (fp32 with AVX-512, up to 16 output channels per group,
# 64..1024 taps x channels, 160+ output pixels): tiles ragged both ways (7 channels against 4 rows,
# 117 taps x channels against 6), stride phases, groups, one image in many runs of output-channel
# tiles, and slices over two rounds; pointwise layers on planes of 1024+ pixels (rows read where
# they lie, any channels): tiles ragged both ways, groups, 10 images of 400 KiB in slices of one,
# rounds of 8 and 2; under the other kernel sets they take the flat path
DOT_WGRAD = [
    Conv("dot_wgrad_pointwise_ragged", 3, 17, 32, 32, 22, 1, 1),
    Conv("dot_wgrad_pointwise_groups", 2, 24, 16, 64, 20, 1, 1, groups=2),
    Conv("dot_wgrad_pointwise_rounds", 10, 40, 32, 32, 60, 1, 1),
    Conv("dot_wgrad_ragged", 3, 13, 15, 11, 7, 3, 3, padding=(0, 2)),
    Conv("dot_wgrad_strided", 3, 8, 31, 25, 12, 3, 3, stride=2, padding=1),
    Conv("dot_wgrad_groups", 4, 16, 17, 10, 10, 3, 3, padding=1, groups=2),
    Conv("dot_wgrad_runs", 1, 12, 20, 9, 16, 3, 3, padding=1),
    Conv("dot_wgrad_rounds", 10, 12, 64, 64, 8, 3, 3, padding=1),
]
# wgrad with vectors along the input channels (conv_chan_wgrad.cpp; AVX-512 and AVX2, 16 and 8
# lanes): output channels past a multiple of the kernel's rows (8 / 4), rows narrower than a vector
# (each plane transposed whole) and wider, stride, dilation and asymmetric padding, groups, a kernel
# of 6 rows, and more slices than a round holds (64 channels at 8x8, a 25.6 KB copy: 20 images a
# slice, 9 slices; 10880 terms a sum: at 81920, 32x32 images, fp32 rounding on both sides of the
# band test's comparison reached 2.5x its tolerance near 0)
CHAN_WGRAD = [
    Conv("chan_wgrad_ragged", 3, 16, 13, 11, 13, 3, 3, padding=(2, 0)),
    Conv("chan_wgrad_strided_dilated", 2, 32, 21, 19, 10, 3, 3, stride=(2, 1), padding=1, dilation=(1, 2)),
    Conv("chan_wgrad_groups", 2, 64, 12, 17, 24, 3, 3, padding=1, groups=2),
    Conv("chan_wgrad_tall", 2, 16, 14, 20, 9, 6, 2, padding=(2, 1)),
    Conv("chan_wgrad_rounds", 170, 64, 8, 8, 8, 3, 3, padding=1),
]
# Winograd F(4x4, 3x3), the fp32 tile of layers of up to 384 channels in and out together: along
# rows (OW >= 61: 16+ tiles a row) with OH and OW 1, 2 or 3 past a multiple of 4 (clipped last tile
# row and column) and padding 0; through tables straight into y (OH, OW multiples of 4) or into
# padded planes cropped after the chunk, over two chunks of images; paddings that leave dgrad's zero
# or negative, per side; more channels than a depth block of its GEMMs (32)
WINOGRAD_F4 = [
    Conv("winograd_f4_rows_clipped", 2, 64, 9, 70, 64, 3, 3, padding=1),
    Conv("winograd_f4_rows_pad_0", 1, 64, 13, 67, 80, 3, 3),
    Conv("winograd_f4_tables_direct", 6, 64, 8, 12, 64, 3, 3, padding=1),
    Conv("winograd_f4_tables_two_chunks", 13, 65, 30, 29, 72, 3, 3, padding=1),
    Conv("winograd_f4_pad_2_3", 2, 64, 18, 22, 66, 3, 3, padding=(2, 3)),
    Conv("winograd_f4_pad_per_side", 2, 96, 11, 30, 64, 3, 3, padding=((0, 2), (1, 0))),
]
# F(4x4) runs only at precision "high", which trades accuracy for speed: its largest error over a
# layer's outputs reaches the fp32 tolerance where a forward sums 128 channels (worst of 30 seeds
# 0.92; 1.05 on one CI seed, at an output near zero), so its checks allow a quarter more
F4_HIGH_SCALE = 1.25
# its wgrad (128+ channels each way, up to 1024 pixels): along rows; through tables, over two chunks;
# dy's clipped tiles and rows mode's junk tiles adding nothing (two blocks in an image, forced:
# WINOGRAD_WGRAD's winograd_wgrad_rows_two_blocks)
WINOGRAD_F4_WGRAD = [
    Conv("winograd_f4_wgrad_rows", 1, 128, 14, 70, 128, 3, 3, padding=1),
    Conv("winograd_f4_wgrad_tables_chunks", 35, 129, 5, 5, 128, 3, 3, padding=1),
]
# Winograd F(3x3, 3x3), the fp32 tile of wide images (46+ output columns) of up to 256 channels in
# and out together (at precision "high", F(4x4) takes those it allows): OH and OW 1 and 2 past a
# multiple of 3 (a clipped last tile in every tile row, and a clipped last tile row), padding 0 and 1
WINOGRAD_F3 = [
    Conv("winograd_f3_rows_clipped", 2, 80, 10, 50, 96, 3, 3, padding=1),
    Conv("winograd_f3_rows_pad_0", 1, 72, 14, 61, 48, 3, 3),
]
# the strided dgrad as a forward per phase of dx (conv_subpixel.cpp), named (test_strided_dgrad_as_the_reference
# runs it on COL2IM's undilated strided layers too: phases without taps where the kernel is narrower
# than the stride, padding wider than the kernel, strides 2 to 4, rows and columns apart) and, with
# the AVX-512 kernels, by the heuristics on the fourth (test_subpixel_where_it_pays): groups, an image
# narrower than the stride, chunks of images (256 KiB of dx an image: 4 a chunk, 3 chunks), an image
# of odd width, an uneven stride with a kernel wider than it
SUBPIXEL = [
    Conv("subpixel_groups", 2, 32, 15, 14, 12, 3, 3, stride=2, padding=1, groups=2),
    Conv("subpixel_image_under_stride", 2, 16, 2, 9, 8, 3, 2, stride=3, padding=(1, 0)),
    Conv("subpixel_chunks", 10, 64, 32, 32, 8, 3, 3, stride=2, padding=1),
    Conv("subpixel_odd_width", 1, 64, 80, 79, 8, 3, 3, stride=2, padding=1),
    Conv("subpixel_strides_3_2", 1, 64, 60, 57, 6, 5, 4, stride=(3, 2), padding=(2, 1)),
]
# depthwise with the channels in the vector lanes (dw_lanes.h; AVX-512 and AVX2, fp32 and fp64:
# 16, 8 or 4 lanes) on small planes and strided layers, every pass unless named: a ragged last block
# of channels at stride 2 (dgrad: dy spread); small "same" planes; 5x5 at stride (2, 1) with
# dilation (dgrad spread at stride 2 down the rows only); a channel multiplier (its dgrad scatters);
# per-side padding; a kernel narrower than the stride (2x2, 4 taps: the wgrad takes the plane
# kernels); a padding wider than the kernel's span (the dgrad scatters); 4x4 planes; a wgrad on
# 32x32 planes (the forward and dgrad on planes; not with fp64 on AVX2)
DW_LANES = [
    Conv("dw_lanes_ragged_block", 2, 19, 9, 11, 19, 3, 3, stride=2, padding=1, groups=19),
    Conv("dw_lanes_same", 3, 35, 5, 7, 35, 3, 3, padding=1, groups=35),
    Conv("dw_lanes_5x5_dilated_strided", 2, 17, 10, 11, 17, 5, 5, stride=(2, 1), padding=(2, 1), dilation=(1, 2),
         groups=17),
    Conv("dw_lanes_multiplier", 2, 8, 10, 9, 16, 3, 3, stride=2, padding=1, groups=8),
    Conv("dw_lanes_per_side", 2, 21, 9, 8, 21, 3, 3, stride=2, padding=((1, 4), (0, 5)), groups=21),
    Conv("dw_lanes_stride_over_kernel", 2, 32, 10, 9, 32, 2, 2, stride=3, groups=32),
    Conv("dw_lanes_wide_pad", 2, 24, 9, 9, 24, 3, 3, stride=2, padding=3, groups=24),
    Conv("dw_lanes_4x4", 2, 33, 4, 4, 33, 3, 3, padding=1, groups=33),
    Conv("dw_lanes_wgrad_32x32", 2, 16, 32, 32, 16, 3, 3, padding=1, groups=16),
]
# the passes of each that take the lanes in fp32 with either vector set
DW_LANES_PASSES = {
    "dw_lanes_multiplier": ("fwd", "wgrad"), "dw_lanes_stride_over_kernel": ("fwd", "dgrad"),
    "dw_lanes_wide_pad": ("fwd", "wgrad"), "dw_lanes_wgrad_32x32": ("wgrad",),
}
FAST_PATHS += DW_LANES
FAST_PATHS += WINOGRAD + WINOGRAD_WGRAD + DOT_WGRAD + CHAN_WGRAD + SUBPIXEL + WINOGRAD_F4 + WINOGRAD_F4_WGRAD + WINOGRAD_F3


@contextlib.contextmanager
def _winograd_tile(m):
    """Every pass that runs as Winograd uses tile m (1: none), the chooser's again afterwards."""
    _cpp.set_winograd_tile(m)
    try:
        yield
    finally:
        _cpp.set_winograd_tile(0)


@pytest.fixture(params=["avx512", "avx2", "generic"])
def isa(request):
    """Each micro-kernel set this CPU runs; the best one is restored afterwards."""
    try:
        _cpp.set_gemm_isa(request.param)
    except ValueError as exc:
        pytest.skip(str(exc))
    yield request.param
    _cpp.set_gemm_isa("auto")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in CONV_PROBLEMS + FAST_PATHS])
def test_every_kernel_set_exact_on_small_integers(c, isa, dtype, rng):
    """Winograd runs as F(2x2) here (the larger tiles: test_winograd_larger_tiles_exact_on_small_integers)."""
    x, w, b, dy = _inputs(rng, c, small_ints, dtype)
    with _winograd_tile(2):
        got_all = _all_passes(c, x, w, b, dy, "cpp")
    for name, got, want in zip(NAMES, got_all, _all_passes(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name} with {isa} kernels, {np.dtype(dtype).name}")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD])
def test_winograd_problems_take_winograd(c):
    """The WINOGRAD problems reach it, forward and dgrad; stride 2, dilation, groups, few channels
    and few tiles do not."""
    p = _params(c)
    assert _cpp.conv2d_uses_winograd(p, "fwd", F32) and _cpp.conv2d_uses_winograd(p, "dgrad", F32), c.name


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in DW_LANES])
def test_dw_lanes_problems_take_the_lanes(c, isa):
    """The DW_LANES problems reach the lanes kernels in the passes named (fp32, either vector set),
    the other passes not; the portable build never."""
    passes = DW_LANES_PASSES.get(c.name, ("fwd", "dgrad", "wgrad"))
    for pass_ in ("fwd", "dgrad", "wgrad"):
        assert _cpp.conv2d_depthwise_uses_lanes(_params(c), pass_, F32) == (isa != "generic" and pass_ in passes), pass_


def test_dw_lanes_where_they_pay(isa):
    """MobileNetV2's depthwise layers (batch 32): strided ones and planes of up to 16 vectors take the
    lanes, larger stride-1 planes the plane kernels (16x16 with AVX-512 only); the wgrad up to 32x32."""
    if isa == "generic":
        pytest.skip("no lanes without a vector set")
    def uses(C, H, stride, pass_):
        c = Conv("mbv2", 32, C, H, H, C, 3, 3, stride=stride, padding=1, groups=C)
        return _cpp.conv2d_depthwise_uses_lanes(_params(c), pass_, F32)
    assert all(uses(C, H, 2, p) for C, H in ((144, 32), (576, 8)) for p in ("fwd", "wgrad"))
    assert uses(576, 8, 2, "dgrad") and not uses(144, 32, 2, "dgrad")  # dx 8x8 in lanes, 32x32 spread on planes
    assert all(uses(C, H, 1, p) for C, H in ((960, 4), (384, 8)) for p in ("fwd", "dgrad", "wgrad"))
    assert uses(192, 16, 1, "fwd") == (isa == "avx512") and uses(144, 32, 1, "wgrad") and not uses(144, 32, 1, "fwd")
    assert not uses(3, 8, 1, "fwd")  # fewer channels than lanes
    with pytest.raises(ValueError, match="depthwise_uses_lanes: pass must be"):
        _cpp.conv2d_depthwise_uses_lanes(_params(DW_LANES[0]), "bwd", F32)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD_WGRAD])
def test_winograd_wgrad_problems_take_winograd(c):
    assert _cpp.conv2d_uses_winograd(_params(c), "wgrad", F32), c.name


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD_F4 + WINOGRAD_F4_WGRAD])
def test_winograd_f4_problems_take_f4(c):
    """At precision "high", WINOGRAD_F4's forward and dgrad, WINOGRAD_F4_WGRAD's wgrad (129 input
    channels: a forward of F(2x2)); at the default "highest", never F(4x4): F(3x3) on the wide
    images, else F(2x2)."""
    assert _tiles(c)[:2] == ([3, 3] if c.C_in + c.C_out <= 256 and c.W >= 48 else [2, 2]), c.name
    assert _tiles(c)[2] != 4, c.name
    with float32_conv_precision("high"):
        tiles = _tiles(c)
    if c in WINOGRAD_F4_WGRAD:
        assert tiles[2] == 4, c.name
    else:
        assert tiles[:2] == [4, 4], c.name


@pytest.mark.parametrize("m", [3, 4])
@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD + WINOGRAD_WGRAD + WINOGRAD_F3 + WINOGRAD_F4_WGRAD])
def test_winograd_larger_tiles_exact_on_small_integers(c, m, dtype, rng):
    """F(3x3) and F(4x4) forced on every Winograd problem, each pass (rows and tables, clipped tiles,
    cropped planes, chunks, two depth blocks, wgrad), fp32 and fp64: their transforms are exact on
    small integers (dyadic points; G kept times 9 or 15, the results divided by 81 or 225 once), so
    they equal the reference."""
    x, w, b, dy = _inputs(rng, c, small_ints, dtype)
    with _winograd_tile(m):
        assert _cpp.conv2d_uses_winograd(_params(c), "fwd", np.dtype(dtype)) in (0, m)
        got_all = _all_passes(c, x, w, b, dy, "cpp")
    for name, got, want in zip(NAMES, got_all, _all_passes(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name}, F({m}x{m}), {np.dtype(dtype).name}")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD_F3])
def test_winograd_f3_problems_take_f3(c):
    """The chooser's tile at the default precision, forward and dgrad; wgrad stays direct (under
    128 channels). At precision "high" these layers take F(4x4)."""
    assert _tiles(c) == [3, 3, 0], c.name
    with float32_conv_precision("high"):
        assert _tiles(c) == [4, 4, 0], c.name


def test_winograd_f3_only_where_it_pays():
    """F(3x3) on wide images (46+ output columns, so that 16+ tiles of 3 run along the rows) of up to
    256 channels in and out together (at precision "high" F(4x4) takes most of these), fp32: not through
    the tables (45 columns), not at 128 -> 256 nor 512 (no faster than F(2x2)), not in fp64."""
    assert _tiles(Conv("ow_46", 2, 96, 20, 46, 96, 3, 3, padding=1))[:2] == [3, 3]
    assert _tiles(Conv("ow_45", 2, 96, 20, 45, 96, 3, 3, padding=1))[:2] == [2, 2]
    assert _tiles(Conv("in_64_out_65", 1, 64, 56, 56, 65, 3, 3, padding=1))[:2] == [3, 3]
    assert _tiles(Conv("in_128_out_128", 1, 128, 56, 56, 128, 3, 3, padding=1))[:2] == [3, 3]
    assert _tiles(Conv("in_128_out_256", 1, 128, 56, 56, 256, 3, 3, padding=1))[:2] == [2, 2]
    assert _tiles(Conv("in_512_out_512", 1, 512, 56, 56, 512, 3, 3, padding=1)) == [2, 2, 2]
    assert _cpp.conv2d_uses_winograd(_params(WINOGRAD_F3[0]), "fwd", F64) == 2


def _tiles(c):
    p = _params(c)
    return [_cpp.conv2d_uses_winograd(p, pass_, F32) for pass_ in ("fwd", "dgrad", "wgrad")]


def test_winograd_f4_only_where_it_pays():
    """F(4x4) only where it was measured faster than F(2x2) and its error stays well inside the
    tolerance: not on 512 channels at 7x7 (slower), nor where a forward sums over more than 128
    input channels (256 -> 128: its dgrad sums over 128) or wgrad over more than 1024 pixels (its
    error), nor in fp64; nor wgrad of 512 channels (its 128 tiles of 4x4 at 7x7 sum 1568 pixels).
    All at precision "high"; at the default, no F(4x4) (F(3x3) at 64 channels on 56x56)."""
    assert _tiles(Conv("c64_56", 1, 64, 56, 56, 64, 3, 3, padding=1)) == [3, 3, 0]
    assert _tiles(Conv("c65_28", 1, 65, 28, 28, 64, 3, 3, padding=1))[:2] == [2, 2]
    assert _tiles(Conv("wgrad_128", 1, 128, 28, 28, 128, 3, 3, padding=1)) == [2, 2, 2]
    with float32_conv_precision("high"):
        assert _tiles(Conv("c64_56", 1, 64, 56, 56, 64, 3, 3, padding=1)) == [4, 4, 0]
        assert _tiles(Conv("r50_512_7_b16", 16, 512, 7, 7, 512, 3, 3, padding=1)) == [2, 2, 2]
        assert _tiles(Conv("r50_512_7_b32", 32, 512, 7, 7, 512, 3, 3, padding=1)) == [2, 2, 2]
        assert _tiles(Conv("in_256_out_128", 1, 256, 28, 28, 128, 3, 3, padding=1)) == [2, 4, 4]
        assert _tiles(Conv("wgrad_12544_pixels", 16, 128, 28, 28, 128, 3, 3, padding=1)) == [4, 4, 2]
        assert _cpp.conv2d_uses_winograd(_params(WINOGRAD_F4[0]), "fwd", F64) == 2


def test_float32_conv_precision_switch():
    assert fastconv.get_float32_conv_precision() == "highest"
    with float32_conv_precision("high"):
        assert fastconv.get_float32_conv_precision() == "high"
    with pytest.raises(ValueError, match=r"set_float32_conv_precision: precision must be one of .* got 'medium'"):
        fastconv.set_float32_conv_precision("medium")
    with pytest.raises(TypeError, match="precision must be a str, got int"):
        fastconv.set_float32_conv_precision(1)
    assert fastconv.get_float32_conv_precision() == "highest"


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD_F4 + WINOGRAD_F4_WGRAD])
def test_winograd_f4_close_to_the_reference(c, rng):
    """F(4x4) in fp32 (precision "high") within the fp32 tolerance of the exact result (the
    reference in fp64), times F4_HIGH_SCALE, on random normal data."""
    x, w, b, dy = _inputs(rng, c, randn, np.float32)
    wide = [a.astype(np.float64) for a in (x, w, b, dy)]
    with float32_conv_precision("high"):
        got_all = _all_passes(c, x, w, b, dy, "cpp")
    for name, got, want in zip(NAMES, got_all, _all_passes(c, *wide, "reference")):
        assert_close(got, want.astype(np.float32), f"{c.name} {name}", scale=F4_HIGH_SCALE)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in WINOGRAD_F4[:2]])
def test_winograd_f4_forced_in_fp64(c, rng):
    """F(4x4) forced in fp64 (the chooser takes F(2x2) there; fp64 runs Winograd along rows only):
    its vectors of 4 lanes take a window row of 6 in two, within the fp64 tolerance."""
    x, w, b, dy = _inputs(rng, c, randn, np.float64)
    with _winograd_tile(4):
        assert _cpp.conv2d_uses_winograd(_params(c), "fwd", F64) == 4
        got_all = _all_passes(c, x, w, b, dy, "cpp")
    for name, got, want in zip(NAMES, got_all, _all_passes(c, x, w, b, dy, "reference")):
        assert_close(got, want, f"{c.name} {name}, F(4x4) in fp64")


def test_winograd_tile_hook(rng):
    """set_winograd_tile forces any tile, or none (1: the direct paths), wherever Winograd runs;
    the results agree with each other within the tolerance."""
    c = WINOGRAD_F4[2]
    x, w, b, dy = _inputs(rng, c, randn, np.float32)
    chooser = _cpp.conv2d_uses_winograd(_params(c), "fwd", F32)
    results = {}
    for m in (1, 2, 3, 4):
        with _winograd_tile(m):
            assert _cpp.conv2d_uses_winograd(_params(c), "fwd", F32) == (0 if m == 1 else m)
            results[m] = _all_passes(c, x, w, b, dy, "cpp")
    for m in (2, 3, 4):
        for name, got, want in zip(NAMES, results[m], results[1]):
            assert_close(got, want, f"F({m}x{m}) vs direct, {name}")
    assert _cpp.conv2d_uses_winograd(_params(c), "fwd", F32) == chooser == 2  # the chooser's again
    with pytest.raises(ValueError, match="got 5"):
        _cpp.set_winograd_tile(5)


# The Winograd tiles by name ("winograd2", "winograd3", "winograd4"; conv2d_algorithms lists those
# the float32 conv precision allows, "winograd" is the chooser's tile)
WINOGRAD_ALL = WINOGRAD + WINOGRAD_WGRAD + WINOGRAD_F3 + WINOGRAD_F4 + WINOGRAD_F4_WGRAD
WINOGRAD_PASSES = ("fwd", "dgrad", "wgrad")


def _tile_names(c, pass_name, dtype):
    return [a for a in _cpp.conv2d_algorithms(_params(c), pass_name, dtype) if a.startswith("winograd")]


def _one_pass(c, pass_name, algo, x, w, dy, nthreads=2):
    """One pass of c in the algorithm named, straight through the binding."""
    return cpp_conv.cpp_pass(pass_name, _params(c), algo, x, w, dy, nthreads)


def _named_tile_cases():
    # at precision "high", whose lists hold every tile "highest" allows and F(4x4) on more layers
    fastconv.set_float32_conv_precision("high")
    try:
        for dtype in (F32, F64):
            for c in WINOGRAD_ALL:
                for pass_name in WINOGRAD_PASSES:
                    for algo in _tile_names(c, pass_name, dtype):
                        yield pytest.param(c, pass_name, algo, dtype, id=f"{dtype.name}-{c.name}-{pass_name}-{algo}")
    finally:
        fastconv.set_float32_conv_precision("highest")


@pytest.mark.parametrize("c, pass_name, algo, dtype", list(_named_tile_cases()))
def test_winograd_tiles_by_name(c, pass_name, algo, dtype, rng):
    """Every tile a Winograd problem's lists offer, named: exact on small integers; on random data
    within the tolerance of the float64 reference, the same bits on 1 and 2 threads, and the same
    bits as that tile forced through the chooser (so the name runs its tile)."""
    m = int(algo[-1])
    with float32_conv_precision("high"):
        x, w, _, dy = _inputs(rng, c, small_ints, dtype)
        assert_equal(_one_pass(c, pass_name, algo, x, w, dy), reference_conv_pass(c.kwargs, pass_name, x, w, dy), f"{c.name} {algo}")
        x, w, _, dy = _inputs(rng, c, randn, dtype)
        one, two = (_one_pass(c, pass_name, algo, x, w, dy, nthreads) for nthreads in (1, 2))
        with _winograd_tile(m):
            forced = _one_pass(c, pass_name, "auto", x, w, dy)
    assert_equal(two, one, f"{c.name} {pass_name} {algo}: 1 vs 2 threads")
    assert_equal(forced, one, f"{c.name} {pass_name} {algo} vs F({m}x{m}) forced")
    want = reference_conv_pass(c.kwargs, pass_name, *(a.astype(np.float64) for a in (x, w, dy)))
    assert_close(one, want.astype(dtype), f"{c.name} {pass_name} {algo}", scale=F4_HIGH_SCALE if m == 4 else 1.0)


def test_winograd_tiles_offered_byfloat32_conv_precision():
    """The lists offer F(2x2) wherever Winograd serves a pass, and the larger tiles where their error
    rule holds (winograd.cpp: tile_allowed), not where the chooser's speed rules take them: F(3x3)
    summing up to 256 channels (fp32, at either precision: on narrow images, and at 128 -> 256,
    where the chooser takes F(2x2)), F(4x4) at precision "high" only, up to 128 summed (384 in and
    out together) and wgrad up to 1024 pixels (at 512 channels too, where the chooser keeps
    F(2x2)); fp64 F(2x2) only; no wgrad F(3x3)."""
    def lists(c, dtype=F32):
        return [[int(a[-1]) for a in _tile_names(c, pass_name, dtype)] for pass_name in WINOGRAD_PASSES]
    narrow_16 = Conv("narrow_16", 8, 16, 32, 32, 24, 3, 3, padding=1)  # 32x32: F(3x3) not the chooser's
    c128_256 = Conv("c128_256", 1, 128, 56, 56, 256, 3, 3, padding=1)
    c512_7 = Conv("c512_7_b16", 16, 512, 7, 7, 512, 3, 3, padding=1)  # 784 pixels
    c256_128 = Conv("c256_128", 1, 256, 28, 28, 128, 3, 3, padding=1)
    c300_64 = WINOGRAD[5]  # winograd_two_depth_blocks: 300 -> 64
    assert lists(narrow_16) == [[2, 3], [2, 3], []]
    assert _tiles(narrow_16)[:2] == [2, 2]
    assert lists(c128_256) == [[2, 3], [2, 3], [2]] and _tiles(c128_256) == [2, 2, 2]
    assert lists(c512_7) == [[2], [2], [2]]
    assert lists(c256_128) == [[2, 3], [2, 3], [2]]
    assert lists(c300_64) == [[2], [2, 3], []]
    assert lists(WINOGRAD[0], F64) == [[2], [2], []] and lists(WINOGRAD[1], F64) == [[], [], []]
    with float32_conv_precision("high"):
        assert lists(narrow_16) == [[2, 3, 4], [2, 3, 4], []] and _tiles(narrow_16)[:2] == [4, 4]
        assert lists(c128_256) == [[2, 3, 4], [2, 3], [2]] and _tiles(c128_256) == [4, 2, 2]
        assert lists(c512_7) == [[2], [2], [2, 4]] and _tiles(c512_7) == [2, 2, 2]
        assert lists(c256_128) == [[2, 3], [2, 3, 4], [2, 4]]
        assert lists(Conv("wgrad_12544_pixels", 16, 128, 28, 28, 128, 3, 3, padding=1))[2] == [2]
        assert lists(c300_64) == [[2], [2, 3, 4], []]  # its dgrad sums 64 channels, 364 in and out
        assert lists(WINOGRAD[0], F64) == [[2], [2], []]


def test_the_chooser_takes_an_offered_tile():
    """Whatever the chooser takes, every pass, at both precisions, is a tile the lists offer (so
    autotune's candidates cover the heuristics' Winograd, and neither runs a tile the precision
    forbids); "winograd" names the chooser's tile, bit for bit, and applies only where it takes one."""
    layers = WINOGRAD_ALL + [Conv(s.name, s.N, s.C_in, s.H, s.W, s.C_out, s.KH, s.KW, stride=s.stride,
                                  padding=s.padding, dilation=s.dilation, groups=s.groups)
                             for s in load_suite().shapes if s.kind == "conv"]
    for precision in ("highest", "high"):
        with float32_conv_precision(precision):
            for c in layers:
                for pass_name, m in zip(WINOGRAD_PASSES, _tiles(c)):
                    offered = _tile_names(c, pass_name, F32)
                    assert (f"winograd{m}" in offered) if m else not offered, (precision, c.name, pass_name, m)
    c = WINOGRAD_F4[0]  # F(4x4) at precision "high", F(3x3) at the default
    rng = np.random.default_rng(0)
    x, w, _, dy = _inputs(rng, c, randn, np.float32)
    for precision, m in (("highest", 3), ("high", 4)):
        with float32_conv_precision(precision):
            for pass_name in ("fwd", "dgrad"):
                assert_equal(_one_pass(c, pass_name, "winograd", x, w, dy), _one_pass(c, pass_name, f"winograd{m}", x, w, dy),
                             (precision, pass_name))
    with pytest.raises(ValueError, match="conv2d wgrad: algorithm 'winograd' does not apply"):
        _one_pass(c, "wgrad", "winograd", x, w, dy)


def test_a_tile_not_offered_is_a_value_error(rng):
    """A tile named where the precision (or the dtype, or the pass) does not allow it, on a layer
    Winograd does not serve, or a tile that does not exist: ValueError naming the pass and the name,
    and listing what applies."""
    c = WINOGRAD_WGRAD[0]  # 128 -> 130: F(4x4) at precision "high" only
    for dtype in (np.float32, np.float64):
        x, w, _, dy = _inputs(rng, c, randn, dtype)
        with pytest.raises(ValueError, match=r"conv2d fwd: algorithm 'winograd4' does not apply .*'winograd2'"):
            _one_pass(c, "fwd", "winograd4", x, w, dy)
    with pytest.raises(ValueError, match=r"conv2d fwd: algorithm 'winograd3' does not apply .*'winograd2', 'gemm', 'winograd' or 'auto'"):
        _one_pass(c, "fwd", "winograd3", x, w, dy)  # fp64 here
    x, w, _, dy = _inputs(rng, c, randn, np.float32)
    with pytest.raises(ValueError, match="conv2d wgrad: algorithm 'winograd3' does not apply"):
        _one_pass(c, "wgrad", "winograd3", x, w, dy)
    with pytest.raises(ValueError, match="conv2d wgrad: algorithm 'winograd4' does not apply"):
        _one_pass(c, "wgrad", "winograd4", x, w, dy)
    with pytest.raises(ValueError, match="conv2d dgrad: algorithm 'winograd5' does not apply"):
        _one_pass(c, "dgrad", "winograd5", x, w, dy)
    strided = Conv("strided", 2, 64, 20, 20, 64, 3, 3, stride=2, padding=1)
    x, w, _, dy = _inputs(rng, strided, randn, np.float32)
    for pass_name in WINOGRAD_PASSES:
        with pytest.raises(ValueError, match=f"conv2d {pass_name}: algorithm 'winograd2' does not apply"):
            _one_pass(strided, pass_name, "winograd2", x, w, dy)


def _dot_kernel_or_skip():
    if _cpp.gemm_isa() != "avx512":
        pytest.skip(f"the dot kernel is AVX-512 only; this CPU runs {_cpp.gemm_isa()}")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in DOT_WGRAD])
def test_dot_wgrad_problems_take_it(c):
    _dot_kernel_or_skip()
    assert _cpp.conv2d_wgrad_uses_dot(_params(c)), c.name


def test_dot_wgrad_only_with_the_avx512_kernels(isa):
    assert _cpp.conv2d_wgrad_uses_dot(_params(DOT_WGRAD[0])) == (isa == "avx512"), isa


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in CHAN_WGRAD])
def test_chan_wgrad_problems_take_it(c, isa):
    """With the AVX-512 and AVX2 kernels, first of the list (it never declines: the heuristics take it)."""
    algos = _cpp.conv2d_algorithms(_params(c), "wgrad", F32)
    if isa == "generic":
        assert "chan" not in algos, c.name
    else:
        assert algos[0] == "chan", (c.name, isa, algos)
    assert "chan" not in _cpp.conv2d_algorithms(_params(c), "wgrad", F64), c.name


@pytest.mark.parametrize("c", [
    Conv("channels_not_whole_vectors", 2, 20, 9, 9, 16, 3, 3, padding=1),
    Conv("many_input_channels", 2, 128, 9, 9, 16, 3, 3, padding=1),
    Conv("pointwise", 2, 64, 9, 9, 16, 1, 1),
    Conv("five_rows", 2, 16, 9, 9, 16, 5, 5, padding=2),  # 5 (kh, channel block) pairs, calls take 3
    Conv("few_output_channels", 2, 16, 9, 9, 3, 3, 3, padding=1),  # under the kernel's rows (8 / 4)
    Conv("image_over_the_bound", 1, 16, 300, 300, 16, 3, 3, padding=1),  # a 5.8 MB copy
], ids=lambda c: c.name)
def test_chan_wgrad_leaves_other_layers(c):
    assert "chan" not in _cpp.conv2d_algorithms(_params(c), "wgrad", F32), c.name


@pytest.mark.parametrize("c", [
    Conv("many_output_channels", 2, 16, 9, 9, 17, 3, 3, padding=1),
    Conv("few_taps", 2, 2, 9, 9, 8, 5, 5),  # 50 taps x channels: the copies do not pay
    Conv("pointwise", 2, 128, 9, 9, 8, 1, 1),  # 81 pixels
    Conv("pointwise_image_over_l2", 2, 128, 32, 32, 96, 1, 1),  # x's and dy's rows 896 KiB an image
    Conv("pointwise_ragged_rows", 2, 16, 33, 33, 16, 1, 1),  # 1089 pixels, not whole vectors
    Conv("small_image", 2, 16, 12, 13, 16, 3, 3, padding=1),  # 156 output pixels
], ids=lambda c: c.name)
def test_dot_wgrad_leaves_other_layers(c):
    assert not _cpp.conv2d_wgrad_uses_dot(_params(c)), c.name


def test_winograd_at_16_channels_each_way_except_with_the_avx512_kernels(isa):
    """16 -> 16 layers take Winograd with the AVX2 and generic kernels; with the AVX-512 ones (twice
    the GEMM's flops per cycle) the direct path was faster, so they need more than 32 channels in and
    out together there (16 -> 24 still takes it)."""
    c16, c24 = Conv("c16", 8, 16, 32, 32, 16, 3, 3, padding=1), Conv("c16_24", 8, 16, 32, 32, 24, 3, 3, padding=1)
    assert _tiles(c16)[:2] == ([0, 0] if isa == "avx512" else [2, 2]), isa
    assert _tiles(c24)[:2] == [2, 2], isa


def test_winograd_in_fp64_only_along_rows_and_not_for_wgrad():
    """fp64 takes Winograd for wide images' forward and dgrad only (measured slower elsewhere)."""
    rows, tables = _params(WINOGRAD[0]), _params(WINOGRAD[1])
    assert _cpp.conv2d_uses_winograd(rows, "fwd", F64) and _cpp.conv2d_uses_winograd(rows, "dgrad", F64)
    assert not _cpp.conv2d_uses_winograd(tables, "fwd", F64) and _cpp.conv2d_uses_winograd(tables, "fwd", F32)
    assert not any(_cpp.conv2d_uses_winograd(_params(c), "wgrad", F64) for c in WINOGRAD_WGRAD)


@pytest.mark.parametrize("c", [
    Conv("strided", 2, 64, 20, 20, 64, 3, 3, stride=2, padding=1),
    Conv("dilated", 2, 64, 20, 20, 64, 3, 3, padding=2, dilation=2),
    Conv("grouped", 2, 128, 20, 20, 128, 3, 3, padding=1, groups=2),
    Conv("few_channels", 2, 8, 20, 20, 64, 3, 3, padding=1),
    Conv("little_work", 2, 32, 20, 20, 32, 3, 3, padding=1),  # 200 tiles x 32 x 32 < 2^19
    Conv("few_tiles", 1, 512, 7, 7, 512, 3, 3, padding=1),
    Conv("five_by_five", 2, 64, 20, 20, 64, 5, 5, padding=2),
], ids=lambda c: c.name)
def test_winograd_leaves_other_layers_to_gemm(c):
    assert not any(_cpp.conv2d_uses_winograd(_params(c), pass_, F32) for pass_ in ("fwd", "dgrad", "wgrad")), c.name


@pytest.mark.parametrize("c", [Conv("flat", 2, 3, 9, 11, 4, 3, 3, padding=1),
                               Conv("dot", 2, 8, 17, 11, 4, 3, 3, padding=1)], ids=lambda c: c.name)
def test_wgrad_non_finite_x_as_the_reference(c, rng):
    """The dot path pairs its junk columns (dy = 0) with real pixels, so an Inf or NaN in x would
    leak into taps that never see it: such an x takes the flat path, which reads only the pixels
    each tap meets. Both give the reference's result, NaN for NaN. Tap kw=0 never reads the last
    column at a valid pixel."""
    if c.name == "dot":
        _dot_kernel_or_skip()
    assert _cpp.conv2d_wgrad_uses_dot(_params(c)) == (c.name == "dot")
    x, w, b, dy = _inputs(rng, c, small_ints, np.float32)
    x[0, 1, 4, -1], x[1, 2, 0, 5] = np.inf, np.nan
    with np.errstate(invalid="ignore"):  # the reference's matmul meets inf * 0
        got, want = (fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(False, True, False), backend=name)[1]
                     for name in ("cpp", "reference"))
    assert np.isfinite(want[:, 1, :, 0]).all()
    assert_equal(got, want, "dw with Inf and NaN in x")


def _reduction_scale(c, y_shape):
    """TOLERANCE scaled for each pass's reduction length (terms summed into one element): the table
    holds up to 4096 terms, and rounding errors on random-sign data grow as the square root of the
    length. dot_wgrad_rounds sums 40960 products into each dw element, with errors of 1e-4 on
    elements near 0 beside others of several hundred, on both sides (cpp and reference, fp32)."""
    P = y_shape[2] * y_shape[3]
    terms = dict(y=c.C_in // c.groups * c.KH * c.KW, dx=c.C_out // c.groups * c.KH * c.KW, dw=c.N * P, db=c.N * P)
    return {name: max(1.0, (t / 4096) ** 0.5) for name, t in terms.items()}


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in FAST_PATHS])
def test_fast_paths_close_on_random_data(c, dtype, rng):
    """Against the exact result (the reference in fp64, rounded to dtype): an fp32 reference is off
    by up to 0.25 of the tolerance itself on these problems, which Winograd F(4x4)'s error (up to
    0.75 of it on winograd_f4_wgrad_tables_chunks' wgrad) would then meet."""
    x, w, b, dy = _inputs(rng, c, randn, dtype)
    scale = _reduction_scale(c, dy.shape)
    wide = [a.astype(np.float64) for a in (x, w, b, dy)]
    for name, got, want in zip(NAMES, _all_passes(c, x, w, b, dy, "cpp"), _all_passes(c, *wide, "reference")):
        assert_close(got, want.astype(dtype), f"{c.name} {name}", scale=scale[name])


# col2im (conv_col2im.cpp), tap by tap and phased (16 output columns and more, several taps a
# phase): strides of 2 and more (and 1, where it is named), kernels wider and narrower than the
# stride, dilation, paddings that put whole runs or taps outside the row, rows of odd and even
# width, images narrower than a chunk or wider
COL2IM = [
    Conv("col2im_3x3_s2", 2, 5, 9, 10, 6, 3, 3, stride=2, padding=1),
    Conv("col2im_3x3_s2_phased", 2, 5, 7, 33, 6, 3, 3, stride=2, padding=1),
    Conv("col2im_7x7_s2", 1, 3, 23, 21, 4, 7, 7, stride=2, padding=3),
    Conv("col2im_7x7_s2_phased", 1, 3, 9, 37, 4, 7, 7, stride=2, padding=3),
    Conv("col2im_5_s3_phased", 2, 3, 6, 50, 4, 2, 5, stride=3, padding=1),
    Conv("col2im_s2_dilated_phased", 1, 3, 7, 40, 4, 3, 3, stride=2, padding=2, dilation=2),
    Conv("col2im_1x1_s2", 2, 6, 7, 8, 3, 1, 1, stride=2),
    Conv("col2im_s3_dilated", 2, 3, 17, 19, 5, 3, 5, stride=3, padding=(1, 4), dilation=(2, 2)),
    Conv("col2im_kernel_narrower_than_stride", 1, 4, 13, 17, 3, 2, 2, stride=4, padding=(0, 1)),
    Conv("col2im_rows_s1_cols_s2", 2, 3, 8, 41, 5, 3, 4, stride=(1, 2), padding=(1, 2)),
    Conv("col2im_rows_s2_cols_s1", 2, 3, 11, 6, 5, 4, 3, stride=(2, 1), padding=(2, 1)),
    Conv("col2im_wide_padding", 1, 2, 5, 6, 3, 3, 3, stride=2, padding=3),
    Conv("col2im_dilated_s1", 2, 4, 12, 13, 6, 3, 3, padding=2, dilation=2),
    # 4x4 outputs: blocks of 6 images (their dy side by side), the last one ragged, channel ranges
    Conv("col2im_blocks_of_images", 7, 64, 8, 8, 32, 3, 3, stride=2, padding=1),
    Conv("col2im_blocks_phased", 5, 16, 4, 40, 8, 3, 3, stride=2, padding=1),
]


def _strided_dgrad_cases():
    for c in COL2IM + SUBPIXEL:
        for algo in ("col2im", "subpixel"):
            if algo in _cpp.conv2d_algorithms(_params(c), "dgrad", F32):
                yield pytest.param(c, algo, id=f"{c.name}-{algo}")


@pytest.mark.parametrize("c, algo", list(_strided_dgrad_cases()))
def test_strided_dgrad_as_the_reference(c, algo, dtype, rng):
    """Each strided dgrad algorithm (col2im also at stride 1, dilated): exact on small integers; on
    random data within the tolerance of the float64 reference and the same bits on 1 and 2 threads."""
    x, w, _, dy = _inputs(rng, c, small_ints, dtype)
    want = reference_conv_pass(c.kwargs, "dgrad", x, w, dy)
    assert_equal(_one_pass(c, "dgrad", algo, x, w, dy), want, c.name)
    x, w, _, dy = _inputs(rng, c, randn, dtype)
    one, two = (_one_pass(c, "dgrad", algo, x, w, dy, nthreads) for nthreads in (1, 2))
    assert_equal(two, one, f"{c.name}: 1 vs 2 threads")
    want = reference_conv_pass(c.kwargs, "dgrad", *(a.astype(np.float64) for a in (x, w, dy)))
    assert_close(one, want.astype(dtype), c.name)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in SUBPIXEL + [
    c for c in COL2IM if c.name in ("col2im_3x3_s2", "col2im_kernel_narrower_than_stride")]])
def test_subpixel_every_kernel_set_exact_on_small_integers(c, isa, dtype, rng):
    x, w, _, dy = _inputs(rng, c, small_ints, dtype)
    assert_equal(_one_pass(c, "dgrad", "subpixel", x, w, dy), reference_conv_pass(c.kwargs, "dgrad", x, w, dy),
                 f"{c.name} with {isa} kernels")


def test_subpixel_where_it_pays(isa):
    """The heuristics take it with the AVX-512 kernels only, on phases of many pixels x input
    channels, every phase with taps (see subpixel_pays)."""
    for c in [Conv("resnet50_3x3s2", 1, 128, 56, 56, 128, 3, 3, stride=2, padding=1), SUBPIXEL[3]]:
        assert _cpp.conv2d_dgrad_uses_subpixel(_params(c)) == (isa == "avx512"), (c.name, isa)
    for c in (Conv("small_images", 32, 128, 16, 16, 256, 3, 3, stride=2, padding=1),
              Conv("few_channels", 4, 32, 112, 112, 64, 3, 3, stride=2, padding=1),
              Conv("pointwise_s2", 16, 256, 56, 56, 512, 1, 1, stride=2),
              Conv("dilated", 1, 128, 56, 56, 128, 3, 3, stride=2, padding=2, dilation=2),
              Conv("stride_1", 1, 128, 56, 56, 128, 3, 3, padding=1)):
        assert not _cpp.conv2d_dgrad_uses_subpixel(_params(c)), c.name
    # its buffer holds one image's dx at least: not offered past the chunk bound (a 46 MB image)
    big = Conv("image_over_the_bound", 1, 128, 300, 300, 128, 3, 3, stride=2, padding=1)
    assert not _cpp.conv2d_dgrad_uses_subpixel(_params(big))
    assert _cpp.conv2d_algorithms(_params(big), "dgrad", F32) == ("col2im",)


def test_linear_every_kernel_set(isa, dtype, rng):
    """Shapes that leave ragged panels and depth blocks (the packs' vector blocks and their tails)."""
    x, w, b = small_ints(rng, (37, 29), dtype), small_ints(rng, (19, 29), dtype), small_ints(rng, (19,), dtype)
    dy = small_ints(rng, (37, 19), dtype)
    assert_equal(fastconv.linear(x, w, b, backend="cpp"), fastconv.linear(x, w, b, backend="reference"))
    got = fastconv.linear_backward(dy, x, w, backend="cpp")
    for g, r in zip(got, fastconv.linear_backward(dy, x, w, backend="reference")):
        assert_equal(g, r)


def test_isa_report_and_bad_name():
    assert _cpp.gemm_isa() in ("avx512", "avx2", "generic")
    with pytest.raises(ValueError, match="not available"):
        _cpp.set_gemm_isa("sse9")


@pytest.fixture
def threads_at_any_size(monkeypatch):
    """Tiny passes run on the thread count in force too (not on one thread, as by default), so that
    the thread-count tests below reach the threaded kernels on their small problems."""
    monkeypatch.setattr(cpp_util, "SERIAL_FLOPS", 0)


def test_tiny_passes_run_on_one_thread(monkeypatch, rng):
    """Below SERIAL_FLOPS a conv or dense pass gets one thread whatever the count in force (a team
    of two costs more than it gives there); at and above it, the count in force."""
    seen = []
    for name in ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "linear_forward"):
        real = getattr(_cpp, name)
        # the conv passes end with (nthreads, algorithm), linear with nthreads
        monkeypatch.setattr(_cpp, name, lambda *a, _real=real: seen.append(a[-2] if isinstance(a[-1], str) else a[-1])
                            or _real(*a))
    tiny = randn(rng, (1, 3, 8, 8), np.float32), randn(rng, (4, 3, 3, 3), np.float32)
    large = randn(rng, (2, 16, 16, 16), np.float32), randn(rng, (16, 16, 3, 3), np.float32)
    assert 2 * 16 * 16 * 16 * 16 * 16 * 9 >= cpp_util.SERIAL_FLOPS > 2 * 4 * 36 * 27
    with num_threads(2):
        for x, w in (tiny, large):
            y = fastconv.conv2d(x, w, backend="cpp")
            fastconv.conv2d_backward(y, x, w, needs=(True, True, False), backend="cpp")
        fastconv.linear(tiny[0].reshape(3, 64), randn(rng, (5, 64), np.float32), backend="cpp")
    assert seen == [1, 1, 1, 2, 2, 2, 1]


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in FAST_PATHS + [CONV_PROBLEMS[5]]])
def test_results_identical_for_1_and_2_threads(c, rng, threads_at_any_size):
    """wgrad splits its batch reduction by the shape alone, so dw is bit-identical on any number of
    threads; the other passes never split a reduction at all."""
    x, w, b, dy = _inputs(rng, c, randn, np.float32)
    with num_threads(1):
        one = _all_passes(c, x, w, b, dy, "cpp")
    with num_threads(2):
        two = _all_passes(c, x, w, b, dy, "cpp")
    with num_threads(3):  # more threads than cores, and an odd count
        three = _all_passes(c, x, w, b, dy, "cpp")
    for name, a, b2, b3 in zip(NAMES, one, two, three):
        assert_equal(a, b2, f"{c.name} {name}: 1 vs 2 threads")
        assert_equal(a, b3, f"{c.name} {name}: 1 vs 3 threads")


def test_concurrent_calls_from_python_threads(rng):
    """Several Python threads calling the backend at once (each call with its own OpenMP team and
    workspace) all get the right answers."""
    cases = []
    for i in range(6):
        c = FAST_PATHS[i % len(FAST_PATHS)]
        x, w, b, dy = _inputs(rng, c, randn, np.float64)
        cases.append((c, x, w, b, dy, _all_passes(c, x, w, b, dy, "reference")))
    errors = []

    def work(case):
        c, x, w, b, dy, want = case
        try:
            for _ in range(5):
                for name, got, ref in zip(NAMES, _all_passes(c, x, w, b, dy, "cpp"), want):
                    assert_close(got, ref, f"{c.name} {name} (concurrent)")
        except Exception as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(case,)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_gil_released_during_a_long_conv(rng):
    """While one thread runs a long convolution, another Python thread keeps running."""
    x = randn(rng, (1, 64, 112, 112), np.float32)
    w = randn(rng, (64, 64, 3, 3), np.float32)
    with num_threads(1):
        start = time.perf_counter()
        fastconv.conv2d(x, w, padding=1, backend="cpp")
        single = time.perf_counter() - start
        done = threading.Event()
        ticks = 0

        def conv():
            for _ in range(max(1, int(0.3 / max(single, 1e-3)))):
                fastconv.conv2d(x, w, padding=1, backend="cpp")
            done.set()

        worker = threading.Thread(target=conv)
        worker.start()
        while not done.is_set():
            ticks += 1
        worker.join()
    # holding the GIL for the whole call would leave this loop a handful of iterations per call
    assert ticks > 10_000, f"the main thread ran only {ticks} iterations while the conv ran"


def _workspace_peaks(rng, base):
    """The peak workspace of each pass of `base` at batch 32 and 64, on one thread (so that the
    number of per-thread workspaces in use is the same for every batch size)."""
    peaks = {}
    for N in (32, 64):
        c = Conv(**{**base.__dict__, "N": N})
        x, w, b, dy = _inputs(rng, c, randn, np.float32)
        for name, needs in (("fwd", None), ("dgrad", (True, False, False)), ("wgrad", (False, True, False))):
            with num_threads(1):
                _cpp.workspace_reset_peak()
                if needs is None:
                    fastconv.conv2d(x, w, b, **c.kwargs, backend="cpp")
                else:
                    fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=needs, backend="cpp")
                peaks[name, N] = _cpp.workspace_peak_bytes()
    return peaks


@contextlib.contextmanager
def _workspace_cache(nbytes):
    old = _cpp.workspace_cache_bytes()
    _cpp.set_workspace_cache_bytes(nbytes)
    try:
        yield
    finally:
        _cpp.set_workspace_cache_bytes(old)


def test_workspace_cache_keeps_blocks_within_its_bound(rng):
    """Freed workspace blocks (256 KiB and larger) are kept for the next call up to the bound;
    lowering the bound frees what is over it, 0 all of them; the results do not depend on it (the
    blocks are uninitialised either way: a kept block holds the last call's data)."""
    c = Conv("cache", 8, 64, 20, 18, 72, 3, 3, padding=1)  # Winograd: U, planes and blocks of 256 KiB+
    x, w, b, dy = _inputs(rng, c, randn, np.float32)
    with _workspace_cache(0):
        assert _cpp.workspace_cached_bytes() == 0
        y0 = fastconv.conv2d(x, w, b, **c.kwargs, backend="cpp")
        g0 = fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend="cpp")
        assert _cpp.workspace_cached_bytes() == 0
    with _workspace_cache(64 << 20):
        for _ in range(3):  # the later calls run on the blocks the first ones left
            assert_equal(fastconv.conv2d(x, w, b, **c.kwargs, backend="cpp"), y0)
            for got, want in zip(fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend="cpp"), g0):
                assert_equal(got, want)
            kept = _cpp.workspace_cached_bytes()
            assert (256 << 10) <= kept <= 64 << 20
        _cpp.set_workspace_cache_bytes(300 << 10)  # lowering the bound frees what is over it
        assert _cpp.workspace_cached_bytes() <= 300 << 10
        assert _cpp.workspace_cache_bytes() == 300 << 10
    with pytest.raises(ValueError, match="set_workspace_cache_bytes: bytes must be >= 0.*got -1"):
        _cpp.set_workspace_cache_bytes(-1)


def test_outputs_come_from_kept_blocks_and_go_back_when_freed():
    """_cpp.empty, the C++ backend's output arrays: one of 256 KiB or more lives in a workspace
    block, given back to the kept blocks when the array is freed, so the next output of that size
    takes the same memory (no page faults); smaller ones are NumPy's own. Either way a writable,
    C-contiguous, 64-byte aligned array of the shape and dtype asked for."""
    with _workspace_cache(64 << 20):
        for dtype in (np.float32, np.dtype(np.float64), "float32"):
            _cpp.set_workspace_cache_bytes(0)  # start with no kept block
            _cpp.set_workspace_cache_bytes(64 << 20)
            a = _cpp.empty((3, 256, 128), dtype)
            assert a.shape == (3, 256, 128) and a.dtype == np.dtype(dtype)
            assert a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % 64 == 0
            assert not a.flags.owndata  # the block's capsule owns the memory
            a[...] = 7
            address, nbytes = a.ctypes.data, a.nbytes
            del a  # the block goes back ...
            assert _cpp.workspace_cached_bytes() >= nbytes
            b = _cpp.empty((3, 256, 128), dtype)  # ... and the next output of that size takes it
            assert b.ctypes.data == address and _cpp.workspace_cached_bytes() == 0
            b[...] = 1
            assert b.sum() == b.size
            del b
        small = _cpp.empty((2, 3), np.float32)
        assert small.shape == (2, 3) and small.flags.owndata
        assert _cpp.empty((), np.float64).shape == () and _cpp.empty((0, 5), np.float32).size == 0
    with _workspace_cache(0):  # nothing kept: the block is freed with the array
        a = _cpp.empty((1 << 20,), np.float32)
        a[:] = 0
        del a
        assert _cpp.workspace_cached_bytes() == 0
    with pytest.raises(ValueError, match="empty: negative dimension -2"):
        _cpp.empty((3, -2), np.float32)
    with pytest.raises(ValueError):  # NumPy's error for a size past what it can count
        _cpp.empty((1 << 40, 1 << 40), np.float32)


def test_kept_blocks_go_back_to_the_thread_that_freed_them():
    """Among kept blocks of one size a thread takes one it freed itself (its lines are in its core's
    caches), whatever the order they were freed in."""
    shape, freed, taken = (1 << 18,), {}, {}
    turn = {name: threading.Event() for name in ("a_free", "b_free", "b_take", "a_take", "done")}

    def worker(me, free_after, free_then, take_after, take_then):
        block = _cpp.empty(shape, np.float32)
        block[:] = 0
        freed[me] = block.ctypes.data
        turn[free_after].wait(10)
        del block
        turn[free_then].set()
        turn[take_after].wait(10)
        again = _cpp.empty(shape, np.float32)
        taken[me] = again.ctypes.data
        turn[take_then].set()
        turn["done"].wait(10)

    with _workspace_cache(64 << 20):
        _cpp.set_workspace_cache_bytes(0)
        _cpp.set_workspace_cache_bytes(64 << 20)
        # a frees first, b second; then b takes first: the first-freed block would be a's
        threads = [threading.Thread(target=worker, args=("a", "a_free", "b_free", "a_take", "done")),
                   threading.Thread(target=worker, args=("b", "b_free", "b_take", "b_take", "a_take"))]
        for t in threads:
            t.start()
        while len(freed) < 2:
            time.sleep(0.001)
        turn["a_free"].set()
        for t in threads:
            t.join(20)
    assert freed["a"] != freed["b"] and taken == freed


def test_workspace_bounded_independent_of_batch(rng):
    """No im2col buffer for a whole image or batch: the peak workspace of forward and dgrad stops
    growing with the batch once a chunk of padded input copies (at most 4 MiB: 20 images of this
    layer's input, 27 of its dy) is full; wgrad adds at most 8 copies of dw (its reduction slices)."""
    base = Conv("ws", 1, 32, 40, 36, 24, 3, 3, padding=1)
    cols_per_image = base.C_in * base.KH * base.KW * base.H * base.W * 4
    dw_bytes = 4 * int(np.prod(base.w_shape))
    peaks = _workspace_peaks(rng, base)
    # the flat chunk, one packed B block and one staged unit of C (1 thread)
    assert peaks["fwd", 32] == peaks["fwd", 64] <= (4 << 20) + 4 * 256 * 512 + (256 << 10)
    assert peaks["dgrad", 32] == peaks["dgrad", 64]
    assert peaks["wgrad", 64] <= peaks["wgrad", 32] + 8 * dw_bytes
    for (name, N), peak in peaks.items():
        assert 0 < peak < N * cols_per_image, f"{name} N={N}: {peak} bytes of workspace"


@pytest.mark.parametrize("where, passes, c", [("x", ("y", "dx"), WINOGRAD[2]), ("w", ("y", "dx"), WINOGRAD[2]),
                                             ("x", ("dw",), WINOGRAD_WGRAD[1])], ids=["x", "w", "x_wgrad"])
def test_winograd_non_finite_as_the_reference(where, passes, c, rng):
    """Winograd mixes a window's pixels (and a filter's taps) before multiplying, so an Inf or NaN
    would turn outputs NaN that the direct sum leaves finite; such inputs take the direct path
    (and a non-finite w, for dgrad, col2im: see the next test)."""
    x, w, b, dy = _inputs(rng, c, small_ints, np.float32)
    for a in ((x, dy) if where == "x" else (w,)):
        a.flat[7], a.flat[-40], a.flat[a.size // 2] = np.inf, np.nan, -np.inf
    with np.errstate(invalid="ignore"):  # the reference's matmul meets inf * 0
        for name, got, want in zip(NAMES, _all_passes(c, x, w, b, dy, "cpp"), _all_passes(c, x, w, b, dy, "reference")):
            if name in passes:
                assert np.isfinite(want).any() and not np.isfinite(want).all(), name
                assert_equal(got, want, f"{name} with Inf and NaN in {where}")


@pytest.mark.parametrize("c", [
    Conv("gemm_w_smaller", 3, 4, 9, 7, 5, 5, 5, padding=2),
    Conv("gemm_dx_smaller", 1, 64, 3, 3, 64, 3, 3, padding=1),  # dx checked after, then w
    Conv("depthwise", 2, 3, 6, 7, 3, 3, 3, padding=1, groups=3),
    Conv("depthwise_strided_spread", 2, 3, 9, 8, 3, 3, 3, stride=2, padding=1, groups=3),
    DW_LANES[0],  # the spread dgrad in lanes
    SUBPIXEL[3],  # the heuristics' sub-pixel dgrad with the AVX-512 kernels
], ids=lambda c: c.name)
def test_stride1_dgrad_non_finite_w_as_the_reference(c, rng):
    """Stride-1 dgrad runs as a forward of dy, which multiplies dy's zero padding by every tap:
    0 * Inf = NaN at border pixels that the sum over real outputs (the reference's, PyTorch's)
    leaves finite. A non-finite w takes col2im (GEMM) or the scattering loops (depthwise). So does
    a strided depthwise dgrad, whose forward of dy spread on the stride's lattice multiplies the
    zeros between dy's pixels too, and the sub-pixel dgrad, whose phases pad dy."""
    x, w, b, dy = _inputs(rng, c, small_ints, np.float32)
    w[0, 0, 0, 0], w[-1, -1, -1, -1] = np.inf, np.nan
    with np.errstate(invalid="ignore"):  # the reference's matmul meets inf * 0
        got, want = (fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(True, False, False), backend=name)[0]
                     for name in ("cpp", "reference"))
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    assert_equal(got, want, "dx with Inf and NaN in w")


@pytest.mark.parametrize("m, bound_mib", [(2, 10), (3, 13), (4, 12)], ids=["F2", "F3", "F4"])
def test_winograd_workspace_bounded_independent_of_batch(m, bound_mib, rng):
    """Winograd's workspace stops growing with the batch, every pass, every tile (a x a = 16, 25 or
    36 transformed elements): the transformed weight (or wgrad's sums, a*a x C_in x C_out: 1, 1.6 or
    2.25 MiB here, twice for the two halves of F(2x2) and F(3x3)), one chunk of padded planes (at
    most 4 MiB) and one block's transforms (forward: two column panels, with AVX-512's 8x48 kernel
    F(2x2) 1.5, F(3x3) 2.3, F(4x4) 3.4 MiB, half that with AVX2's 6x16; wgrad: 2 MiB a half, or 128
    tiles, 4.5 MiB for F(4x4)). Measured, forward/wgrad peaks in MiB, AVX-512 (Zen 5): 6.2/9.6,
    10.5/12.9, 9.4/10.3; AVX2: 5.2/9.6, 9.0/12.9, 7.2/10.3."""
    c = Conv("ws_winograd", 1, 128, 20, 36, 128, 3, 3, padding=1)
    with _winograd_tile(m):
        assert all(_cpp.conv2d_uses_winograd(_params(c), pass_, F32) == m for pass_ in ("fwd", "dgrad", "wgrad"))
        peaks = _workspace_peaks(rng, c)
    for name in ("fwd", "dgrad", "wgrad"):
        assert peaks[name, 32] == peaks[name, 64] <= bound_mib << 20, peaks


# Bands of output rows (csrc/conv_flat.cpp, conv_gemm_wgrad.cpp): an image whose flat copy (with, for
# wgrad, its packed dy^T) is over the chunk bound (4 MiB, lowered here through set_conv_chunk_bytes)
# is copied and multiplied band by band, each band's copy holding the input rows it reads. 256 bytes
# leaves one output row per band (wgrad's floor), the forward's rows cut into bands of columns; 2 KiB
# a few rows; depthwise layers whose padded planes are over the bound take the forward's bands too
# (conv.cpp). Winograd ignores the bound; the large batches of wgrad_slices, dot_wgrad_rounds and
# chan_wgrad_rounds would take 640-1360 one-row bands (and the reference 10 s).
BAND_BYTES = [256, 2048]
BAND_PROBLEMS = [c for c in CONV_PROBLEMS + FAST_PATHS if c not in WINOGRAD + WINOGRAD_WGRAD and
                 c.name not in ("wgrad_slices", "dot_wgrad_rounds", "chan_wgrad_rounds")]


@pytest.fixture(params=BAND_BYTES, ids=lambda n: f"bound{n}")
def small_chunks(request):
    """The chunk bound lowered to request.param bytes; the default restored afterwards."""
    _cpp.set_conv_chunk_bytes(request.param)
    yield request.param
    _cpp.set_conv_chunk_bytes(0)


def _forward_and_dgrad(c, x, w, b, dy, backend):
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend=backend)
    return y, fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(True, False, False), backend=backend)[0]


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in BAND_PROBLEMS])
def test_bands_exact_on_small_integers(c, small_chunks, dtype, rng):
    """Forward, dgrad (at stride 1 a forward of dy) and flat wgrad in bands: every stride, padding,
    dilation, group count, the compact path (AVX-512), pointwise wgrad, equal to the reference."""
    x, w, b, dy = _inputs(rng, c, small_ints, dtype)
    for name, got, want in zip(NAMES, _all_passes(c, x, w, b, dy, "cpp"), _all_passes(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name} in bands of {small_chunks} bytes")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in BAND_PROBLEMS])
def test_bands_bit_identical_to_whole_images(c, small_chunks, rng, threads_at_any_size):
    """A band split changes no output's sum (the same depth in the same order), on any number of
    threads: y and dx bit-identical to the whole-image copy on random data. Depthwise layers change
    path (the GEMM's bands instead of direct loops), so they are only close, to the reference. dw's
    depth blocks follow the chunks (several small images, or a band), so it is the same on any
    number of threads, and close to the reference."""
    x, w, b, dy = _inputs(rng, c, randn, np.float32)
    want = _all_passes(c, x, w, b, dy, "reference")
    _cpp.set_conv_chunk_bytes(0)
    whole = _all_passes(c, x, w, b, dy, "cpp")
    _cpp.set_conv_chunk_bytes(small_chunks)
    scale = _reduction_scale(c, dy.shape)
    first = None
    for threads in (1, 2, 3):
        with num_threads(threads):
            banded = _all_passes(c, x, w, b, dy, "cpp")
        if first is None:
            first = banded
        for name, got, one, ref in zip(NAMES[:2], banded, whole, want):
            if c.groups == c.C_in:
                assert_close(got, ref, f"{c.name} {name} in bands, {threads} threads")
            else:
                assert_equal(got, one, f"{c.name} {name} in bands vs whole, {threads} threads")
        assert_equal(banded[2], first[2], f"{c.name} dw in bands, {threads} vs 1 thread")
        assert_close(banded[2], want[2], f"{c.name} dw in bands", scale=scale["dw"])


@pytest.fixture
def cores_apart_restored():
    yield
    _cpp.set_cores_apart(-1)


def test_cores_apart_probe_and_override(cores_apart_restored):
    """The probe answers a bool for a team of 2+ (False for one thread); an override answers for
    every team of 2+ until -1 restores the probe; anything else is a ValueError naming the values."""
    assert _cpp.cores_apart(1) is False
    assert _cpp.cores_apart(2) in (True, False)
    _cpp.set_cores_apart(1)
    assert (_cpp.cores_apart(2), _cpp.cores_apart(3), _cpp.cores_apart(1)) == (True, True, False)
    _cpp.set_cores_apart(0)
    assert _cpp.cores_apart(2) is False
    with pytest.raises(ValueError, match=r"set_cores_apart: forced must be -1 \(measure\), 0 or 1, got 2"):
        _cpp.set_cores_apart(2)


def test_cores_apart_changes_no_bit(rng, cores_apart_restored):
    """At batch 1 with a weight over a quarter of a band's copy (590 KB here), the forward runs
    private bands of rows when the cores sit on different dies and a shared copy when not, and so do
    the sub-pixel dgrad's phase forwards: the same sums either way, equal to the reference on small
    integers and bit-identical on random data, on 1, 2 and 3 threads."""
    c = Conv("bands_when_apart", 1, 128, 56, 56, 128, 3, 3, stride=2, padding=1)
    assert _cpp.conv2d_dgrad_uses_subpixel(_params(c)) == (_cpp.gemm_isa() == "avx512")
    for make in (small_ints, randn):
        x, w, b, dy = _inputs(rng, c, make, np.float32)
        want = _all_passes(c, x, w, b, dy, "reference")
        got = {}
        for threads in (1, 2, 3):
            for apart in (0, 1):
                _cpp.set_cores_apart(apart)
                with num_threads(threads):
                    got[threads, apart] = _all_passes(c, x, w, b, dy, "cpp")[:2]
        for key, (y, dx) in got.items():
            if make is small_ints:
                assert_equal(y, want[0], f"y, (threads, apart) = {key}")
                assert_equal(dx, want[1], f"dx, (threads, apart) = {key}")
            else:
                assert_equal(y, got[1, 0][0], f"y, (threads, apart) = {key} vs (1, 0)")
                assert_equal(dx, got[1, 0][1], f"dx, (threads, apart) = {key} vs (1, 0)")


@pytest.mark.parametrize("c", [
    Conv("bands_default_bound", 1, 3, 700, 653, 5, 3, 3, padding=1),  # its flat copy: 5.5 MB
    Conv("bands_default_bound_strided", 2, 2, 1030, 761, 3, 3, 2, stride=(2, 3), padding=(1, 2), dilation=(2, 1)),
    Conv("bands_depthwise_plane", 1, 2, 1100, 1013, 2, 3, 3, padding=1, groups=2),  # 4.5 MB planes
    Conv("bands_of_columns", 1, 16, 1, 70001, 3, 1, 5, padding=(0, 2)),  # one row of 4.5 MB: a conv1d
], ids=lambda c: c.name)
def test_bands_at_the_default_bound(c, rng):
    """Images over the 4 MiB bound, no hook: forward and stride-1 dgrad in bands (of columns, when
    one row is over it), exact."""
    x, w, b, dy = _inputs(rng, c, small_ints, np.float32)
    for name, got, want in zip(("y", "dx"), _forward_and_dgrad(c, x, w, b, dy, "cpp"),
                               _forward_and_dgrad(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name}")


def test_chunk_bound_rejects_a_negative_count():
    with pytest.raises(ValueError, match="set_conv_chunk_bytes: bytes must be >= 0"):
        _cpp.set_conv_chunk_bytes(-1)


def _peak(fn):
    """The peak workspace of fn() on one thread."""
    with num_threads(1):
        _cpp.workspace_reset_peak()
        fn()
        return _cpp.workspace_peak_bytes()


@pytest.mark.parametrize("c", [
    Conv("ws_image", 1, 3, 0, 0, 8, 3, 3, padding=1),
    Conv("ws_image_strided", 1, 3, 0, 0, 8, 3, 3, stride=2, padding=1),
    Conv("ws_single_channel", 1, 1, 0, 0, 1, 3, 3, padding=1),  # depthwise: the GEMM's bands once planes are large
], ids=lambda c: c.name)
def test_workspace_bounded_independent_of_image_size(c, rng):
    """Forward, dgrad (stride 1; col2im's workspace never held an image) and wgrad on images of 0.3
    to 8 MB a channel: the workspace stays within the chunk bound (4 MiB of flat copies, with wgrad's
    packed dy^T, or one padded plane of a depthwise layer's direct loops), one packed B block and one
    staged unit of C (1 thread), where a whole image's copy grows with H x W (25 MB for the largest
    3-channel one; flat wgrad's packed dy^T, NR lanes per pixel: 67 MB or more)."""
    per_thread = 4 * 256 * 528 + (256 << 10)  # the widest packed B block of the kernel sets, a staged unit
    peaks = {}
    for H, W in ((300, 280), (900, 1000), (1500, 1400)):
        shape = Conv(**{**c.__dict__, "H": H, "W": W})
        x, w = small_ints(rng, shape.x_shape, np.float32), small_ints(rng, shape.w_shape, np.float32)
        y = fastconv.conv2d(x, w, **shape.kwargs, backend="cpp")
        peaks["fwd", H] = _peak(lambda: fastconv.conv2d(x, w, **shape.kwargs, backend="cpp"))
        if shape.stride == 1:
            peaks["dgrad", H] = _peak(lambda: fastconv.conv2d_backward(y, x, w, **shape.kwargs,
                                                                       needs=(True, False, False), backend="cpp"))
        peaks["wgrad", H] = _peak(lambda: fastconv.conv2d_backward(y, x, w, **shape.kwargs,
                                                                   needs=(False, True, False), backend="cpp"))
    for (name, H), peak in peaks.items():
        assert peak <= (4 << 20) + per_thread, f"{c.name} {name} H={H}: {peak} bytes of workspace"


def test_binding_rejects_what_it_cannot_index(rng):
    """The extension itself refuses mismatched dtypes, non-contiguous arrays and read-only outputs
    (the public ops never pass them; nothing is silently copied or cast)."""
    p = fastconv._params.conv_params("t", (1, 2, 5, 5), (3, 2, 3, 3), 1, 1, 1, 1)
    x, w = randn(rng, p.x_shape, np.float32), randn(rng, p.w_shape, np.float32)
    y = np.empty(p.y_shape, np.float32)
    with pytest.raises(TypeError, match="conv2d_forward: w has dtype float64"):
        _cpp.conv2d_forward(x, w.astype(np.float64), None, y, p, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        _cpp.conv2d_forward(x.astype(np.int32), w, None, y, p, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _cpp.conv2d_forward(np.asfortranarray(x), w, None, y, p, 1)
    y.setflags(write=False)
    with pytest.raises(ValueError, match="writable"):
        _cpp.conv2d_forward(x, w, None, y, p, 1)
    with pytest.raises(ValueError, match="nthreads"):
        _cpp.conv2d_forward(x, w, None, np.empty(p.y_shape, np.float32), p, 0)
    # max pooling's optional indices: None or a writable int64 array, never a list it would copy
    q = fastconv._params.pool_params("t", (1, 2, 6, 6), 2, 2, 0, 1, False)
    xq, yq = randn(rng, q.x_shape, np.float32), np.empty(q.y_shape, np.float32)
    with pytest.raises(TypeError, match="indices must be an array or None"):
        _cpp.max_pool2d_forward(xq, yq, np.zeros(q.y_shape).tolist(), q, 1)
    with pytest.raises(TypeError, match="indices has dtype"):
        _cpp.max_pool2d_forward(xq, yq, np.empty(q.y_shape, np.int32), q, 1)


# Max pooling's vector path (csrc/pool_max_vec.h, AVX-512 and AVX2) covers the interior output
# columns of rows at least one vector (AVX-512: 16 fp32 / 8 fp64 outputs; AVX2: 8 / 4) wide, or half
# a vector for narrower interiors; these
# shapes reach it for each stride kind (1: plain loads, 2: even-lane shuffles, 3: the lane-by-lane
# gather), with padding, dilation, ceil_mode, ragged and overlapping last vectors, and top/bottom
# rows with clipped windows; the last four have interiors of 12-15 / 5 columns (half vectors).
WIDE_POOLS = [
    # (x shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 9, 75), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((1, 2, 8, 64), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 7, 41), (3, 2), (1, 1), (1, 1), (1, 1), False),
    ((2, 1, 11, 90), (2, 3), (3, 3), (1, 1), (2, 1), True),
    ((1, 2, 10, 70), (3, 3), (2, 2), (1, 0), (2, 2), True),
    ((1, 1, 5, 38), (1, 4), (1, 2), (0, 2), (1, 1), False),
    ((2, 3, 32, 32), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((1, 2, 9, 13), (3, 2), (1, 1), (1, 0), (1, 1), False),
    ((1, 2, 6, 40), (2, 3), (3, 3), (1, 1), (1, 2), True),
    ((1, 1, 7, 12), (3, 3), (2, 2), (1, 1), (1, 1), False),
]


@pytest.mark.parametrize("pool_isa", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("case", WIDE_POOLS, ids=lambda c: "x".join(map(str, c[0])) + f"_k{c[1]}_s{c[2]}")
def test_max_pool_vector_path_matches_reference(case, pool_isa, dtype, rng):
    """y and indices bit-identical to the reference, with ties, NaN and -inf planted (PyTorch's scan
    rule: the first in-image tap starts a window, then value > max or NaN wins); y alone (the
    kernel then stores no indices) the same y."""
    shape, kernel, stride, padding, dilation, ceil_mode = case
    try:
        _cpp.set_gemm_isa(pool_isa)  # max pooling's vectors follow the kernel set: 64 or 32 bytes, or none
    except ValueError as exc:
        pytest.skip(str(exc))
    try:
        x = small_ints(rng, shape, dtype)  # many ties
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 17, replace=False)] = np.nan
        flat[rng.choice(flat.size, flat.size // 13, replace=False)] = -np.inf
        x[0, 0, :2] = -np.inf  # whole windows of -inf: the first in-image tap must win
        args = (kernel, stride, padding, dilation, ceil_mode)
        got = fastconv.max_pool2d(x, *args, return_indices=True, backend="cpp")
        want = fastconv.max_pool2d(x, *args, return_indices=True, backend="reference")
        assert_equal(got.y, want.y, "y")
        assert_equal(got.indices, want.indices, "indices")
        assert_equal(fastconv.max_pool2d(x, *args, backend="cpp"), want.y, "y without indices")
    finally:
        _cpp.set_gemm_isa("auto")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in FAST_PATHS
                               if c.name.startswith(("dw_wgrad", "dw_lanes"))])
def test_depthwise_wgrad_inf_and_nan_as_the_portable_loops(c, rng):
    """The vector kernels mask (the lanes kernels skip) the taps that fall in the padding, as the
    portable loops skip them: an Inf in dy on the border column gives Inf, not Inf * 0 = NaN, there."""
    x, w, _, dy = _inputs(rng, c, small_ints, np.float32)
    dy[0, 0, :, 0] = np.inf
    dy[-1, -1, 1, -1] = -np.inf
    dy[0, -1, -1, 1] = np.nan
    results = {}
    for isa in ("avx512", "avx2", "generic"):
        try:
            _cpp.set_gemm_isa(isa)
        except ValueError:
            continue  # a vector set this CPU lacks
        try:
            results[isa] = fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(False, True, False), backend="cpp")[1]
        finally:
            _cpp.set_gemm_isa("auto")
    for isa in results.keys() - {"generic"}:
        assert_equal(results[isa], results["generic"], f"{c.name} with {isa} kernels")


# Depthwise wgrad's vector kernel (stride_w 1) where the left padding spans more vector steps than
# the output row has (found by the property test: fp64 on AVX2, 4 lanes, read masks past the last
# step): exact on small integers against the reference, with the kernel set the CPU runs.
@pytest.mark.parametrize("c", [
    Conv("pad_wider_than_row", 1, 1, 1, 1, 1, 3, 3, padding=((3, 0), (6, 0)), dilation=(1, 2)),
    Conv("pad_two_rows_of_steps", 2, 3, 4, 5, 3, 5, 5, padding=(2, 21), groups=3),
], ids=lambda c: c.name)
def test_depthwise_wgrad_left_padding_past_the_row(c, dtype, rng):
    x, w, _, dy = _inputs(rng, c, small_ints, dtype)
    got = fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(False, True, False), backend="cpp")[1]
    want = fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(False, True, False), backend="reference")[1]
    assert_equal(got, want, c.name)


# Max pooling backward's one-pass vector kernel (fp32, AVX-512): windows 2 columns wide at stride 2
# without padding that do not overlap vertically. Rows of whole vectors (8 windows), ragged rows
# with a scalar tail and an uncovered last column, ceil_mode's half-outside last window, rows in
# no window (vertical padding, stride > kernel, dilation), a 1-row kernel; and vertically
# overlapping windows, which take the zero-and-scatter path.
W2S2_POOLS = [
    # (x shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 8, 64), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 9, 37), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 9, 37), (2, 2), (2, 2), (0, 0), (1, 1), True),
    ((2, 1, 13, 50), (3, 2), (4, 2), (1, 0), (1, 1), False),
    ((1, 2, 14, 40), (2, 2), (3, 2), (1, 0), (2, 1), True),
    ((1, 1, 5, 33), (1, 2), (1, 2), (0, 0), (1, 1), False),
    ((1, 2, 9, 40), (3, 2), (2, 2), (1, 0), (1, 1), False),
]


@pytest.mark.parametrize("pool_isa", ["avx512", "generic"])
@pytest.mark.parametrize("case", W2S2_POOLS, ids=lambda c: "x".join(map(str, c[0])) + f"_k{c[1]}_s{c[2]}")
def test_max_pool_backward_one_pass_matches_reference(case, pool_isa, dtype, rng):
    """dx bit-identical to the reference (zeros, then dy added at each argmax), NaN, Inf and -0 in
    dy included: -0 lands as +0, as 0 + -0 does in the reference."""
    shape, kernel, stride, padding, dilation, ceil_mode = case
    try:
        _cpp.set_gemm_isa(pool_isa)
    except ValueError as exc:
        pytest.skip(str(exc))
    try:
        x = randn(rng, shape, dtype)
        args = (kernel, stride, padding, dilation, ceil_mode)
        indices = fastconv.max_pool2d(x, *args, return_indices=True, backend="reference").indices
        dy = small_ints(rng, indices.shape, dtype)
        flat = dy.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 7, replace=False)] = -0.0
        flat[rng.choice(flat.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]
        got = fastconv.max_pool2d_backward(dy, x, *args, indices=indices, backend="cpp")
        want = fastconv.max_pool2d_backward(dy, x, *args, indices=indices, backend="reference")
        assert_equal(got, want, "dx")
        assert_equal(np.signbit(got), np.signbit(want), "dx signs")
    finally:
        _cpp.set_gemm_isa("auto")


@pytest.mark.parametrize("case", W2S2_POOLS[:3], ids=lambda c: "x".join(map(str, c[0])) + f"_k{c[1]}_s{c[2]}")
def test_max_pool_backward_indices_outside_their_windows(case, rng):
    """Indices a caller made up may point anywhere in the plane, repeated too: the one-pass kernel
    notices that some window's index is not in that window and scatters the plane instead."""
    shape, kernel, stride, padding, dilation, ceil_mode = case
    x = randn(rng, shape, np.float32)
    args = (kernel, stride, padding, dilation, ceil_mode)
    indices = fastconv.max_pool2d(x, *args, return_indices=True, backend="reference").indices.copy()
    dy = small_ints(rng, indices.shape, np.float32)
    indices[0, 0, 0, 1] = shape[2] * shape[3] - 1  # another window's pixel: the only stray one of its plane
    indices[-1, -1] = rng.integers(0, 3, size=indices.shape[2:])  # every window of a plane onto 3 pixels
    got = fastconv.max_pool2d_backward(dy, x, *args, indices=indices, backend="cpp")
    want = fastconv.max_pool2d_backward(dy, x, *args, indices=indices, backend="reference")
    assert_equal(got, want, "dx")


# The GEMM's column blocks follow the L2 (FASTCONV_L2_BYTES, else sysfs): a small L2 cuts the
# products into many more blocks, which must not change a bit (column blocks never split a sum).
_BLOCKING_SCRIPT = """
import sys, numpy as np, fastconv
from fastconv import _cpp
rng = np.random.default_rng(7)
out = {"l2": np.array(_cpp.cache_sizes()["l2"]), "nc": np.array(_cpp.gemm_blocking()["nc"])}
for i, (xs, ws, kw) in enumerate([((3, 40, 23, 29), (96, 40, 3, 3), dict(stride=2, padding=1)),
                                  ((2, 300, 9, 11), (70, 300, 1, 1), {}),
                                  ((2, 64, 30, 34), (64, 64, 3, 3), dict(padding=1))]):
    x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
    y = fastconv.conv2d(x, w, None, **kw, backend="cpp")
    out[f"y{i}"] = y
    for j, g in enumerate(fastconv.conv2d_backward(y, x, w, **kw, needs=(True, True, False), backend="cpp")[:2]):
        out[f"g{i}{j}"] = g
a, b = rng.standard_normal((33, 700), dtype=np.float32), rng.standard_normal((900, 700), dtype=np.float32)
out["linear"] = fastconv.linear(a, b, None, backend="cpp")
np.savez(sys.argv[1], **out)
"""


def _blocking_run(tmp_path, name, l2):
    env = {k: v for k, v in os.environ.items() if k != "FASTCONV_L2_BYTES"}
    if l2 is not None:
        env["FASTCONV_L2_BYTES"] = l2
    path = tmp_path / f"{name}.npz"
    proc = subprocess.run([sys.executable, "-c", _BLOCKING_SCRIPT, str(path)], env=env, capture_output=True, text=True)
    return proc, path


def test_column_blocks_follow_the_l2_and_leave_every_bit(tmp_path):
    runs = {}
    for name, l2 in (("detected", None), ("small", "65536"), ("large", str(4 << 20))):
        proc, path = _blocking_run(tmp_path, name, l2)
        assert proc.returncode == 0, proc.stderr
        runs[name] = dict(np.load(path))
    assert runs["small"]["l2"] == 65536 and runs["large"]["l2"] == 4 << 20
    assert runs["small"]["nc"] < runs["detected"]["nc"] <= runs["large"]["nc"]
    for name in ("small", "large"):
        for key, want in runs["detected"].items():
            if key not in ("l2", "nc"):
                assert_equal(runs[name][key], want, f"{key} with FASTCONV_L2_BYTES of the {name} run")


def test_bad_l2_size_is_a_value_error(tmp_path):
    proc, _ = _blocking_run(tmp_path, "bad", "1MB")
    assert proc.returncode != 0 and "ValueError: FASTCONV_L2_BYTES must be a cache size in bytes" in proc.stderr, proc.stderr


def test_cache_sizes_report():
    c = _cpp.cache_sizes()
    assert c["l2_source"] in ("env", "sysfs", "default") and c["l2"] >= 4096
    assert _cpp.gemm_blocking("float64")["kc"] == _cpp.gemm_blocking()["kc"] == 256  # kc splits sums: fixed
    with pytest.raises(ValueError, match="gemm_blocking: dtype must be"):
        _cpp.gemm_blocking("float16")


# Dilated layers as undilated ones on their phase images (csrc/conv_phases.cpp): regular layers
# (sizes and paddings multiples of the dilation, output as large as the input) list "phases" in every
# pass; the heuristics take it where the phase layer is one Winograd serves.
PHASES = Conv("phases", 5, 8, 12, 9, 6, 3, 3, padding=(2, 3), dilation=(2, 3))
PHASES_WINOGRAD = Conv("phases_winograd", 2, 64, 16, 16, 64, 3, 3, padding=2, dilation=2)


def _named(c, algo, x, w, b, dy):
    p = _params(c)
    y, dx, dw = np.empty(p.y_shape, x.dtype), np.empty(p.x_shape, x.dtype), np.empty(p.w_shape, x.dtype)
    _cpp.conv2d_forward(x, w, b, y, p, fastconv.get_num_threads(), algo)
    _cpp.conv2d_backward_input(dy, w, dx, p, fastconv.get_num_threads(), algo)
    _cpp.conv2d_backward_weight(dy, x, dw, p, fastconv.get_num_threads(), algo)
    return y, dx, dw


@pytest.mark.parametrize("bound", [0, 3100], ids=["one_chunk", "chunks"])
def test_phases_exact_on_small_integers(bound, dtype, rng):
    """Every pass on the phase images equals the reference, in one chunk of images or in chunks of
    two images (fp32) or one (fp64; wgrad then adds the chunks' dW), on any number of threads."""
    x, w, b, dy = _inputs(rng, PHASES, small_ints, dtype)
    want = _all_passes(PHASES, x, w, b, dy, "reference")[:3]
    _cpp.set_conv_chunk_bytes(bound)
    try:
        assert all("phases" in _cpp.conv2d_algorithms(_params(PHASES), p, np.dtype(dtype)) for p in ("fwd", "dgrad", "wgrad"))
        for threads in (1, 2, 3):
            with num_threads(threads):
                for name, got, ref in zip(NAMES, _named(PHASES, "phases", x, w, b, dy), want):
                    assert_equal(got, ref, f"phases {name}, bound {bound}, {threads} threads")
    finally:
        _cpp.set_conv_chunk_bytes(0)


def test_phases_where_they_apply(rng):
    """The heuristics take the phases where the phase layer takes Winograd (the same bits as named;
    forward and dgrad: its wgrad takes Winograd from 128 channels); not where one image's copies
    are over the bound, nor on irregular layers."""
    x, w, b, dy = _inputs(rng, PHASES_WINOGRAD, randn, np.float32)
    for name, auto, named in zip(NAMES[:2], _named(PHASES_WINOGRAD, "auto", x, w, b, dy),
                                 _named(PHASES_WINOGRAD, "phases", x, w, b, dy)):
        assert_equal(auto, named, f"{name}: the heuristics' choice")
    _cpp.set_conv_chunk_bytes(256)
    try:
        assert "phases" not in _cpp.conv2d_algorithms(_params(PHASES_WINOGRAD), "fwd", F32)
    finally:
        _cpp.set_conv_chunk_bytes(0)
    for c in (Conv("odd_width", 1, 8, 12, 9, 6, 3, 3, padding=2, dilation=2),
              Conv("padding_not_a_multiple", 1, 8, 12, 10, 6, 3, 3, padding=(1, 2), dilation=2),
              Conv("strided", 1, 8, 12, 10, 6, 3, 3, stride=2, padding=2, dilation=2),
              Conv("depthwise", 1, 8, 12, 10, 8, 3, 3, padding=2, dilation=2, groups=8)):
        assert "phases" not in _cpp.conv2d_algorithms(_params(c), "fwd", F32), c.name


# The dense layer's GEMM (csrc/gemm.cpp): A packed once where several column units share its panels
# (wide outputs), else read where it lies, each panel packed as it goes where its rows are 4 KiB
# apart: tall products of few outputs (rows of 576 and of 1024 taps), wide ones, one row; and A
# transposed (backward-weight's dy^T).
@pytest.mark.parametrize("M, K, N", [(700, 576, 40), (700, 1024, 40), (300, 96, 600), (1, 64, 3000)], ids=str)
def test_dense_gemm_exact_and_the_same_on_any_thread_count(M, K, N, isa, dtype, rng):
    x, w, dy = small_ints(rng, (M, K), dtype), small_ints(rng, (N, K), dtype), small_ints(rng, (M, N), dtype)
    needs = (True, True, False)
    want = (fastconv.linear(x, w, None, backend="reference"),
            *fastconv.linear_backward(dy, x, w, needs=needs, backend="reference")[:2])
    for nthreads in (1, 2, 3):
        with num_threads(nthreads):
            got = (fastconv.linear(x, w, None, backend="cpp"), *fastconv.linear_backward(dy, x, w, needs=needs, backend="cpp")[:2])
        for name, g, e in zip(("y", "dx", "dw"), got, want):
            assert_equal(g, e, f"{name} on {nthreads} threads")
