"""Named problem lists for correctness (CUTLASS-style): deliberately odd shapes, kept apart from
the network shapes used for speed (``fastconv/data/shapes.json``). Used by the test suite and by
``fastconv check``.

Every list is asymmetric on purpose: H != W, KH != KW, stride (3, 2), padding (2, 1), dilation
(2, 3), odd channel counts, groups and depthwise, batch 1, output size 1. Square-only problem
lists are how a KH/KW index swap survives for years.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    name: str
    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    KH: int
    KW: int
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1

    @property
    def x_shape(self):
        return (self.N, self.C_in, self.H, self.W)

    @property
    def w_shape(self):
        return (self.C_out, self.C_in // self.groups, self.KH, self.KW)

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


CONV_PROBLEMS = [
    Conv("basic_3x3", 2, 3, 7, 6, 5, 3, 3, padding=1),
    Conv("rect_kernel", 2, 3, 9, 7, 4, 3, 2),
    Conv("stride_3x2", 2, 3, 11, 8, 5, 3, 2, stride=(3, 2)),
    Conv("pad_2x1", 1, 3, 6, 9, 5, 2, 3, padding=(2, 1)),
    Conv("dilation_2x3", 2, 2, 12, 13, 3, 3, 2, dilation=(2, 3)),
    Conv("all_odd", 3, 5, 13, 10, 7, 4, 3, stride=(3, 2), padding=(2, 1), dilation=(2, 3)),
    Conv("per_side_pad", 2, 3, 8, 7, 4, 3, 2, padding=((1, 2), (0, 3))),
    Conv("same_even_kernel", 2, 3, 7, 6, 4, 2, 4, padding="same", dilation=(1, 3)),
    Conv("valid", 2, 3, 6, 9, 4, 3, 5, padding="valid"),
    Conv("groups_3", 2, 6, 9, 7, 9, 3, 2, stride=(2, 1), padding=(1, 0), groups=3),
    Conv("depthwise", 2, 5, 8, 9, 5, 3, 3, padding=1, groups=5),
    Conv("depthwise_mult2", 1, 3, 7, 6, 6, 2, 3, stride=(1, 2), groups=3),
    Conv("pointwise_1x1", 2, 7, 5, 6, 3, 1, 1),
    Conv("pointwise_strided", 2, 4, 7, 8, 5, 1, 1, stride=(2, 3)),
    Conv("batch_1", 1, 3, 6, 5, 2, 3, 3, padding=1),
    Conv("output_1x1", 2, 3, 4, 5, 6, 4, 5),
    Conv("image_1x1_padded", 2, 4, 1, 1, 3, 3, 3, padding=1),
    Conv("kernel_stride_exceeds", 2, 2, 5, 7, 3, 2, 2, stride=(4, 5)),
    Conv("wide_1_row", 2, 3, 1, 17, 4, 1, 5, stride=(1, 3), padding=(0, 2)),
]


@dataclass(frozen=True)
class Pool:
    name: str
    N: int
    C: int
    H: int
    W: int
    kernel_size: object
    stride: object = None
    padding: object = 0
    dilation: object = 1
    ceil_mode: bool = False

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)


POOL_PROBLEMS = [
    Pool("2x2", 2, 3, 8, 6, 2),
    Pool("rect_3x2", 2, 3, 9, 7, (3, 2)),
    Pool("stride_3x2", 2, 3, 11, 8, (3, 2), stride=(3, 2)),
    Pool("overlap_pad", 2, 3, 9, 10, 3, stride=2, padding=1),
    Pool("pad_1x0", 1, 2, 7, 6, (3, 2), stride=(2, 1), padding=(1, 0)),
    Pool("ceil", 2, 3, 10, 7, 3, stride=2, ceil_mode=True),
    Pool("ceil_pad", 2, 3, 8, 9, (3, 2), stride=(3, 2), padding=1, ceil_mode=True),
    Pool("dilation_2x3", 2, 2, 12, 13, (3, 2), stride=1, dilation=(2, 3)),
    Pool("batch_1_odd_c", 1, 5, 5, 9, 2, stride=(1, 2)),
    Pool("output_1x1", 2, 3, 4, 5, (4, 5)),
    Pool("image_1x1", 2, 3, 1, 1, 1),
    # dilated windows that start in the padding and, with ceil_mode, hang over the bottom/right
    Pool("dilation_pad_ceil", 2, 3, 9, 11, (2, 3), stride=(2, 3), padding=1, dilation=(3, 2), ceil_mode=True),
    # stride larger than the kernel: some pixels are in no window and get no gradient
    Pool("stride_exceeds_kernel", 1, 2, 7, 9, (2, 1), stride=(3, 4)),
]
