"""fastconv.nn optimizers and learning-rate schedules: hand-computed steps, then torch.optim and
torch.optim.lr_scheduler on the same parameters and gradients."""

import math

import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import Parameter


def _param(values, dtype=np.float64):
    return Parameter(np.array(values, dtype=dtype))


def _steps(optimizer, param, grads):
    """Run one step per gradient; the parameter's value after each."""
    values = []
    for g in grads:
        param.grad = np.array(g, dtype=param.dtype)
        optimizer.step()
        values.append(param.data.copy())
    return values


# --------------------------------------------------------------------------------------------
# hand-computed steps: two steps on one scalar, each formula written out
# --------------------------------------------------------------------------------------------

def test_sgd_plain_and_weight_decay_by_hand():
    p = _param([2.0])
    (after,) = _steps(nn.SGD([p], lr=0.1, weight_decay=0.5), p, [[1.0]])
    assert after == pytest.approx([2.0 - 0.1 * (1.0 + 0.5 * 2.0)])  # g + wd * p = 2, 2 - 0.2


def test_sgd_momentum_and_nesterov_by_hand():
    p = _param([1.0])
    first, second = _steps(nn.SGD([p], lr=0.1, momentum=0.9), p, [[1.0], [2.0]])
    assert first == pytest.approx([0.9])  # buf = g = 1 on the first step
    assert second == pytest.approx([0.9 - 0.1 * (0.9 * 1.0 + 2.0)])  # buf = 2.9

    p = _param([1.0])
    first, second = _steps(nn.SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [[1.0], [2.0]])
    assert first == pytest.approx([1.0 - 0.1 * (1.0 + 0.9 * 1.0)])  # g + momentum * buf = 1.9
    assert second == pytest.approx([0.81 - 0.1 * (2.0 + 0.9 * 2.9)])

    p = _param([1.0])
    _, second = _steps(nn.SGD([p], lr=0.1, momentum=0.9, dampening=0.5), p, [[1.0], [2.0]])
    assert second == pytest.approx([0.9 - 0.1 * (0.9 * 1.0 + 0.5 * 2.0)])  # first buffer undampened


def test_adagrad_by_hand():
    p = _param([1.0])
    first, second = _steps(nn.Adagrad([p], lr=0.1, lr_decay=0.5, initial_accumulator_value=1.0, eps=0.0),
                           p, [[1.0], [2.0]])
    assert first == pytest.approx([1.0 - 0.1 * 1.0 / math.sqrt(2.0)])  # sum = 1 + 1
    # sum = 2 + 4; the rate decays to lr / (1 + 1 * 0.5) on step 2
    assert second == pytest.approx([first[0] - 0.1 / 1.5 * 2.0 / math.sqrt(6.0)])


def test_rmsprop_by_hand():
    p = _param([1.0])
    first, second = _steps(nn.RMSprop([p], lr=0.01, alpha=0.5, eps=0.0), p, [[2.0], [1.0]])
    assert first == pytest.approx([1.0 - 0.01 * 2.0 / math.sqrt(0.5 * 4.0)])  # v = 2
    assert second == pytest.approx([first[0] - 0.01 * 1.0 / math.sqrt(0.5 * 2.0 + 0.5 * 1.0)])  # v = 1.5

    p = _param([1.0])
    first, second = _steps(nn.RMSprop([p], lr=0.01, alpha=0.5, eps=0.0, centered=True, momentum=0.5),
                           p, [[2.0], [1.0]])
    # step 1: v = 2, m = 1, avg = sqrt(2 - 1) = 1, buf = 2
    assert first == pytest.approx([1.0 - 0.01 * 2.0])
    # step 2: v = 1.5, m = 1, avg = sqrt(0.5), buf = 0.5 * 2 + 1 / sqrt(0.5)
    assert second == pytest.approx([first[0] - 0.01 * (1.0 + 1.0 / math.sqrt(0.5))])


def test_adam_by_hand():
    p = _param([1.0])
    first, second = _steps(nn.Adam([p], lr=0.1, betas=(0.5, 0.75), eps=0.0), p, [[2.0], [1.0]])
    # step 1 after bias correction: m_hat = g, v_hat = g^2, so the step is lr * sign(g)
    assert first == pytest.approx([0.9])
    m = 0.5 * (0.5 * 2.0) + 0.5 * 1.0  # step 1 left m = 0.5 * 2
    v = 0.75 * (0.25 * 4.0) + 0.25 * 1.0  # step 1 left v = 0.25 * 4
    m_hat, v_hat = m / (1 - 0.5 ** 2), v / (1 - 0.75 ** 2)
    assert second == pytest.approx([0.9 - 0.1 * m_hat / math.sqrt(v_hat)])


def test_step_skips_parameters_without_gradient_and_leaves_grad_alone():
    a, b = _param([1.0, 2.0]), _param([3.0])
    opt = nn.SGD([("a", a), ("b", b)], lr=1.0, weight_decay=0.1)
    a.grad = np.array([1.0, 1.0])
    opt.step()
    assert a.data == pytest.approx([1.0 - 1.1, 2.0 - 1.2]) and b.data == pytest.approx([3.0])
    assert a.grad == pytest.approx([1.0, 1.0])  # weight decay did not leak into the stored gradient
    opt.zero_grad()
    assert a.grad is None and b.grad is None


# --------------------------------------------------------------------------------------------
# against torch.optim: several steps with the same random gradients
# --------------------------------------------------------------------------------------------

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.5, weight_decay=0.01, eps=1e-6)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_torch_optim(name, kwargs, rng):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (5,)]
    init = [rng.standard_normal(s) for s in shapes]
    ours = [Parameter(v.copy()) for v in init]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in init]
    opt = getattr(nn, name)([(f"p{i}", p) for i, p in enumerate(ours)], **kwargs)
    ref = getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(6):
        grads = [rng.standard_normal(s) for s in shapes]
        for p, t, g in zip(ours, theirs, grads):
            p.grad = g.copy()
            t.grad = torch.tensor(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_float32_parameters_stay_float32():
    p = _param([1.0, -1.0], np.float32)
    for cls in (nn.SGD, nn.Adagrad, nn.RMSprop, nn.Adam):
        opt = cls([p], lr=0.01, weight_decay=0.1)
        p.grad = np.array([0.5, 0.25], np.float32)
        opt.step()
        assert p.data.dtype == np.float32


def test_optimizer_takes_a_module_and_its_names():
    model = nn.Sequential(nn.Linear(3, 2, rng=0), nn.ReLU(), nn.Linear(2, 1, rng=1))
    opt = nn.Adam(model, lr=0.1)
    assert [name for name, _ in opt.named_params] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    before = model[0].weight.data.copy()
    model[0].weight.grad = np.ones((2, 3), np.float32)
    opt.step()
    assert model[0].weight.data == pytest.approx(before - 0.1, abs=1e-6)  # Adam's first step: lr * sign(g)
    assert set(opt.state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert opt.state["0.weight"]["step"] == 1 and "step" not in opt.state["2.bias"]


@pytest.mark.parametrize("make, error, words", [
    (lambda p: nn.SGD([p], lr=-0.1), ValueError, ["SGD", "lr", "-0.1"]),
    (lambda p: nn.SGD([p], lr=0.1, nesterov=True), ValueError, ["SGD", "Nesterov", "momentum=0.0"]),
    (lambda p: nn.SGD([p], lr=0.1, nesterov=1), TypeError, ["SGD", "nesterov", "1"]),
    (lambda p: nn.Adam([p], betas=(0.9, 1.0)), ValueError, ["Adam", "betas", "1.0"]),
    (lambda p: nn.Adam([p], betas=0.9), TypeError, ["Adam", "betas", "0.9"]),
    (lambda p: nn.RMSprop([p], alpha=1.5), ValueError, ["RMSprop", "alpha", "1.5"]),
    (lambda p: nn.Adagrad([p], lr="fast"), TypeError, ["Adagrad", "lr", "fast"]),
    (lambda p: nn.SGD([p.data], lr=0.1), TypeError, ["SGD", "ndarray"]),
    (lambda p: nn.SGD([], lr=0.1), ValueError, ["SGD", "empty"]),
    (lambda p: nn.SGD([p, p], lr=0.1), ValueError, ["SGD", "more than once"]),
])
def test_bad_settings_raise_naming_the_optimizer(make, error, words):
    with pytest.raises(error) as info:
        make(_param([1.0]))
    for word in words:
        assert word in str(info.value)


def test_gradient_of_the_wrong_shape_names_the_parameter():
    p = _param([1.0, 2.0])
    opt = nn.SGD([("fc.weight", p)], lr=0.1)
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"SGD: gradient of 'fc.weight' has shape \(3,\), expected \(2,\)"):
        opt.step()


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------

SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.8)),
    ("InverseTimeDecay", dict(decay=0.25)),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=[n for n, _ in SCHEDULES])
def test_schedules_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    p = _param([1.0])
    opt = nn.SGD([p], lr=0.1)
    schedule = getattr(nn, name)(opt, **kwargs)
    t = torch.zeros(1, requires_grad=True)
    ref_opt = torch.optim.SGD([t], lr=0.1)
    if name == "InverseTimeDecay":  # torch has no class for 1/t decay: it is a LambdaLR
        ref = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda epoch: 1 / (1 + kwargs["decay"] * epoch))
    else:
        ref = getattr(torch.optim.lr_scheduler, name)(ref_opt, **kwargs)
    ours, theirs = [opt.lr], [ref_opt.param_groups[0]["lr"]]
    for _ in range(10):
        ref_opt.step()  # torch warns when the schedule steps before the optimizer
        ref.step()
        schedule.step()
        ours.append(opt.lr)
        theirs.append(ref.get_last_lr()[0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_schedule_closed_forms_by_hand():
    opt = nn.SGD([_param([1.0])], lr=1.0)
    step = nn.StepLR(opt, step_size=2, gamma=0.1)
    assert [step.step() for _ in range(5)] == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])
    opt.lr = 2.0
    inverse = nn.InverseTimeDecay(opt, decay=1.0)
    assert [inverse.step() for _ in range(3)] == pytest.approx([1.0, 2 / 3, 0.5])


def test_schedule_bad_settings():
    opt = nn.SGD([_param([1.0])], lr=1.0)
    with pytest.raises(ValueError, match="StepLR: expected step_size >= 1, got 0"):
        nn.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="ExponentialLR: expected gamma > 0.0, got 0.0"):
        nn.ExponentialLR(opt, gamma=0)
    with pytest.raises(TypeError, match="InverseTimeDecay: expected an Optimizer, got list"):
        nn.InverseTimeDecay([], decay=1.0)
