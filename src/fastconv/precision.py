"""float32 convolution precision: how much accuracy the C++ backend may trade for speed.

As ``torch.set_float32_matmul_precision``: ``"highest"`` (the default) keeps every float32 conv on
algorithms whose error stays inside fastconv's tolerance on unit-scale data with a margin and that
are exact on small integers (Winograd F(3x3, 3x3) on stride-1 3x3 layers summing up to 256
channels, at most 0.58 of the tolerance; F(2x2, 3x3) on others); ``"high"`` lets layers of up to
128 input channels (384 in and out together) run as F(4x4, 3x3), 0.7-0.95x the time of F(2x2)
there on a 2-core AMD EPYC, at 0.3-0.7 of the tolerance up to 64 channels (3-4x the direct path's
error: enough more flipped ReLUs that a patched ResNet-18's gradients left PyTorch's own
channels_last spread on every seed tried) and up to 0.92-1.05 at 128 (worst of 30 seeds; one seed
of a CI run: the largest error over a layer's outputs, at one near zero; the tests allow F(4x4)
1.25x the tolerance), and
backward-weight summing up to 1024 pixels. The same rules bound what autotune may time
(``fastconv.autotune``: each tile is a candidate of its own, ``"winograd2"``, ``"winograd3"``,
``"winograd4"``, only where the precision allows it), so a tuned layer never runs a tile that the
precision forbids. ``FASTCONV_FLOAT32_CONV_PRECISION`` sets it at import.
"""

import os

ENV = "FASTCONV_FLOAT32_CONV_PRECISION"
CHOICES = ("highest", "high")
_precision = "highest"


def set_float32_conv_precision(precision: str) -> None:
    global _precision
    if not isinstance(precision, str):
        raise TypeError(f"set_float32_conv_precision: precision must be a str, got {type(precision).__name__}")
    if precision not in CHOICES:
        raise ValueError(f"set_float32_conv_precision: precision must be one of {CHOICES}, got {precision!r}")
    try:
        from . import _cpp
    except ImportError:  # no C++ backend built: nothing else has a choice to make
        _cpp = None
    if _cpp is not None:
        _cpp.set_winograd_f4(precision == "high")
    _precision = precision


def get_float32_conv_precision() -> str:
    return _precision


if os.environ.get(ENV):
    set_float32_conv_precision(os.environ[ENV])
