"""fastconv.torch drop-in modules, patch(), and a small ResNet trained with and without the patch;
one torch.compile test."""

import copy
import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastconv
import fastconv.torch as ft

nn = torch.nn
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


@pytest.fixture
def seed():
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    print(f"torch seed: {seed}")
    return seed


# (torch.nn class, constructor args, input shape): asymmetric configurations on purpose
MODULE_CASES = {
    "conv_asym": (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                                  padding=(1, 2), dilation=(1, 2), groups=2), (2, 4, 9, 7)),
    "conv_same_nobias": (nn.Conv2d, dict(in_channels=3, out_channels=5, kernel_size=3, padding="same",
                                         bias=False), (2, 3, 6, 5)),
    "linear": (nn.Linear, dict(in_features=7, out_features=3), (2, 4, 7)),
    "linear_nobias": (nn.Linear, dict(in_features=5, out_features=2, bias=False), (3, 5)),
    "maxpool": (nn.MaxPool2d, dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2),
                                   ceil_mode=True), (2, 3, 7, 9)),
    "avgpool": (nn.AvgPool2d, dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1),
                                   count_include_pad=False), (2, 3, 7, 9)),
    "adaptive": (nn.AdaptiveAvgPool2d, dict(output_size=(3, None)), (2, 3, 7, 9)),
    "conv1d": (nn.Conv1d, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2,
                               dilation=2, groups=2), (2, 4, 13)),
    "conv1d_same_nobias": (nn.Conv1d, dict(in_channels=3, out_channels=2, kernel_size=4, padding="same",
                                           bias=False), (3, 3, 7)),
    "conv_transpose": (nn.ConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2),
                                                stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                                                groups=2, dilation=(1, 2)), (2, 4, 5, 3)),
    "batchnorm": (nn.BatchNorm2d, dict(num_features=3, momentum=0.2), (4, 3, 5, 2)),
    "batchnorm_bare": (nn.BatchNorm2d, dict(num_features=4, affine=False, track_running_stats=False),
                       (2, 4, 3, 3)),
}


def make_pair(case, dtype):
    """The torch.nn module and its fastconv.torch drop-in, with the same parameters."""
    cls, kwargs, shape = MODULE_CASES[case]
    ours = ft.modules.DROP_INS[cls](**kwargs)
    theirs = cls(**kwargs)
    theirs.load_state_dict(ours.state_dict())
    return theirs.to(dtype), ours.to(dtype), shape


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own Conv1d warns, not ours
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MODULE_CASES)
def test_modules_match_torch_nn_outputs_and_gradients(case, dtype, seed):
    theirs, ours, shape = make_pair(case, dtype)
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ys = [theirs(xs[0]), ours(xs[1])]
    assert ys[1].grad_fn.name().startswith("GeneratedBackwardFor_fastconv")  # it ran on fastconv
    torch.testing.assert_close(ys[1], ys[0])
    dy = torch.randn_like(ys[0])
    for y in ys:
        y.backward(dy)
    torch.testing.assert_close(xs[1].grad, xs[0].grad)
    for (name, p), (_, q) in zip(theirs.named_parameters(), ours.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, p), (_, q) in zip(theirs.named_buffers(), ours.named_buffers()):  # running statistics
        torch.testing.assert_close(q, p, msg=name)


@pytest.mark.parametrize("case", MODULE_CASES)
def test_state_dict_keys_and_loading_in_both_directions(case):
    cls, kwargs, _ = MODULE_CASES[case]
    theirs, ours = cls(**kwargs), ft.modules.DROP_INS[cls](**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert isinstance(ours, cls)
    ours.load_state_dict(theirs.state_dict())  # strict: same keys, same shapes
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    fresh = cls(**kwargs)
    fresh.load_state_dict(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


@pytest.mark.parametrize("cls", list(ft.modules.DROP_INS), ids=lambda c: c.__name__)
def test_constructor_signatures_are_torch_nn_plus_backend(cls):
    ours = inspect.signature(ft.modules.DROP_INS[cls])
    theirs = inspect.signature(cls)
    params = list(ours.parameters.values())
    spelled = lambda ps: [(p.name, p.kind, p.default) for p in ps]
    assert spelled(params[:-1]) == spelled(theirs.parameters.values())
    assert params[-1].name == "backend" and params[-1].kind is inspect.Parameter.KEYWORD_ONLY
    assert params[-1].default == "auto"


def test_module_backend_and_unsupported_configurations():
    conv = ft.Conv2d(2, 3, 3, backend="reference")
    assert conv.backend == "reference" and "backend='reference'" in repr(conv)
    assert "backend" not in conv.state_dict()
    with pytest.raises(ValueError, match=r"fastconv.torch.Conv2d: unsupported configuration: padding_mode='reflect'"):
        ft.Conv2d(2, 3, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"fastconv.torch.Linear: unsupported configuration: .*torch.float16"):
        ft.Linear(2, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        ft.MaxPool2d(2, backend="gpu")
    _, indices = ft.MaxPool2d(2, return_indices=True)(torch.arange(16.0).reshape(1, 1, 4, 4))
    assert torch.equal(indices, torch.tensor([[[[5, 7], [13, 15]]]]))


def test_conv_transpose_output_size_picks_output_padding_as_torch(seed):
    theirs = nn.ConvTranspose2d(3, 2, 3, stride=(2, 3), padding=1)
    ours = ft.ConvTranspose2d(3, 2, 3, stride=(2, 3), padding=1)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(seed))
    for size in [(8, 13), (7, 15), [2, 2, 8, 14]]:
        y = ours(x, output_size=size)
        assert y.shape[-2:] == tuple(size[-2:])
        torch.testing.assert_close(y, theirs(x, output_size=size))
    with pytest.raises(ValueError, match="requested an output size of"):  # PyTorch's own check
        ours(x, output_size=(9, 13))


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
def test_batchnorm_running_statistics_follow_torch_through_training_and_eval(momentum, track, seed):
    """Several training steps then eval: outputs, gradients, running_mean, running_var and
    num_batches_tracked as torch.nn.BatchNorm2d's (momentum=None: the cumulative average)."""
    kwargs = dict(num_features=3, momentum=momentum, track_running_stats=track, dtype=torch.float64)
    theirs, ours = nn.BatchNorm2d(**kwargs), ft.BatchNorm2d(**kwargs)
    with torch.no_grad():  # non-trivial affine parameters
        theirs.weight.uniform_(0.5, 1.5), theirs.bias.uniform_(-1, 1)
    ours.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(seed)
    for step, training in enumerate([True, True, True, False, True, False]):
        theirs.train(training), ours.train(training)
        x = torch.randn(4, 3, 5, 6, dtype=torch.float64, generator=gen) * (step + 1) + step
        xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        ys = [theirs(xs[0]), ours(xs[1])]
        torch.testing.assert_close(ys[1], ys[0])
        dy = torch.randn(x.shape, dtype=torch.float64, generator=gen)
        for y in ys:
            y.backward(dy)
        torch.testing.assert_close(xs[1].grad, xs[0].grad)
        for (name, p), (_, q) in zip(theirs.named_parameters(), ours.named_parameters()):
            torch.testing.assert_close(q.grad, p.grad, msg=name)
            p.grad = q.grad = None
        for (name, b), (_, c) in zip(theirs.named_buffers(), ours.named_buffers()):
            assert b.dtype == c.dtype
            torch.testing.assert_close(c, b, msg=f"{name} after step {step}", rtol=1e-12, atol=1e-12)
    if track:
        assert ours.num_batches_tracked.item() == 4
    else:
        assert ours.running_mean is None and ours.num_batches_tracked is None


# --------------------------------------------------------------------------------------------
# patch()
# --------------------------------------------------------------------------------------------

class MyConv(nn.Conv2d):
    """A user subclass: it may change forward, so patch() must leave it alone."""


def test_patch_swaps_in_place_keeps_parameters_and_reports_the_rest():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding_mode="reflect"), MyConv(4, 4, 1),
                          nn.Sequential(nn.AvgPool2d(1), nn.AdaptiveAvgPool2d(1)), nn.Flatten(),
                          nn.Linear(4, 2))
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    params = {name: p for name, p in model.named_parameters()}
    modules = dict(model.named_modules())
    keys = list(model.state_dict())

    report = ft.patch(model, backend="reference")

    assert report.swapped == [("0", "Conv2d"), ("2", "MaxPool2d"), ("5.0", "AvgPool2d"),
                              ("5.1", "AdaptiveAvgPool2d"), ("7", "Linear")]
    assert [name for name, _ in report.skipped] == ["3", "4"]
    assert "padding_mode='reflect'" in report.skipped[0][1] and "MyConv" in report.skipped[1][1]
    assert "5 modules swapped, 2 left on PyTorch" in str(report)
    assert type(model[0]) is ft.Conv2d and type(model[3]) is nn.Conv2d and type(model[4]) is MyConv
    assert model[0].backend == "reference"
    # same objects: modules, Parameters (so optimizers keep working), state_dict keys
    assert all(modules[name] is m for name, m in model.named_modules())
    assert all(params[name] is p for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before)
    assert ft.unpatch(model) == 5
    assert type(model[0]) is nn.Conv2d and not hasattr(model[0], "backend")


def test_patch_swaps_conv1d_conv_transpose_and_batchnorm():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Unflatten(2, (2, 3)), nn.ConvTranspose2d(4, 3, 2, stride=2),
                          nn.BatchNorm2d(3), nn.BatchNorm2d(3, dtype=torch.float16), nn.BatchNorm1d(3))
    report = ft.patch(model)
    assert report.swapped == [("0", "Conv1d"), ("2", "ConvTranspose2d"), ("3", "BatchNorm2d")]
    # a float16 batch norm stays on PyTorch, its buffers named; BatchNorm1d is not a drop-in
    assert report.skipped == [("4", "parameter 'weight' has dtype torch.float16 (fastconv runs float32 and "
                                    "float64 on cpu)")]
    assert [type(m) for m in model[:4]] == [ft.Conv1d, nn.Unflatten, ft.ConvTranspose2d, ft.BatchNorm2d]
    assert ft.unpatch(model) == 3 and type(model[3]) is nn.BatchNorm2d


def test_patched_channels_last_model_keeps_channels_last(seed):
    """A channels_last model and input stay channels_last through every patched layer (conv,
    batch norm, pools; linear and flatten are 2-d), with torch.nn's results and gradients."""
    torch.manual_seed(seed)
    model = SmallResNet().to(memory_format=torch.channels_last)
    patched = copy.deepcopy(model)
    ft.patch(patched)
    layouts = []
    for m in patched.modules():
        if type(m) in (ft.Conv2d, ft.BatchNorm2d, ft.MaxPool2d, ft.AvgPool2d):
            m.register_forward_hook(lambda m, i, y: layouts.append(
                (type(m).__name__, i[0].is_contiguous(memory_format=torch.channels_last) and not i[0].is_contiguous(),
                 y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous())))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).to(memory_format=torch.channels_last)
    ys = [model(x), patched(x)]
    assert len(layouts) == 14 and all(y_cl for _, _, y_cl in layouts), layouts
    assert all(x_cl for _, x_cl, _ in layouts), layouts  # no layer fed NCHW to the next
    torch.testing.assert_close(ys[1], ys[0], rtol=1e-4, atol=1e-5)
    for y in ys:
        y.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), patched.parameters()):
        assert q.grad.is_contiguous(memory_format=torch.channels_last) == p.grad.is_contiguous(
            memory_format=torch.channels_last), name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_patched_channels_last_results_take_in_place_ops(seed):
    """A patched layer's channels_last result is a tensor of its own (not a view of the buffer it
    was transposed into), so an in-place ReLU after batch norm trains as in torch.nn."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.Conv2d(8, 4, 3), nn.ReLU(inplace=True)).to(memory_format=torch.channels_last)
    patched = copy.deepcopy(model)
    assert ft.patch(patched).swapped == [("0", "Conv2d"), ("1", "BatchNorm2d"), ("3", "Conv2d")]
    x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(seed)).to(memory_format=torch.channels_last)
    ys = [m(x) for m in (model, patched)]
    assert ys[1].is_contiguous(memory_format=torch.channels_last) and ys[1]._base is None
    torch.testing.assert_close(ys[1], ys[0], rtol=1e-4, atol=1e-5)
    for y in ys:
        y.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), patched.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_patch_rejects_non_modules():
    with pytest.raises(TypeError, match="fastconv.torch.patch: expected a torch.nn.Module, got list"):
        ft.patch([nn.Linear(2, 2)])


# --------------------------------------------------------------------------------------------
# a small ResNet, trained with and without the patch
# --------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """conv-bn-relu stem, max pooling, two residual blocks (one downsampling), average pooling,
    a linear head: every op fastconv.torch replaces, plus batch norm and ReLU left to PyTorch."""

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))


def train(model, optimizer, batches):
    losses = []
    for x, target in batches:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_small_resnet_trains_the_same_with_and_without_patch(seed):
    torch.manual_seed(seed)
    model = SmallResNet()
    patched = copy.deepcopy(model)
    # the optimizer is built *before* patch(): it must keep updating the same Parameters
    opt, opt_patched = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, patched))
    report = ft.patch(patched)
    assert len(report.swapped) == 16 and report.skipped == []  # 6 convs, 6 batch norms, 3 pools, 1 linear
    gen = torch.Generator().manual_seed(seed)
    # two batches, three epochs: the model can fit them, so the loss must fall
    batches = [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 5, (8,), generator=gen))
               for _ in range(2)] * 3
    losses, losses_patched = train(model, opt, batches), train(patched, opt_patched, batches)
    print("losses torch.nn:", losses, "fastconv:", losses_patched)
    assert sum(losses[-2:]) < sum(losses[:2])  # it learns: not a comparison of two flat lines
    np.testing.assert_allclose(losses_patched, losses, rtol=1e-4)
    for (name, p), q in zip(model.named_parameters(), patched.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------

def _compiled_step_as_eager(model, x, before_compiling=lambda: None):
    """One training step (forward, backward of the squared sum) of a copy of ``model`` in eager
    mode, then one of ``model`` compiled by inductor with fullgraph (no graph breaks), after
    ``before_compiling()``: outputs and parameter gradients must match. Returns the eager copy."""
    eager = copy.deepcopy(model)
    y_eager = eager(x)
    y_eager.square().sum().backward()
    before_compiling()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    y = compiled(x)
    y.square().sum().backward()
    torch.testing.assert_close(y, y_eager)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    return eager


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside inductor
def test_torch_compile_fullgraph_inductor_matches_eager(seed, monkeypatch):
    """Inductor (C++ codegen for the glue, fastconv ops called as opaque custom ops), fullgraph:
    no graph breaks. Forward and backward both run through fastconv."""
    torch.manual_seed(seed)
    model = nn.Sequential(ft.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ft.MaxPool2d(2),
                          ft.Conv2d(8, 8, (3, 1), stride=(2, 1)), ft.AvgPool2d(2), nn.Flatten(),
                          ft.Linear(32, 5))
    calls = []

    def count_calls():  # from the compiled model's step on, not eager's
        for name in ("conv2d", "conv2d_backward", "linear_backward"):
            real = getattr(fastconv, name)
            monkeypatch.setattr(fastconv, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))

    _compiled_step_as_eager(model, torch.randn(4, 3, 16, 16), before_compiling=count_calls)
    assert calls.count("conv2d") == 2 and calls.count("conv2d_backward") == 2 and "linear_backward" in calls


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside inductor
def test_torch_compile_conv1d_conv_transpose_batchnorm(seed):
    """The new layers under inductor, fullgraph, in training: outputs, gradients and the batch
    norm's running statistics (updated in place inside the compiled graph) as eager's."""
    torch.manual_seed(seed)
    model = nn.Sequential(ft.Conv1d(3, 8, 3, padding=1), nn.Unflatten(2, (4, 4)),
                          ft.ConvTranspose2d(8, 6, 3, stride=2, output_padding=1), ft.BatchNorm2d(6),
                          nn.ReLU(), nn.Flatten(), ft.Linear(6 * 10 * 10, 5))
    eager = _compiled_step_as_eager(model, torch.randn(4, 3, 16))
    for (name, b), c in zip(model.named_buffers(), eager.buffers()):
        torch.testing.assert_close(b, c, msg=name)
    assert model[3].num_batches_tracked.item() == 1


def test_modules_read_parametrized_and_hooked_weights():
    """Linear, Conv2d and BatchNorm2d read parameters and buffers from their tables where registered (issue 21's
    per-call overhead), and as attributes where they are not: a parametrization's property
    (``torch.nn.utils.parametrizations.weight_norm``, a map doubling a bias or batch norm's weight) and a
    plain tensor attribute that a forward pre-hook sets, as the old ``weight_norm`` did. Forward and
    gradients as PyTorch's module with the same parametrization."""
    gen = torch.Generator().manual_seed(0)
    P = torch.nn.utils.parametrize
    x = torch.randn(3, 6, generator=gen)
    ref, lin = nn.Linear(6, 4), ft.Linear(6, 4)
    lin.load_state_dict(ref.state_dict())

    class Doubled(nn.Module):
        def forward(self, b):
            return 2 * b

    for m in (ref, lin):
        torch.nn.utils.parametrizations.weight_norm(m, "weight")
        P.register_parametrization(m, "bias", Doubled())
    assert "weight" not in lin._parameters and "bias" not in lin._parameters
    got, want = lin(x), ref(x)
    torch.testing.assert_close(got, want)
    got.square().sum().backward()
    want.square().sum().backward()
    for (name, a), (_, b) in zip(lin.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)

    hooked = ft.Linear(6, 4)
    v = hooked.weight.detach().clone()
    del hooked._parameters["weight"]
    hooked.register_forward_pre_hook(lambda m, args: setattr(m, "weight", 3 * v))
    torch.testing.assert_close(hooked(x), torch.nn.functional.linear(x, 3 * v, hooked.bias))

    image = torch.randn(4, 3, 5, 6, generator=gen)
    ref_conv, conv = nn.Conv2d(3, 2, 3), ft.Conv2d(3, 2, 3)
    conv.load_state_dict(ref_conv.state_dict())
    for m in (ref_conv, conv):
        torch.nn.utils.parametrizations.weight_norm(m, "weight")
    torch.testing.assert_close(conv(image), ref_conv(image))
    ref_bn, bn = nn.BatchNorm2d(3), ft.BatchNorm2d(3)
    for m in (ref_bn, bn):  # batch norm reads its parameters and buffers the same way
        P.register_parametrization(m, "weight", Doubled())
    torch.testing.assert_close(bn(image), ref_bn(image))
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)


def test_modules_follow_parameter_and_attribute_changes_between_calls():
    """What the drop-ins keep from one call to the next (parameters' NumPy views, hyper-parameters
    in the op's form, issue 21's per-call overhead) follows every change PyTorch's modules follow:
    in-place updates, a new ``.data``, a new Parameter, an attribute set, a list attribute changed
    in place; batch norm's in-place running-statistic update counts in the version counter."""
    gen = torch.Generator().manual_seed(0)
    F = torch.nn.functional
    lin = ft.Linear(6, 4)
    x = torch.randn(3, 6, generator=gen)
    for change in (lambda: lin.weight.mul_(2), lambda: setattr(lin.weight, "data", torch.randn(4, 6, generator=gen)),
                   lambda: (setattr(lin, "weight", nn.Parameter(torch.randn(5, 6, generator=gen))),
                            setattr(lin, "bias", nn.Parameter(torch.randn(5, generator=gen))))):
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
        with torch.no_grad():
            change()
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))

    image = torch.randn(2, 3, 8, 9, generator=gen)
    pool = ft.MaxPool2d(2)
    torch.testing.assert_close(pool(image), F.max_pool2d(image, 2))
    pool.kernel_size = 3
    torch.testing.assert_close(pool(image), F.max_pool2d(image, 3, 2))
    pool.kernel_size, pool.stride = [2, 3], [1, 2]  # lists: PyTorch reads them on every call
    torch.testing.assert_close(pool(image), F.max_pool2d(image, [2, 3], [1, 2]))
    pool.kernel_size[1] = 2
    torch.testing.assert_close(pool(image), F.max_pool2d(image, [2, 2], [1, 2]))

    conv = ft.Conv2d(3, 4, 3)
    torch.testing.assert_close(conv(image), F.conv2d(image, conv.weight, conv.bias))
    conv.padding = (1, 2)
    torch.testing.assert_close(conv(image), F.conv2d(image, conv.weight, conv.bias, padding=(1, 2)))

    bn = ft.BatchNorm2d(3)
    versions = (bn.running_mean._version, bn.running_var._version)
    bn(image)
    assert bn.running_mean._version > versions[0] and bn.running_var._version > versions[1]


def test_held_views_follow_their_tensor_and_leave_with_it():
    from fastconv.torch.exchange import held_array

    held, t = {}, torch.arange(6.0)
    a = held_array(held, t)
    assert held_array(held, t) is a and a.base is not None  # kept, and a view of t's memory
    t.add_(1)
    assert a[0] == 1.0
    t.data = torch.zeros(6)
    assert held_array(held, t)[0] == 0.0  # a new .data: a new view
    del t
    assert held == {}
