"""float32 convolution precision: how much accuracy the C++ backend may trade for speed.

As ``torch.set_float32_matmul_precision``: ``"highest"`` (the default) keeps every float32 conv on
algorithms whose error stays well inside fastconv's tolerance whatever the data's magnitude
(Winograd F(2x2, 3x3) at most); ``"high"`` lets stride-1 3x3 layers of up to 128 channels summed
run as Winograd F(4x4, 3x3), 0.6-0.8x the time of F(2x2) on a 2-core AMD EPYC, with 2-5x its
error: 0.35-0.70 of the tolerance on unit-scale data, more on larger data (the README's table).
``FASTCONV_FLOAT32_CONV_PRECISION`` sets it at import.
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
