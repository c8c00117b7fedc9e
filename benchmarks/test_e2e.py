"""The end-to-end benchmark under pytest-benchmark: one SGD step and one inference pass per model
and contender (PyTorch eager NCHW / channels_last, the same model patched with
``fastconv.torch.patch()``, NCHW / channels_last), each verified against PyTorch NCHW first.

The models, steps and verification are ``fastconv.bench.e2e``'s (``fastconv bench --e2e`` runs the
same in interleaved rounds, each contender in a worker process of its own, and prints issue 21's
bars); here every contender runs in the pytest process, one test after another, after a pause for
the previous test's thread pools. Batch 32 (``--quick``: 2, for the CI smoke run); ``--match TEXT``
keeps the models whose name contains TEXT (``--match e2e`` all of them); ``--shapes``, ``--backends``
and ``--no-torch`` leave them out.
"""

import functools
import time

import pytest

from fastconv.bench.runner import import_torch

from test_kernels import SETTLE_S

if import_torch() is None:
    pytest.skip("the end-to-end benchmark needs PyTorch", allow_module_level=True)

from fastconv.bench import e2e  # noqa: E402  (needs torch)
from fastconv.bench.models import MODELS  # noqa: E402

CONTENDERS = {c.name: c for c in e2e.CONTENDERS}
SEED = 0


def pytest_generate_tests(metafunc):
    if "e2e_model" not in metafunc.fixturenames:
        return
    config = metafunc.config
    match = config.getoption("--match")
    models = [m for m in MODELS if not match or match in m or match in "e2e"]
    # --shapes and --backends pick kernel cases and backends; the networks have neither (patch()
    # takes backend "auto"), so a run narrowed by them leaves the networks out
    narrowed = [flag for flag in ("--shapes", "--backends", "--no-torch") if config.getoption(flag)]
    params = [pytest.param(m, p, c, id=f"e2e-{m}:{p}-{c}") for m in models for p in e2e.PASSES for c in CONTENDERS]
    if narrowed:
        params = [pytest.param(None, None, None, id="e2e", marks=pytest.mark.skip(
            reason=f"the end-to-end networks run without {', '.join(narrowed)}"))]
    metafunc.parametrize(("e2e_model", "pass_name", "contender"), params)


@pytest.fixture(scope="session")
def batch(request):
    return 2 if request.config.getoption("--quick") else e2e.DEFAULT_BATCH


@functools.lru_cache(maxsize=1)  # model-major order: one model's PyTorch results at a time
def torch_results(model, batch):
    """PyTorch NCHW's and channels_last's verification tensors: the oracle and the null."""
    return tuple(e2e.Subject(CONTENDERS[name], model, batch, SEED).verification() for name in (e2e.ORACLE, e2e.NULL))


@functools.lru_cache(maxsize=1)  # both passes of a (model, contender) share its verified model
def verified(model, contender, batch):
    subject = e2e.Subject(CONTENDERS[contender], model, batch, SEED)
    got = subject.verification()
    if contender in (e2e.ORACLE, e2e.NULL):
        return subject, None
    want, null = torch_results(model, batch)
    return subject, e2e.compare(got, want, null)


def test_e2e(benchmark, e2e_model, pass_name, contender, batch, torch_module, pinned_threads):
    subject, verdict = verified(e2e_model, contender, batch)
    if verdict is not None:
        shown = ", ".join(f"{k} ({r:.3g}x)" for k, r in verdict.failing[:8])
        assert verdict.ok, f"{contender} differs from {e2e.ORACLE} on {e2e_model} beyond the tolerance: {shown}; not timed"
    subject.set_mode(pass_name)
    if pass_name == "train":
        def step():
            subject.train_step(*subject.batch())
    else:
        def step():
            subject.infer(subject.batch()[0])
    step()  # warm-up beyond the verification step
    benchmark.group = f"e2e-{e2e_model}:{pass_name}"
    benchmark.extra_info.update(model=e2e_model, pass_name=pass_name, contender=contender, batch=batch,
                                patched=CONTENDERS[contender].patched, layout=CONTENDERS[contender].layout,
                                threads=pinned_threads, input=[batch, *MODELS[e2e_model].input_shape],
                                verification_ratio=None if verdict is None else verdict.ratio)
    if not benchmark.disabled:
        time.sleep(SETTLE_S)
    benchmark(step)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["steps_per_s"] = 1.0 / benchmark.stats.stats.median
