"""cross_entropy and mse_loss: the reference against per-sample loops in plain Python, finite
differences and PyTorch (weights, ignore_index, label smoothing, probability targets, every
reduction, edge cases); every backend against the reference; bad input."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from support import (bad_input_cases, check_bad_input, assert_close, assert_equal, assert_fresh_output, assert_gradient,
                     assert_unchanged, backends_implementing, randn, require, small_ints, snapshot,
                     without_warnings)

REDUCTIONS = ("mean", "sum", "none")


def ce_funcs(kind):
    return (f"cross_entropy_{kind}_forward", f"cross_entropy_{kind}_backward")


MSE_FUNCS = ("mse_loss_forward", "mse_loss_backward")


# --------------------------------------------------------------------------------------------
# cross-entropy problems
# --------------------------------------------------------------------------------------------

class CE(NamedTuple):
    id: str
    shape: tuple  # logits: (N, C), (N, C, d1, ...) or (C,)
    kind: str = "index"  # or "probs"
    weighted: bool = False
    ignore_index: int | None = None  # None: the default -100 and no ignored targets
    label_smoothing: float = 0.0

    @property
    def C(self):
        return self.shape[0] if len(self.shape) == 1 else self.shape[1]

    @property
    def kwargs(self):
        kw = {"label_smoothing": self.label_smoothing}
        if self.ignore_index is not None:
            kw["ignore_index"] = self.ignore_index
        return kw


CE_PROBLEMS = [
    CE("plain_2d", (5, 4)),
    CE("weighted_ignored", (7, 5), weighted=True, ignore_index=-100),
    CE("smoothing", (4, 3), label_smoothing=0.2),
    CE("all_options_4d", (3, 4, 2, 3), weighted=True, ignore_index=1, label_smoothing=0.15),  # ignores class 1
    CE("spatial_3d_ignore_minus1", (2, 5, 3), ignore_index=-1),
    CE("vector_1d", (6,)),
    CE("vector_1d_weighted_smoothing", (6,), weighted=True, label_smoothing=0.3),
    CE("one_class", (3, 1), label_smoothing=0.5),
    CE("smoothing_1", (4, 3), weighted=True, label_smoothing=1.0),
    CE("probs_2d", (4, 5), kind="probs"),
    CE("probs_weighted_smoothing_4d", (2, 3, 2, 2), kind="probs", weighted=True, label_smoothing=0.1),
    CE("probs_vector_1d", (4,), kind="probs", weighted=True),
]
CE_PARAMS = [pytest.param(c, id=c.id) for c in CE_PROBLEMS]


def ce_inputs(c: CE, rng, dtype, make=randn):
    """logits, target (indices: int64 with ~30% ignored; probabilities: positive, not normalised), weight."""
    logits = np.asarray(make(rng, c.shape, dtype))
    batch = c.shape[:1] + c.shape[2:] if len(c.shape) > 1 else ()
    if c.kind == "probs":
        target = rng.random(c.shape).astype(dtype)
    else:
        target = np.asarray(rng.integers(0, c.C, size=batch))
        if c.ignore_index is not None and c.ignore_index < 0:
            target[rng.random(batch) < 0.3] = c.ignore_index
            target.reshape(-1)[:1] = 0  # at least one target counts
    weight = (0.5 + rng.random(c.C)).astype(dtype) if c.weighted else None
    return logits, target, weight


def ce_dloss(c: CE, rng, dtype, reduction):
    batch = c.shape[:1] + c.shape[2:] if len(c.shape) > 1 else ()
    return np.asarray(randn(rng, batch if reduction == "none" else (), dtype))


def loop_cross_entropy(logits, target, weight, reduction, ignore_index, label_smoothing, dloss):
    """Loss and dlogits sample by sample in plain Python: loss_i = -sum_c q_ic log p_ic, with q the
    (smoothed) target times the class weights, and dloss_i / dlogits_ic = p_ic sum_k q_ik - q_ic."""
    index = target.dtype.kind in "iu"
    x = np.moveaxis(logits[None] if logits.ndim == 1 else logits, 1, -1)  # (..., C)
    t = target[None] if logits.ndim == 1 else (target if index else np.moveaxis(target, 1, -1))
    C = x.shape[-1]
    w = [1.0] * C if weight is None else [float(v) for v in weight]
    eps = label_smoothing
    losses, grads, qs, total = np.zeros(x.shape[:-1]), np.zeros(x.shape), {}, 0.0
    for i in np.ndindex(x.shape[:-1]):
        row = [float(v) for v in x[i]]
        lse = max(row) + math.log(sum(math.exp(v - max(row)) for v in row))
        if index and int(t[i]) == ignore_index:
            q = [0.0] * C
        elif index:
            q = [w[c] * ((1 - eps) * (c == int(t[i])) + eps / C) for c in range(C)]
            total += w[int(t[i])]
        else:
            q = [w[c] * (float(t[i + (c,)]) * (1 - eps) + eps / C) for c in range(C)]
            total += 1
        losses[i] = -sum(qc * (v - lse) for qc, v in zip(q, row))
        qs[i] = q
    for i in np.ndindex(x.shape[:-1]):
        if reduction == "none":
            g = float(np.asarray(dloss).reshape(x.shape[:-1])[i])
        else:
            g = float(dloss) / (total if reduction == "mean" else 1)
        p = [math.exp(v - max(x[i])) / sum(math.exp(u - max(x[i])) for u in x[i]) for v in x[i]]
        grads[i] = [g * (pc * sum(qs[i]) - qc) for pc, qc in zip(p, qs[i])]
    loss = {"none": losses, "sum": losses.sum(), "mean": losses.sum() / total}[reduction]
    dlogits = np.moveaxis(grads, -1, 1)
    if logits.ndim == 1:
        loss, dlogits = (loss[0] if reduction == "none" else loss), dlogits[0]
    return np.asarray(loss), dlogits


def run_ce(c: CE, logits, target, weight, reduction, dloss, backend="reference"):
    loss = fastconv.cross_entropy(logits, target, weight, reduction, **c.kwargs, backend=backend)
    dlogits = fastconv.cross_entropy_backward(dloss, logits, target, weight, reduction, **c.kwargs, backend=backend)
    return loss, dlogits


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("c", CE_PARAMS)
def test_cross_entropy_reference_matches_loops(c, reduction, rng):
    logits, target, weight = ce_inputs(c, rng, np.float64)
    dloss = ce_dloss(c, rng, np.float64, reduction)
    loss, dlogits = run_ce(c, logits, target, weight, reduction, dloss)
    loop_loss, loop_dlogits = loop_cross_entropy(logits, target, weight, reduction,
                                                 c.kwargs.get("ignore_index", -100), c.label_smoothing, dloss)
    assert_close(loss, loop_loss, f"{c.id} loss")
    assert_close(dlogits, loop_dlogits, f"{c.id} dlogits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("c", CE_PARAMS)
def test_cross_entropy_gradient_matches_finite_differences(c, reduction, rng):
    logits, target, weight = ce_inputs(c, rng, np.float64)
    dloss = ce_dloss(c, rng, np.float64, reduction)
    _, dlogits = run_ce(c, logits, target, weight, reduction, dloss)
    f = lambda v: fastconv.cross_entropy(v, target, weight, reduction, **c.kwargs)  # noqa: E731
    assert_gradient(dlogits, f, logits, dloss, c.id)


def torch_cross_entropy(logits, target, weight, reduction, dloss, **kwargs):
    torch = pytest.importorskip("torch")
    lt = torch.tensor(logits, requires_grad=True)
    tt = torch.tensor(target.astype(np.int64) if target.dtype.kind in "iu" else target)
    wt = None if weight is None else torch.tensor(weight)
    loss = torch.nn.functional.cross_entropy(lt, tt, wt, reduction=reduction, **kwargs)
    loss.backward(torch.tensor(dloss))
    return loss.detach().numpy(), lt.grad.numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("c", CE_PARAMS)
def test_cross_entropy_reference_matches_torch(c, reduction, dtype, rng):
    logits, target, weight = ce_inputs(c, rng, dtype)
    dloss = ce_dloss(c, rng, dtype, reduction)
    want_loss, want_dlogits = torch_cross_entropy(logits, target, weight, reduction, dloss, **c.kwargs)
    loss, dlogits = run_ce(c, logits, target, weight, reduction, dloss)
    assert_close(loss, want_loss, f"{c.id} loss vs torch")
    assert_close(dlogits, want_dlogits, f"{c.id} dlogits vs torch")


inf, nan = np.inf, np.nan
CE_EDGES = [  # (id, logits, target, weight, kwargs)
    ("all_ignored", [[1.0, 2, 3], [0, 0, 0]], [-100, -100], None, {}),
    ("all_ignored_weighted_smoothing", [[1.0, 2, 3], [0, 0, 0]], [-100, -100], [1.0, 2, 3], {"label_smoothing": 0.1}),
    ("zero_total_weight", [[1.0, 2, 3], [0, 1, 0]], [0, 0], [0.0, 1, 1], {}),
    ("zero_total_weight_smoothing", [[1.0, 2, 3], [0, 1, 0]], [0, -100], [0.0, 1, 1], {"label_smoothing": 0.2}),
    ("minus_inf_logit_not_target", [[0.0, -inf, 1], [0, 1, 2]], [0, 1], None, {}),
    ("minus_inf_logit_smoothing", [[0.0, -inf, 1], [0, 1, 2]], [0, 1], None, {"label_smoothing": 0.1}),
    ("minus_inf_logit_is_target", [[0.0, -inf, 1]], [1], None, {}),
    ("minus_inf_logit_ignored_row", [[-inf, -inf, 1], [0, 1, 2]], [-100, 2], [1.0, 2, 3], {"label_smoothing": 0.3}),
    ("plus_inf_logit", [[0.0, inf, 1], [0, 1, 2]], [0, 1], None, {}),
    ("nan_logit", [[0.0, nan, 1], [0, 1, 2]], [2, 1], None, {}),
    ("huge_spread", [[1000.0, -1000, 0], [-1000, -1000, -1000]], [1, 2], None, {"label_smoothing": 0.2}),
    ("probs_minus_inf_with_zero_prob", [[0.0, -inf, 1]], [[1.0, 0, 0]], None, {}),
    ("probs_minus_inf_smoothing", [[0.0, -inf, 1], [0, 1, 2]], [[1.0, 0, 0], [0, 0.5, 0.5]], [1.0, 2, 3], {"label_smoothing": 0.1}),
    ("probs_huge_spread", [[1000.0, -1000, 0]], [[0.2, 0.3, 0.5]], None, {}),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logits, target, weight, kwargs", [pytest.param(*e[1:], id=e[0]) for e in CE_EDGES])
def test_cross_entropy_edge_cases_match_torch(logits, target, weight, kwargs, reduction, dtype, backend):
    """Ignored and zero-weight targets (a mean over nothing is NaN, its gradient 0 or NaN as in
    PyTorch), infinite and NaN logits, a huge spread; no warnings."""
    probs = isinstance(target[0], list)
    require(backend, "loss", *ce_funcs("probs" if probs else "index"))
    logits, weight = np.array(logits, dtype), None if weight is None else np.array(weight, dtype)
    target = np.array(target, dtype if probs else np.int64)
    dloss = np.asarray(np.linspace(0.5, 1.5, logits.shape[0]) if reduction == "none" else 1.25).astype(dtype)
    want = torch_cross_entropy(logits.astype(np.float64), target, None if weight is None else weight.astype(np.float64),
                               reduction, dloss.astype(np.float64), **kwargs)
    loss = without_warnings(fastconv.cross_entropy, logits, target, weight, reduction, **kwargs, backend=backend)
    dlogits = without_warnings(fastconv.cross_entropy_backward, dloss, logits, target, weight, reduction, **kwargs,
                               backend=backend)
    assert_close(loss, want[0].astype(dtype), "loss")
    assert_close(dlogits, want[1].astype(dtype), "dlogits")


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0, 4), (0, 3, 2), (2, 3, 0)], ids=str)
def test_cross_entropy_empty_batch_matches_torch(shape, reduction, kind, backend):
    """No samples: no losses, a sum of 0, a mean of NaN (0/0), as PyTorch; zero gradients."""
    c = CE("empty", shape, kind)
    logits, target, _ = ce_inputs(c, np.random.default_rng(0), np.float32)
    dloss = np.ones(shape[:1] + shape[2:] if reduction == "none" else (), np.float32)
    want_loss, _ = torch_cross_entropy(logits, target, None, reduction, dloss)
    loss, dlogits = run_ce(c, logits, target, None, reduction, dloss, backend)
    assert_close(loss, want_loss, "loss")
    assert_equal(dlogits, np.zeros(shape, np.float32))


def test_cross_entropy_accepts_any_integer_target_dtype(rng):
    c = CE_PROBLEMS[3]
    logits, target, weight = ce_inputs(c, rng, np.float64)
    want = run_ce(c, logits, target, weight, "sum", np.asarray(1.0))
    for dtype in (np.int32, np.uint8, np.int16):
        for got, w in zip(run_ce(c, logits, target.astype(dtype), weight, "sum", np.asarray(1.0)), want):
            assert_equal(got, w, str(dtype))


# --------------------------------------------------------------------------------------------
# cross-entropy on every backend against the reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("c", CE_PARAMS)
def test_cross_entropy_backend_matches_reference(c, reduction, dtype, backend, rng):
    require(backend, "loss", *ce_funcs(c.kind))
    logits, target, weight = ce_inputs(c, rng, dtype)
    dloss = ce_dloss(c, rng, dtype, reduction)
    inputs = snapshot(logits, target, weight, dloss)
    loss, dlogits = run_ce(c, logits, target, weight, reduction, dloss, backend)
    assert_unchanged((logits, target, weight, dloss), inputs)
    want_loss, want_dlogits = run_ce(c, logits, target, weight, reduction, dloss)
    assert_close(loss, want_loss, f"{c.id} loss on {backend}")
    assert_close(dlogits, want_dlogits, f"{c.id} dlogits on {backend}")
    assert_fresh_output(loss, dtype, logits, target, weight, dloss)
    assert_fresh_output(dlogits, dtype, logits, target, weight, dloss)
    assert loss.shape == (want_loss.shape if reduction == "none" else ())


@pytest.mark.parametrize("c", [p for p in CE_PARAMS if p.values[0].id in ("all_options_4d", "probs_weighted_smoothing_4d",
                                                                         "weighted_ignored")])
def test_cross_entropy_backend_accepts_non_contiguous_and_read_only_inputs(c, backend, rng):
    require(backend, "loss", *ce_funcs(c.kind))
    logits, target, weight = ce_inputs(c, rng, np.float32)
    dloss = ce_dloss(c, rng, np.float32, "none")
    want = run_ce(c, logits, target, weight, "none", dloss)
    odd = [np.asfortranarray(a) for a in (logits, target, dloss)] + [np.repeat(weight, 2)[::2]]
    for a in odd:
        a.setflags(write=False)
    lo, to, do, wo = odd
    assert not (lo.flags.c_contiguous or wo.flags.c_contiguous)
    for name, got, w in zip(("loss", "dlogits"), run_ce(c, lo, to, wo, "none", do, backend), want):
        assert_close(got, w, f"{c.id} {name} on {backend}, non-contiguous read-only")
        assert_fresh_output(got, np.float32, lo, to, wo, do)


# --------------------------------------------------------------------------------------------
# mean squared error
# --------------------------------------------------------------------------------------------

MSE_SHAPES = [(), (7,), (3, 1, 5), (2, 3, 4, 2)]
MSE_PARAMS = [pytest.param(s, id=str(s)) for s in MSE_SHAPES]


def run_mse(x, target, reduction, dloss, backend="reference"):
    return (fastconv.mse_loss(x, target, reduction, backend=backend),
            fastconv.mse_loss_backward(dloss, x, target, reduction, backend=backend))


def mse_inputs(rng, shape, dtype, reduction, make=randn):
    x, target = np.asarray(make(rng, shape, dtype)), np.asarray(make(rng, shape, dtype))
    return x, target, np.asarray(make(rng, shape if reduction == "none" else (), dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_PARAMS)
def test_mse_reference_matches_loops_exactly(shape, reduction, rng):
    """On small integers every step is exact: the loops and the reference must agree bit for bit."""
    x, target, dloss = mse_inputs(rng, shape, np.float64, reduction, small_ints)
    loss, dx = run_mse(x, target, reduction, dloss)
    squares = [(float(a) - float(b)) ** 2 for a, b in zip(x.flat, target.flat)]
    K = len(squares)
    want = {"none": np.array(squares).reshape(shape), "sum": np.asarray(sum(squares)),
            "mean": np.asarray(sum(squares) / K)}[reduction]
    g = [float(v) for v in dloss.flat] if reduction == "none" else [float(dloss) / (K if reduction == "mean" else 1)] * K
    want_dx = np.array([2 * (float(a) - float(b)) * gi for a, b, gi in zip(x.flat, target.flat, g)]).reshape(shape)
    assert_equal(loss, want, "loss")
    (assert_close if reduction == "mean" else assert_equal)(dx, want_dx, "dx")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_gradient_matches_finite_differences(reduction, rng):
    x, target, dloss = mse_inputs(rng, (3, 4), np.float64, reduction)
    _, dx = run_mse(x, target, reduction, dloss)
    assert_gradient(dx, lambda v: fastconv.mse_loss(v, target, reduction), x, dloss)


def torch_mse(x, target, reduction, dloss):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.mse_loss(xt, torch.tensor(target), reduction=reduction)
    loss.backward(torch.tensor(dloss))
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_PARAMS)
def test_mse_matches_torch(shape, reduction, dtype, rng):
    x, target, dloss = mse_inputs(rng, shape, dtype, reduction)
    want_loss, want_dx = torch_mse(x, target, reduction, dloss)
    loss, dx = run_mse(x, target, reduction, dloss)
    assert_close(loss, want_loss, "loss vs torch")
    assert_close(dx, want_dx, "dx vs torch")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_edge_values_match_torch(reduction, dtype, backend):
    require(backend, "loss", *MSE_FUNCS)
    x = np.array([0.0, inf, inf, nan, 1000, -1000, 1e-30, 3], dtype)
    target = np.array([0.0, 1, -inf, 0, -1000, 1000, -1e-30, 3], dtype)
    dloss = np.asarray(np.linspace(-1, 1, x.size) if reduction == "none" else 0.5).astype(dtype)
    want = torch_mse(x.astype(np.float64), target.astype(np.float64), reduction, dloss.astype(np.float64))
    for got, w in zip(without_warnings(run_mse, x, target, reduction, dloss, backend), want):
        assert_close(got, w.astype(dtype), "mse at edges")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_empty_matches_torch(reduction, backend):
    x = np.zeros((0, 3), np.float32)
    dloss = np.ones(x.shape if reduction == "none" else (), np.float32)
    want_loss, _ = torch_mse(x, x, reduction, dloss)
    loss, dx = run_mse(x, x.copy(), reduction, dloss, backend)
    assert_close(loss, want_loss, "empty loss")
    assert_equal(dx, np.zeros_like(x))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_PARAMS)
def test_mse_backend_matches_reference(shape, reduction, dtype, backend, rng):
    require(backend, "loss", *MSE_FUNCS)
    x, target, dloss = mse_inputs(rng, shape, dtype, reduction, small_ints)
    inputs = snapshot(x, target, dloss)
    got = run_mse(x, target, reduction, dloss, backend)
    assert_unchanged((x, target, dloss), inputs)
    want = run_mse(x, target, reduction, dloss)
    assert_equal(got[0], want[0], f"loss on {backend}")  # sums of squares of small integers are exact
    # dividing by the element count rounds, and a backend may fold 2 / K differently
    (assert_close if reduction == "mean" else assert_equal)(got[1], want[1], f"dx on {backend}")
    for out in got:
        assert_fresh_output(out, dtype, x, target, dloss)
    x, target, dloss = mse_inputs(rng, shape, dtype, reduction)
    for name, g, w in zip(("loss", "dx"), run_mse(x, target, reduction, dloss, backend), run_mse(x, target, reduction, dloss)):
        assert_close(g, w, f"{name} on {backend}, random data")


def test_mse_backend_accepts_non_contiguous_and_read_only_inputs(backend, rng):
    require(backend, "loss", *MSE_FUNCS)
    x, target, dloss = mse_inputs(rng, (4, 3, 5), np.float32, "none")
    want = run_mse(x, target, "none", dloss)
    odd = [np.asfortranarray(x), np.repeat(target, 2, axis=2)[:, :, ::2], np.asfortranarray(dloss)]
    for a in odd:
        a.setflags(write=False)
    for name, got, w in zip(("loss", "dx"), run_mse(*odd[:2], "none", odd[2], backend), want):
        assert_close(got, w, f"{name} on {backend}, non-contiguous read-only")
        assert_fresh_output(got, np.float32, *odd)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_backend_reduces_a_long_batch(reduction, backend, rng):
    """Thousands of rows and elements: the GPU backend sums the per-row losses (MSE: per-block
    partial sums) in one block, in double, in a fixed order."""
    require(backend, "loss", *ce_funcs("index"), *ce_funcs("probs"), *MSE_FUNCS)
    for c in (CE("long_index", (700, 3), weighted=True, ignore_index=-100, label_smoothing=0.1),
              CE("long_probs", (700, 3), kind="probs", weighted=True, label_smoothing=0.1)):
        logits, target, weight = ce_inputs(c, rng, np.float32)
        dloss = ce_dloss(c, rng, np.float32, reduction)
        for name, got, want in zip(("loss", "dlogits"), run_ce(c, logits, target, weight, reduction, dloss, backend),
                                   run_ce(c, logits, target, weight, reduction, dloss)):
            assert_close(got, want, f"{c.id} {name} on {backend}")
    x, target, dloss = mse_inputs(rng, (50, 41), np.float32, reduction, small_ints)
    assert_equal(fastconv.mse_loss(x, target, reduction, backend=backend),  # sums of small integers are exact
                 fastconv.mse_loss(x, target, reduction), f"mse on {backend}")


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

L = np.zeros((3, 5), np.float32)
T = np.array([0, 4, 2])
P = np.full((3, 5), 0.2, np.float32)
D0 = np.ones((), np.float32)
CE_, CEB = fastconv.cross_entropy, fastconv.cross_entropy_backward
BAD = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("integer_logits", CE_, (L.astype(np.int32), T), {}, TypeError, "float32 or float64, got int32"),
    ("list_logits", CE_, (L.tolist(), T), {}, TypeError, "numpy.ndarray"),
    ("scalar_logits", CE_, (np.ones((), np.float32), np.array(0)), {}, ValueError, "at least 1 dims"),
    ("no_classes", CE_, (np.zeros((3, 0), np.float32), T), {}, ValueError, "at least one class"),
    ("target_out_of_range", CE_, (L, np.array([0, 5, 2])), {}, ValueError, "target value 5 is out of range for 5 classes"),
    ("target_negative", CE_, (L, np.array([0, -1, 2])), {}, ValueError, "target value -1"),
    ("target_out_of_range_backward", CEB, (D0, L, np.array([7, 0, 0])), {}, ValueError, "target value 7"),
    ("target_ignore_index_elsewhere", CE_, (L, np.array([0, -100, 2])), {"ignore_index": -1}, ValueError, "target value -100"),
    ("target_shape", CE_, (L, np.array([0, 1])), {}, ValueError, "expected target of shape (3,), got (2,)"),
    ("target_shape_spatial", CE_, (np.zeros((2, 5, 3), np.float32), np.zeros((2, 4), np.int64)), {}, ValueError, "(2, 3)"),
    ("target_bool", CE_, (L, np.array([True, False, True])), {}, TypeError, "got bool"),
    ("target_float16", CE_, (L, P.astype(np.float16)), {}, TypeError, "float16"),
    ("target_probs_dtype", CE_, (L, P.astype(np.float64)), {}, TypeError, "one dtype"),
    ("target_probs_shape", CE_, (L, P[:, :4]), {}, ValueError, "expected target of shape (3, 5)"),
    ("target_list", CE_, (L, [0, 1, 2]), {}, TypeError, "numpy.ndarray"),
    ("weight_shape", CE_, (L, T, np.ones(4, np.float32)), {}, ValueError, "expected weight of shape (5,)"),
    ("weight_2d", CE_, (L, T, np.ones((1, 5), np.float32)), {}, ValueError, "expected weight with 1 dims"),
    ("weight_dtype", CE_, (L, T, np.ones(5)), {}, TypeError, "one dtype"),
    ("weight_integer", CE_, (L, T, np.ones(5, np.int64)), {}, TypeError, "weight of dtype"),
    ("reduction", CE_, (L, T), {"reduction": "avg"}, ValueError, "reduction to be one of 'mean', 'sum', 'none', got 'avg'"),
    ("reduction_none_object", CEB, (D0, L, T), {"reduction": None}, ValueError, "reduction"),
    ("label_smoothing_above_1", CE_, (L, T), {"label_smoothing": 1.5}, ValueError, "label_smoothing <= 1.0, got 1.5"),
    ("label_smoothing_negative", CE_, (L, P), {"label_smoothing": -0.1}, ValueError, "label_smoothing >= 0.0"),
    ("label_smoothing_string", CE_, (L, T), {"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    ("ignore_index_float", CE_, (L, T), {"ignore_index": -100.0}, TypeError, "ignore_index"),
    ("dloss_shape_mean", CEB, (np.ones(3, np.float32), L, T), {}, ValueError, "expected dloss of shape (), got (3,)"),
    ("dloss_shape_none", CEB, (D0, L, T), {"reduction": "none"}, ValueError, "expected dloss of shape (3,), got ()"),
    ("dloss_dtype", CEB, (np.ones(()), L, T), {}, TypeError, "one dtype"),
    ("dloss_float", CEB, (1.0, L, T), {}, TypeError, "dloss to be a numpy.ndarray"),
    ("mse_shape", fastconv.mse_loss, (L, L[:2]), {}, ValueError, "expected target of shape (3, 5), got (2, 5)"),
    ("mse_dtype", fastconv.mse_loss, (L, L.astype(np.float64)), {}, TypeError, "one dtype"),
    ("mse_integer", fastconv.mse_loss, (T, T), {}, TypeError, "x of dtype"),
    ("mse_reduction", fastconv.mse_loss, (L, L), {"reduction": "mean "}, ValueError, "reduction"),
    ("mse_dloss_shape", fastconv.mse_loss_backward, (np.ones((3, 5), np.float32), L, L), {}, ValueError, "expected dloss of shape ()"),
    ("mse_dloss_shape_none", fastconv.mse_loss_backward, (D0, L, L), {"reduction": "none"}, ValueError, "expected dloss of shape (3, 5)"),
    ("mse_dloss_dtype", fastconv.mse_loss_backward, (np.ones(()), L, L), {}, TypeError, "one dtype"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(BAD))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


# --------------------------------------------------------------------------------------------
# properties: random configurations against PyTorch
# --------------------------------------------------------------------------------------------

@st.composite
def ce_configs(draw):
    C = draw(st.integers(1, 5))
    vector = draw(st.integers(0, 3)) == 0  # (C,) logits, one time in four
    shape = (C,) if vector else (draw(st.integers(0, 4)), C, *draw(st.lists(st.integers(1, 3), max_size=2)))
    kind = draw(st.sampled_from(["index", "probs"]))
    ignore = draw(st.sampled_from([None, -100, -7, 0])) if kind == "index" else None
    return CE("hypothesis", shape, kind, draw(st.booleans()), ignore,
              draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))), draw(st.sampled_from(REDUCTIONS))


@settings(max_examples=60, deadline=None)
@given(config=ce_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_cross_entropy_matches_torch(config, seed):
    c, reduction = config
    rng = np.random.default_rng(seed)
    logits, target, weight = ce_inputs(c, rng, np.float64)
    if c.kind == "index" and target.size and c.ignore_index is not None:  # ignore some, maybe all
        target[rng.random(target.shape) < 0.4] = c.ignore_index
    dloss = ce_dloss(c, rng, np.float64, reduction)
    want = torch_cross_entropy(logits, target, weight, reduction, dloss, **c.kwargs)
    for name in backends_implementing("loss", *ce_funcs(c.kind)):
        for got, w in zip(run_ce(c, logits, target, weight, reduction, dloss, name), want):
            assert_close(got, w, f"{c} {reduction} on {name}")


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 4), max_size=3).map(tuple), reduction=st.sampled_from(REDUCTIONS),
       seed=st.integers(0, 2**32 - 1))
def test_property_mse_matches_torch(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    x, target, dloss = mse_inputs(rng, shape, np.float64, reduction)
    want = torch_mse(x, target, reduction, dloss)
    for name in backends_implementing("loss", *MSE_FUNCS):
        for got, w in zip(run_mse(x, target, reduction, dloss, name), want):
            assert_close(got, w, f"{shape} {reduction} on {name}")
