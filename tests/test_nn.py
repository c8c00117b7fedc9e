"""fastconv.nn layers: gradients against finite differences, semantics against torch.nn, the same
loss curve on every backend, state save/load, and errors that name the layer."""

from collections import OrderedDict

import numpy as np
import pytest

from fastconv import _dispatch, nn


def _rand(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)  # shape


# --------------------------------------------------------------------------------------------
# finite differences (float64, reference backend)
# --------------------------------------------------------------------------------------------

def _fd_network(rng):
    """Every layer kind in one stack: x (4, 2, 7, 6) -> logits (4, 5)."""
    return nn.Sequential(
        nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), rng=rng, dtype=np.float64),  # (4, 4, 4, 5)
        nn.BatchNorm2d(4, dtype=np.float64),
        nn.ELU(0.7),
        nn.ResidualBlock(4, 4, rng=rng, dtype=np.float64),  # identity shortcut
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),  # (4, 4, 5, 6)
        nn.ResidualBlock(4, 6, stride=2, rng=rng, dtype=np.float64),  # (4, 6, 3, 3), downsample shortcut
        nn.MaxPool2d(2, stride=1),  # (4, 6, 2, 2)
        nn.AdaptiveAvgPool2d((1, 2)),  # (4, 6, 1, 2)
        nn.Flatten(),  # (4, 12)
        nn.Linear(12, 8, rng=rng, dtype=np.float64),
        nn.GELU(),
        nn.Dropout(0.3),
        nn.Linear(8, 5, rng=rng, dtype=np.float64),
        nn.Softplus(beta=2.0),
    ).set_backend("reference")


def test_layer_stack_gradients_match_finite_differences(rng):
    model = _fd_network(rng)
    dropout = model[11]
    criterion = nn.CrossEntropyLoss(backend="reference")
    x = _rand(rng, 4, 2, 7, 6)
    target = rng.integers(0, 5, size=4)

    def loss_at(x):
        dropout.rng = np.random.default_rng(1234)  # the same mask on every evaluation
        return float(criterion(model(x), target))

    here = loss_at(x)
    model.zero_grad()
    dx = model.backward(criterion.backward())  # (4, 2, 7, 6)
    grads = model.grads()
    assert set(grads) == {name for name, _ in model.named_parameters()} and len(grads) == 23

    def slopes(flat, i, step):
        """The central difference at flat[i], and whether the two one-sided ones agree: ELU(0.7),
        ReLU and max pooling have kinks, and a step that straddles one (their slopes then disagree;
        on smooth ground they differ by about step * curvature) has no derivative to compare with."""
        saved = flat[i]
        flat[i] = saved + step
        up = loss_at(x)
        flat[i] = saved - step
        down = loss_at(x)
        flat[i] = saved
        right, left = (up - here) / step, (here - down) / step
        return (up - down) / (2 * step), abs(right - left) <= 1e-3 * max(abs(right), abs(left), 1e-3)

    def check(array, analytic, label):
        flat = array.reshape(-1)  # a view: perturbing it perturbs the model's array
        picks = rng.choice(flat.size, size=min(flat.size, 6), replace=False)
        checked = 0
        for i in picks:
            # a kink within 1e-6 of the point (about 1 run in 160) is rarely within 1e-8 of it
            for step in (1e-6, 1e-8):
                numeric, smooth = slopes(flat, i, step)
                if smooth:
                    assert analytic.reshape(-1)[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (label, i, step)
                    checked += 1
                    break
        assert 2 * checked >= len(picks), f"{label}: {len(picks) - checked} of {len(picks)} picks at a kink"

    check(x, dx, "x")
    for name, param in model.named_parameters():
        check(param.data, grads[name], name)


@pytest.mark.parametrize("cls", nn.ACTIVATIONS, ids=lambda c: c.__name__)
def test_activation_layers_match_torch_and_finite_differences(cls, rng):
    torch = pytest.importorskip("torch")
    layer = cls(backend="reference")
    x = _rand(rng, 3, 7)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink for the difference quotient
    dy = _rand(rng, 3, 7)
    y = layer(x)
    dx = layer.backward(dy)
    t = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn, cls.__name__)()(t)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-12, atol=1e-14)
    eps = 1e-6
    numeric = ((layer(x + eps) - layer(x - eps)) * dy).reshape(-1) / (2 * eps)  # elementwise: one pass
    np.testing.assert_allclose(dx.reshape(-1), numeric, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------------
# semantics against torch.nn
# --------------------------------------------------------------------------------------------

def _torch_pair(torch):
    """The same architecture in torch.nn and fastconv.nn (float64)."""
    t = torch.nn
    theirs = t.Sequential(t.Conv2d(3, 5, 3, padding=1), t.BatchNorm2d(5), t.ReLU(), t.MaxPool2d(2),
                          t.Conv2d(5, 4, (3, 2), stride=(1, 2), groups=1), t.Sigmoid(), t.AvgPool2d(2),
                          t.Flatten(), t.Linear(4, 6), t.LeakyReLU(0.2), t.Linear(6, 3)).double()
    ours = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(5, 4, (3, 2), stride=(1, 2)), nn.Sigmoid(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4, 6), nn.LeakyReLU(0.2), nn.Linear(6, 3)).astype(np.float64)
    return theirs, ours


def test_sequential_matches_torch_forward_backward_and_running_stats(rng):
    torch = pytest.importorskip("torch")
    theirs, ours = _torch_pair(torch)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(state)  # the same keys, in the same order
    ours.load_state_dict(state)
    ours.set_backend("reference")
    x = _rand(rng, 4, 3, 8, 10)
    dy = _rand(rng, 4, 3)
    for step in range(2):  # the second step starts from updated running statistics
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        ty.backward(torch.tensor(dy))
        y = ours(x)
        ours.zero_grad()
        dx = ours.backward(dy)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        for name, param in theirs.named_parameters():
            np.testing.assert_allclose(ours.grads()[name], param.grad.numpy(), rtol=1e-10, atol=1e-12)
            param.grad = None
    for name, value in theirs.state_dict().items():  # running_mean, running_var, num_batches_tracked
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-12)
    assert int(ours[1].num_batches_tracked) == 2
    theirs.eval()
    ours.eval()
    assert not any(m.training for m in ours.modules())
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_residual_block_matches_a_torch_basic_block(rng):
    torch = pytest.importorskip("torch")
    t = torch.nn

    class BasicBlock(t.Module):  # torchvision's BasicBlock, without importing torchvision
        def __init__(self):
            super().__init__()
            self.conv1 = t.Conv2d(3, 6, 3, 2, padding=1, bias=False)
            self.bn1 = t.BatchNorm2d(6)
            self.conv2 = t.Conv2d(6, 6, 3, 1, padding=1, bias=False)
            self.bn2 = t.BatchNorm2d(6)
            self.downsample = t.Sequential(t.Conv2d(3, 6, 1, 2, bias=False), t.BatchNorm2d(6))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + self.downsample(x))

    theirs = BasicBlock().double()
    ours = nn.ResidualBlock(3, 6, stride=2, dtype=np.float64, backend="reference")
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x, dy = _rand(rng, 2, 3, 7, 6), _rand(rng, 2, 6, 4, 3)
    tx = torch.tensor(x, requires_grad=True)
    theirs(tx).backward(torch.tensor(dy))
    y = ours(x)
    np.testing.assert_allclose(y, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, param in theirs.named_parameters():
        np.testing.assert_allclose(ours.grads()[name], param.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_batchnorm_without_running_stats_uses_batch_statistics_in_eval(rng):
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm2d(3, track_running_stats=False, affine=False, dtype=np.float64).eval()
    theirs = torch.nn.BatchNorm2d(3, track_running_stats=False, affine=False).double().eval()
    x = _rand(rng, 4, 3, 2, 5)
    assert ours.state_dict() == {}
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make, fan_in", [
    (lambda rng: nn.Conv2d(16, 32, 5, rng=rng), 16 * 25),
    (lambda rng: nn.Conv2d(8, 64, (3, 2), groups=4, rng=rng), 2 * 6),
    (lambda rng: nn.Linear(300, 200, rng=rng), 300),
])
def test_default_init_is_torchs_kaiming_uniform(make, fan_in):
    torch = pytest.importorskip("torch")
    layer = make(np.random.default_rng(0))
    bound = 1 / np.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3) * sqrt(3 / fan_in)
    w = layer.weight.data
    assert w.dtype == np.float32 and layer.bias.data.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.97 * bound
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)  # U(-b, b) has std b / sqrt(3)
    assert np.abs(layer.bias.data).max() <= bound
    # torch's own layer, same shape: the same bound, so the same distribution
    torch.manual_seed(0)
    t = torch.nn.Conv2d if isinstance(layer, nn.Conv2d) else torch.nn.Linear
    args = ((layer.in_channels, layer.out_channels, layer.kernel_size) if t is torch.nn.Conv2d
            else (layer.in_features, layer.out_features))
    ref = t(*args, groups=layer.groups) if t is torch.nn.Conv2d else t(*args)
    assert ref.weight.shape == w.shape
    assert np.abs(ref.weight.detach().numpy()).max() == pytest.approx(np.abs(w).max(), rel=0.03)


def test_init_is_reproducible_and_dtype_configurable():
    a, b = nn.Linear(5, 4, rng=3), nn.Linear(5, 4, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, nn.Linear(5, 4, rng=4).weight.data)
    c = nn.Conv2d(2, 3, 3, dtype=np.float64, bias=False)
    assert c.weight.dtype == np.float64 and c.bias is None
    assert [name for name, _ in c.named_parameters()] == ["weight"]


def test_dropout_train_and_eval(rng):
    p = 0.25
    layer = nn.Dropout(p, rng=5, backend="reference")
    x = rng.uniform(1, 2, size=(100, 100)).astype(np.float32)  # no zeros: a zero in y means dropped
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 0.02
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    dy = np.ones_like(x)
    dx = layer.backward(dy)  # the forward's mask
    np.testing.assert_array_equal(dx != 0, kept)
    np.testing.assert_allclose(dx[kept], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(nn.Dropout(p, rng=5, backend="reference")(x), y)  # same seed, same mask
    assert not np.array_equal(layer(x), y)  # the next forward draws a new mask
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_losses_match_torch(rng):
    torch = pytest.importorskip("torch")
    logits, target = _rand(rng, 6, 4), rng.integers(0, 4, size=6)
    weight = rng.uniform(0.5, 2, size=4)
    ours = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), label_smoothing=0.1)(t, torch.tensor(target))
    ref.backward()
    assert float(ours(logits, target)) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(ours.backward(), t.grad.numpy(), rtol=1e-10, atol=1e-14)

    x, goal = _rand(rng, 3, 5), _rand(rng, 3, 5)
    mse = nn.MSELoss(reduction="sum")
    t = torch.tensor(x, requires_grad=True)
    ref = torch.nn.MSELoss(reduction="sum")(t, torch.tensor(goal))
    ref.backward()
    assert float(mse(x, goal)) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(mse.backward(), t.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(nn.MSELoss("none")(x, goal), (x - goal) ** 2)


# --------------------------------------------------------------------------------------------
# the same loss curve on every backend
# --------------------------------------------------------------------------------------------

def _implements(backend, family, func):
    return _dispatch._function(backend, family, func) is not None


def _loss_curve(backend, make, rng_seed, steps=4):
    """Losses of ``steps`` SGD steps (momentum, weight decay) on one fixed batch."""
    data = np.random.default_rng(rng_seed)
    x = data.standard_normal((8, 1, 8, 8)).astype(np.float32)  # (8, 1, 8, 8)
    target = data.integers(0, 10, size=8)  # (8,)
    model = make(np.random.default_rng(rng_seed + 1)).set_backend(backend)
    # Cython has no loss kernels: its loss runs on the reference, named explicitly (no silent fallback)
    loss_backend = backend if _implements(backend, "loss", "cross_entropy_index_forward") else "reference"
    criterion = nn.CrossEntropyLoss(backend=loss_backend)
    opt = nn.SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
    losses = []
    for _ in range(steps):
        losses.append(float(criterion(model(x), target)))
        opt.zero_grad()
        model.backward(criterion.backward())
        opt.step()
    return losses, model


def _plain_net(rng):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),  # (8, 4, 4, 4)
                         nn.Conv2d(4, 6, (2, 3), rng=rng), nn.Tanh(), nn.AvgPool2d((1, 2)),  # (8, 6, 3, 1)
                         nn.Flatten(), nn.Linear(18, 10, rng=rng))


def _norm_net(rng):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(4), nn.SiLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10, rng=rng))


def test_same_loss_curve_on_every_backend(backend):
    ref, ref_model = _loss_curve("reference", _plain_net, 11)
    ours, model = _loss_curve(backend, _plain_net, 11)
    assert ref[-1] < ref[0]  # it trains
    np.testing.assert_allclose(ours, ref, rtol=2e-4)
    for name, value in ref_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value, rtol=1e-3, atol=1e-5, err_msg=name)


def test_same_loss_curve_with_batch_norm_on_backends_that_have_it(backend):
    if not _implements(backend, "norm", "batch_norm_stats"):
        with pytest.raises(NotImplementedError, match="does not implement norm"):
            _loss_curve(backend, _norm_net, 12)  # a named backend never falls back to another
        return
    ref, _ = _loss_curve("reference", _norm_net, 12)
    ours, model = _loss_curve(backend, _norm_net, 12)
    assert ref[-1] < ref[0]
    np.testing.assert_allclose(ours, ref, rtol=2e-4)
    assert int(model[1].num_batches_tracked) == 4


# --------------------------------------------------------------------------------------------
# modules: names, modes, state
# --------------------------------------------------------------------------------------------

def _small_model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(OrderedDict([
        ("stem", nn.Conv2d(1, 3, 3, padding=1, rng=rng)),
        ("block", nn.ResidualBlock(3, 4, stride=2, rng=rng)),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(16, 2, rng=rng)),
    ]))


def test_names_modes_backend_and_grads():
    model = _small_model()
    names = [name for name, _ in model.named_parameters()]
    assert names[:4] == ["stem.weight", "stem.bias", "block.conv1.weight", "block.bn1.weight"]
    assert "block.downsample.1.bias" in names and names[-1] == "fc.bias"
    assert model[1] is model.block
    assert isinstance(model[1:3], nn.Sequential) and len(model[1:3]) == 2
    model.eval()
    assert not model.block.bn1.training
    model.train()
    assert all(m.training for m in model.modules())
    model.set_backend("reference")
    assert {m.backend for m in model.modules()} == {"reference"}
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        model.set_backend("gpu")
    x = np.random.default_rng(1).random((2, 1, 4, 4)).astype(np.float32)  # (2, 1, 4, 4)
    dy = np.ones((2, 2), np.float32)
    model(x)
    model.backward(dy)
    first = {k: v.copy() for k, v in model.grads().items()}
    model(x)
    model.backward(dy)  # a second backward without zero_grad accumulates, as in PyTorch
    for name, g in model.grads().items():
        np.testing.assert_allclose(g, 2 * first[name], rtol=1e-5, atol=1e-6)
    model.zero_grad()
    assert all(g is None for g in model.grads().values())
    model.astype(np.float64)
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert model(x.astype(np.float64)).dtype == np.float64


def test_save_load_round_trip(tmp_path):
    model = _small_model(0)
    x = np.random.default_rng(2).random((3, 1, 4, 4)).astype(np.float32)  # (3, 1, 4, 4)
    opt = nn.SGD(model, lr=0.1)
    model(x)
    model.backward(np.ones((3, 2), np.float32))
    opt.step()  # parameters and running statistics away from their initial values
    path = model.save(tmp_path / "weights")
    assert path.endswith("weights.npz")
    other = _small_model(1)
    arrays = [p.data for p in other.parameters()]
    other.load(path)
    assert all(p.data is a for p, a in zip(other.parameters(), arrays))  # loaded in place
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)
    assert int(other.block.bn1.num_batches_tracked) == 1
    model.eval()
    other.eval()
    np.testing.assert_array_equal(other(x), model(x))


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    model = _small_model()
    before = model.state_dict()
    state = dict(before)
    state["fc.weight"] = np.zeros((3, 16), np.float32)
    state["stem.bias"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"fc.weight has shape \(3, 16\), expected \(2, 16\)"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.stem.bias.data, before["stem.bias"])  # nothing written
    del state["fc.weight"]
    state["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['fc.weight'\], unexpected keys \['extra'\]"):
        model.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# bad input names the layer and the values
# --------------------------------------------------------------------------------------------

f32 = np.float32
ERRORS = [
    (lambda: nn.Conv2d(0, 4, 3), ValueError, ["Conv2d", "in_channels >= 1", "got 0"]),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, ["Conv2d", "out_channels=6", "groups=4"]),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, ["Conv2d", "'same'", "(2, 2)"]),
    (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, ["Conv2d", "float32 or float64", "int32"]),
    (lambda: nn.Conv2d(3, 4, 3, rng="seed"), TypeError, ["Conv2d", "rng", "str"]),
    (lambda: nn.Conv2d(3, 4, 3)(np.zeros((2, 3, 8), f32)), ValueError,
     ["Conv2d(3, 4, kernel_size=(3, 3)", "4 dims (N, C_in, H, W)", "(2, 3, 8)"]),
    (lambda: nn.Conv2d(3, 4, 3)(np.zeros((2, 5, 8, 8), f32)), ValueError,
     ["Conv2d(3, 4", "size 3 in dim 1", "(2, 5, 8, 8)"]),
    (lambda: nn.Conv2d(3, 4, 3)(np.zeros((2, 3, 8, 8))), TypeError, ["Conv2d(3, 4", "float32", "float64"]),
    (lambda: nn.Conv2d(3, 4, 3)([[1.0]]), TypeError, ["Conv2d(3, 4", "numpy.ndarray", "list"]),
    (lambda: nn.Conv2d(3, 4, 3).backward(np.zeros((1, 4, 1, 1), f32)), RuntimeError,
     ["Conv2d(3, 4", "without a forward"]),
    (lambda: nn.Linear(10, 5)(np.zeros((2, 7), f32)), ValueError, ["Linear(in_features=10", "size 10 in dim 1", "(2, 7)"]),
    (lambda: nn.Linear(10, 5, bias=1), TypeError, ["Linear", "bias", "1"]),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError, ["MaxPool2d", "padding (2, 2)", "half the kernel"]),
    (lambda: nn.AvgPool2d(0), ValueError, ["AvgPool2d", "kernel_size >= 1", "got 0"]),
    (lambda: nn.MaxPool2d(2)(np.zeros((4, 4), f32)), ValueError,
     ["MaxPool2d(kernel_size=2, stride=2", "4 dims", "(4, 4)"]),
    (lambda: nn.BatchNorm2d(3)(np.zeros((2, 4, 5, 5), f32)), ValueError,
     ["BatchNorm2d(3", "size 3 in dim 1", "(2, 4, 5, 5)"]),
    (lambda: nn.BatchNorm2d(3, momentum=2), ValueError, ["BatchNorm2d", "momentum <= 1.0", "2.0"]),
    (lambda: nn.Dropout(1.5), ValueError, ["Dropout", "p <= 1.0", "1.5"]),
    (lambda: nn.LeakyReLU(0.1, negative_slope=0.2), TypeError, ["LeakyReLU", "negative_slope", "both"]),
    (lambda: nn.GELU(approximate="fast"), ValueError, ["GELU", "approximate", "'fast'"]),
    (lambda: nn.Softplus(beta=0), ValueError, ["Softplus", "beta != 0"]),
    (lambda: nn.ReLU(1), TypeError, ["ReLU", "at most 0 positional"]),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, ["Sequential", "str", "'1'"]),
    (lambda: setattr(nn.Linear(2, 2), "weight", np.zeros((2, 2))), TypeError, ["Linear", "weight is a parameter"]),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError, ["CrossEntropyLoss", "reduction", "'avg'"]),
    (lambda: nn.Flatten()(np.zeros(3, np.int64)), TypeError, ["Flatten(start_dim=1", "float32 or float64", "int64"]),
    (lambda: nn.Tanh()(np.zeros(3, np.float16)), TypeError, ["Tanh()", "float16"]),
]


@pytest.mark.parametrize("make, error, words", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_bad_input_names_the_layer_and_values(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
