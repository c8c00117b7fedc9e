"""The benchmark suite: real layer shapes, loaded from JSON, and the work each pass does.

The default suite ships as ``fastconv/data/shapes.json``; a user file has the same form::

    {"shapes": [{"name": "my_conv", "kind": "conv", "N": 8, "C_in": 64, "H": 56, "W": 56,
                 "C_out": 64, "kH": 3, "kW": 3, "stride": [1, 1], "pad": [1, 1],
                 "dilation": [1, 1], "groups": 1}, ...]}

``kind`` is ``conv``, ``maxpool`` (``C_out`` = ``C_in``; ``groups`` is ignored) or ``dense``
(x is (N, C_in), w is (C_out, C_in); H, W, kH, kW are 1). ``stride``, ``pad`` and ``dilation`` are
an int or a pair and default to 1, 0, 1. The optional fields ``H_out``, ``W_out``, ``flops_fwd``
and ``bytes_fwd`` are checked against fastconv's own shape arithmetic, so a file that disagrees
with it fails to load instead of reporting wrong rates.

Work per pass (the rates in every report):
- conv and dense: ``2*N*C_out*OH*OW*(C_in/groups)*KH*KW`` FLOP, the same count for forward,
  backward-input and backward-weight;
- max pooling, in bytes that a pass must move: forward reads x and writes y; backward-input reads
  dy and the int64 argmax indices and writes dx.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

from .._params import as_pair, conv_params, pool_params

#: The passes of every kind, in report order. Max pooling has no weight, so no backward-weight.
PASSES = ("forward", "backward-input", "backward-weight")
KIND_PASSES = {
    "conv": PASSES,
    "dense": PASSES,
    "maxpool": ("forward", "backward-input"),
}
INDEX_BYTES = 8  # max pooling's argmax indices are int64, as in PyTorch


@dataclass(frozen=True)
class Shape:
    """One layer of the suite. ``padding`` is PyTorch's symmetric (ph, pw)."""

    name: str
    kind: str
    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    KH: int
    KW: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    source: str = field(default="", compare=False)

    @property
    def op(self) -> str:
        return f"bench: shape {self.name!r}"  # how errors about this shape begin

    @cached_property
    def params(self):
        """fastconv's params object (ConvParams, PoolParams, or ConvParams of a 1x1 conv for dense)."""
        op = self.op
        if self.kind == "maxpool":
            return pool_params(op, self.x_shape, (self.KH, self.KW), self.stride, self.padding,
                               self.dilation, False)
        # a dense layer is the 1x1 convolution of an (N, C_in, 1, 1) image: same FLOP count
        return conv_params(op, (self.N, self.C_in, self.H, self.W),
                           (self.C_out, self.C_in // self.groups, self.KH, self.KW),
                           self.stride, self.padding, self.dilation, self.groups)

    @property
    def passes(self) -> tuple[str, ...]:
        return KIND_PASSES[self.kind]

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.N, self.C_in) if self.kind == "dense" else (self.N, self.C_in, self.H, self.W)

    @property
    def w_shape(self) -> tuple[int, ...] | None:
        if self.kind == "maxpool":
            return None
        if self.kind == "dense":
            return (self.C_out, self.C_in)
        return (self.C_out, self.C_in // self.groups, self.KH, self.KW)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.N, self.C_out) if self.kind == "dense" else self.params.y_shape

    @property
    def OH(self) -> int:
        return self.params.OH

    @property
    def OW(self) -> int:
        return self.params.OW

    def work(self, pass_name: str, itemsize: int) -> tuple[float, str]:
        """``(amount, unit)`` of one pass: FLOP for conv and dense, bytes for max pooling."""
        if self.kind != "maxpool":
            return float(self.params.flops), "FLOP"
        x, y = math.prod(self.x_shape), math.prod(self.y_shape)
        if pass_name == "forward":
            return float((x + y) * itemsize), "B"
        return float((y + x) * itemsize + y * INDEX_BYTES), "B"  # dy and dx, plus the indices

    def min_bytes(self, pass_name: str, itemsize: int) -> float:
        """The fewest bytes a pass must move through memory: each operand read once, the result
        written once (conv and dense: the pass's two inputs of x, w, dy and its output; max
        pooling: its work). With a machine's bandwidth this bounds how fast a pass can be."""
        if self.kind == "maxpool":
            return self.work(pass_name, itemsize)[0]
        x, w, y = math.prod(self.x_shape), math.prod(self.w_shape), math.prod(self.y_shape)
        return float((x + w + y) * itemsize)  # fprop reads x, w; dgrad dy, w; wgrad dy, x

    def describe(self) -> str:
        """A short spelling of the layer, e.g. ``N16 64->64 56x56 k3x3 s1 p1 d1 g1``."""
        if self.kind == "dense":
            return f"N{self.N} {self.C_in}->{self.C_out}"
        geometry = (f"N{self.N} {self.C_in}->{self.C_out} {self.H}x{self.W} k{self.KH}x{self.KW} "
                    f"s{_pair(self.stride)} p{_pair(self.padding)} d{_pair(self.dilation)}")
        return geometry + (f" g{self.groups}" if self.kind == "conv" and self.groups != 1 else "")

    def to_json(self) -> dict:
        return dict(name=self.name, kind=self.kind, N=self.N, C_in=self.C_in, H=self.H, W=self.W,
                    C_out=self.C_out, kH=self.KH, kW=self.KW, stride=list(self.stride),
                    pad=list(self.padding), dilation=list(self.dilation), groups=self.groups,
                    H_out=self.OH, W_out=self.OW, source=self.source)


def _pair(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]},{p[1]}"


@dataclass(frozen=True)
class Suite:
    path: str
    shapes: tuple[Shape, ...]
    dtype: str = "float32"


def default_suite_path() -> Path:
    return Path(str(resources.files("fastconv") / "data" / "shapes.json"))


_REQUIRED = ("name", "kind", "N", "C_in", "H", "W", "C_out", "kH", "kW")


def _shape_from_json(entry: dict, where: str, dtype_size: int) -> Shape:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {entry!r}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    kind = entry["kind"]
    if kind not in KIND_PASSES:
        raise ValueError(f"{where}: kind must be one of {', '.join(KIND_PASSES)}, got {kind!r}")
    ints = {}
    for key in ("N", "C_in", "H", "W", "C_out", "kH", "kW"):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
        ints[key] = value
    op = where
    stride = as_pair(op, "stride", entry.get("stride", 1), minimum=1)
    padding = as_pair(op, "pad", entry.get("pad", 0), minimum=0)
    dilation = as_pair(op, "dilation", entry.get("dilation", 1), minimum=1)
    groups = entry.get("groups", 1)
    if kind == "maxpool":
        if ints["C_out"] != ints["C_in"]:
            raise ValueError(f"{where}: max pooling keeps the channels, but C_out={ints['C_out']} "
                             f"!= C_in={ints['C_in']}")
        groups = 1
    if kind == "dense" and (ints["H"], ints["W"], ints["kH"], ints["kW"]) != (1, 1, 1, 1):
        raise ValueError(f"{where}: a dense layer has H = W = kH = kW = 1")
    shape = Shape(entry["name"], kind, ints["N"], ints["C_in"], ints["H"], ints["W"], ints["C_out"],
                  ints["kH"], ints["kW"], stride, padding, dilation, groups, str(entry.get("source", "")))
    try:
        shape.params  # noqa: B018 -- validates the geometry now, so the message can say where
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {str(exc).removeprefix(shape.op + ': ')}") from exc
    expected = {"H_out": shape.OH, "W_out": shape.OW}
    if kind == "maxpool":
        expected["bytes_fwd"] = int(shape.work("forward", dtype_size)[0])
    else:
        expected["flops_fwd"] = int(shape.work("forward", dtype_size)[0])
    for key, value in expected.items():
        if entry.get(key) is not None and entry[key] != value:
            raise ValueError(f"{where}: {key} is {entry[key]} in the file, but fastconv computes {value}")
    return shape


def load_suite(path: str | Path | None = None) -> Suite:
    """The shapes of ``path`` (default: the shipped suite), validated; ValueError names what is wrong."""
    path = default_suite_path() if path is None else Path(path)
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"bench: cannot read shapes file {str(path)!r}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"bench: shapes file {str(path)!r} is not valid JSON: {exc}") from exc
    entries = document.get("shapes") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"bench: shapes file {str(path)!r} needs a non-empty list under \"shapes\"")
    dtype = document.get("dtype", "float32")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"bench: shapes file {str(path)!r}: dtype must be float32 or float64, got {dtype!r}")
    size = 4 if dtype == "float32" else 8
    shapes = []
    for i, entry in enumerate(entries):
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
        shapes.append(_shape_from_json(entry, f"bench: {path.name}: shape #{i} ({name})", size))
    names = [s.name for s in shapes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"bench: shapes file {str(path)!r}: duplicate names {', '.join(duplicates)}")
    return Suite(str(path), tuple(shapes), dtype)


def parse_passes(text: str | None) -> tuple[str, ...]:
    """``--passes``: comma-separated pass names; ``backward`` stands for both backward passes."""
    if not text:
        return PASSES
    chosen = set()
    for item in (t.strip() for t in text.split(",") if t.strip()):
        matches = [p for p in PASSES if p == item or p.startswith(item + "-")]
        if not matches:
            raise ValueError(f"bench: unknown pass {item!r}; passes: {', '.join(PASSES)} "
                             f"(or 'backward' for both backward passes)")
        chosen.update(matches)
    return tuple(p for p in PASSES if p in chosen)


def quick_subset(shapes) -> tuple[Shape, ...]:
    """The cheapest shape of each kind: the whole pipeline in seconds."""
    cheapest = {}
    for s in shapes:
        cost = s.work("forward", 4)[0]
        if s.kind not in cheapest or cost < cheapest[s.kind].work("forward", 4)[0]:
            cheapest[s.kind] = s
    return tuple(s for s in shapes if cheapest.get(s.kind) is s)


def select(shapes, match: str | None = None) -> tuple[Shape, ...]:
    """The shapes whose name contains ``match`` (all when None)."""
    return tuple(s for s in shapes if match is None or match in s.name)
