"""Conv algorithms by name (the C++ backend's lists) and autotune: every algorithm that applies
matches the reference and is bit-identical for any thread count; the winners are timed once,
cached in memory and on disk, and a bad cache file is ignored with a warning."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import autotune
from fastconv._params import conv_params
from fastconv._threads import num_threads
from fastconv.problems import Conv
from support import assert_close, assert_equal, float32_conv_precision, randn, reference_conv_pass, small_ints

pytest.importorskip("fastconv._cpp", reason="the C++ backend is not built")
from fastconv import _cpp  # noqa: E402
from fastconv.backends.cpp import conv as cpp_conv  # noqa: E402

# layers whose lists differ: Winograd in every pass (128 channels, stride 1: F(2x2) and F(3x3) at
# the default precision), a strided layer (dgrad: subpixel and col2im), pointwise, groups with ragged sizes,
# a dilated layer that splits into phases, few channels (the channels wgrad where the AVX-512 and
# AVX2 kernels run it), depthwise ("direct" only)
LAYERS = [
    Conv("winograd_all_passes", 2, 128, 10, 13, 128, 3, 3, padding=1),
    Conv("strided", 2, 12, 11, 9, 10, 3, 3, stride=2, padding=(1, 0)),
    Conv("pointwise", 2, 40, 7, 9, 24, 1, 1),
    Conv("groups_dilated", 2, 6, 12, 10, 9, 3, 2, padding=(2, 1), dilation=(2, 1), groups=3),
    Conv("dilated_phases", 2, 8, 12, 9, 6, 3, 3, padding=(2, 3), dilation=(2, 3), groups=2),
    Conv("few_out_channels", 3, 16, 9, 11, 8, 3, 3, padding=1),
    Conv("depthwise", 2, 5, 9, 11, 5, 3, 3, padding=1, groups=5),
]
PASSES = ("fwd", "dgrad", "wgrad")


def _params(c):
    return conv_params("conv2d", c.x_shape, c.w_shape, c.stride, c.padding, c.dilation, c.groups)


def _run(c, pass_name, algo, x, w, dy):
    return cpp_conv.cpp_pass(pass_name, _params(c), algo, x, w, dy, fastconv.get_num_threads())


def _inputs(rng, c, make, dtype):
    x, w = make(rng, c.x_shape, dtype), make(rng, c.w_shape, dtype)
    return x, w, make(rng, _params(c).y_shape, dtype)


def _cases(dtypes):
    for dtype in dtypes:
        for c in LAYERS:
            for pass_name in PASSES:
                for algo in _cpp.conv2d_algorithms(_params(c), pass_name, np.dtype(dtype)):
                    yield pytest.param(c, pass_name, algo, dtype,
                                       id=f"{np.dtype(dtype).name}-{c.name}-{pass_name}-{algo}")


def test_lists_name_each_pass():
    """Each Winograd tile the precision allows (F(4x4) at "high" only), by name."""
    p = _params(LAYERS[0])
    assert _cpp.conv2d_algorithms(p, "fwd", np.dtype(np.float32)) == ("winograd2", "winograd3", "gemm")
    assert _cpp.conv2d_algorithms(p, "dgrad", np.dtype(np.float32)) == ("winograd2", "winograd3", "gemm", "col2im")
    assert _cpp.conv2d_algorithms(p, "wgrad", np.dtype(np.float32))[0] == "winograd2"
    assert _cpp.conv2d_algorithms(p, "fwd", np.dtype(np.float64)) == ("gemm",)  # fp64: wide images only
    with float32_conv_precision("high"):
        assert _cpp.conv2d_algorithms(p, "fwd", np.dtype(np.float32)) == ("winograd2", "winograd3", "winograd4", "gemm")
        assert _cpp.conv2d_algorithms(p, "wgrad", np.dtype(np.float32))[:2] == ("winograd2", "winograd4")
    assert _cpp.conv2d_algorithms(_params(LAYERS[1]), "dgrad", np.dtype(np.float32)) == ("subpixel", "col2im")
    assert _cpp.conv2d_algorithms(_params(LAYERS[-1]), "wgrad", np.dtype(np.float64)) == ("direct",)


@pytest.mark.parametrize("c, pass_name, algo, dtype", list(_cases((np.float32, np.float64))))
def test_every_algorithm_matches_the_reference(c, pass_name, algo, dtype, rng):
    x, w, dy = _inputs(rng, c, randn, dtype)
    assert_close(_run(c, pass_name, algo, x, w, dy), reference_conv_pass(c.kwargs, pass_name, x, w, dy), f"{c.name} {pass_name} {algo}")
    # every algorithm, each Winograd tile too, adds exact products of small integers exactly
    x, w, dy = _inputs(rng, c, small_ints, dtype)
    assert_equal(_run(c, pass_name, algo, x, w, dy), reference_conv_pass(c.kwargs, pass_name, x, w, dy), f"{c.name} {pass_name} {algo}")


@pytest.mark.parametrize("c, pass_name, algo, dtype", list(_cases((np.float32,))))
def test_every_algorithm_same_bits_for_1_and_2_threads(c, pass_name, algo, dtype, rng):
    x, w, dy = _inputs(rng, c, randn, dtype)
    with num_threads(1):
        one = _run(c, pass_name, algo, x, w, dy)
    with num_threads(2):
        two = _run(c, pass_name, algo, x, w, dy)
    assert_equal(two, one, f"{c.name} {pass_name} {algo}: 1 vs 2 threads")


def test_an_algorithm_that_does_not_apply_is_a_value_error(rng):
    c = LAYERS[1]  # strided: no Winograd, dgrad by col2im only
    x, w, dy = _inputs(rng, c, randn, np.float32)
    with pytest.raises(ValueError, match=r"conv2d fwd: algorithm 'winograd' does not apply .* 'gemm' or 'auto'"):
        _run(c, "fwd", "winograd", x, w, dy)
    with pytest.raises(ValueError, match="conv2d dgrad: algorithm 'gemm' does not apply"):
        _run(c, "dgrad", "gemm", x, w, dy)
    with pytest.raises(ValueError, match="algorithm 'fastest' does not apply"):
        _run(c, "wgrad", "fastest", x, w, dy)
    with pytest.raises(ValueError, match="pass must be 'fwd', 'dgrad' or 'wgrad', got 'bwd'"):
        _cpp.conv2d_algorithms(_params(c), "bwd", np.dtype(np.float32))


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Autotune on, its cache in a fresh folder, nothing held in memory; all restored after."""
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    autotune.forget()
    was = autotune.get_autotune()
    autotune.set_autotune(True)
    yield tmp_path / "autotune.json"
    autotune.set_autotune(was)
    autotune.forget()


def _all_passes(c, x, w, dy):
    y = fastconv.conv2d(x, w, None, **c.kwargs, backend="cpp")
    dx, dw, _ = fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(True, True, False), backend="cpp")
    return y, dx, dw


def _entries(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    assert data["format"] == autotune.FORMAT
    return data["entries"]


def test_autotune_times_once_and_keeps_the_winner_on_disk(tuning, rng, monkeypatch):
    c = LAYERS[0]
    x, w, dy = _inputs(rng, c, randn, np.float32)
    results = _all_passes(c, x, w, dy)
    for got, pass_name in zip(results, PASSES):
        assert_close(got, reference_conv_pass(c.kwargs, pass_name, x, w, dy), f"tuned {pass_name}")
    entries = _entries(tuning)
    assert len(entries) == 3
    for key, algo in entries.items():
        pass_name = key.split("|")[4]
        assert f"threads={fastconv.get_num_threads()}" in key and f"fastconv={fastconv.__version__}" in key
        assert algo in _cpp.conv2d_algorithms(_params(c), pass_name, np.dtype(np.float32)) + (autotune.IM2COL,)

    def no_timing(run, algo):
        raise AssertionError(f"timed {algo} again")
    monkeypatch.setattr(autotune, "_time", no_timing)
    autotune.forget()  # from the file now, as a new process would
    for got, again in zip(results, _all_passes(c, x, w, dy)):
        assert_equal(again, got, "the cached winner gives the timed run's result")


@pytest.mark.parametrize("precision, tiles", [("highest", ["winograd2", "winograd3"]),
                                               ("high", ["winograd2", "winograd3", "winograd4"])])
def test_autotune_times_each_tile_the_precision_allows(tuning, rng, monkeypatch, precision, tiles):
    """A 3x3 stride-1 layer's forward: autotune times each Winograd tile the precision allows and no
    other (F(4x4) at "high" only), keyed by the precision; the winner's name (here
    F(3x3), made fastest) goes to disk and back, and runs that tile."""
    c = LAYERS[0]
    x, w, dy = _inputs(rng, c, randn, np.float32)
    timed = []

    def fake_time(run, algo):
        timed.append(algo)
        return run(algo), (0.0 if algo == "winograd3" else 1.0)
    monkeypatch.setattr(autotune, "_time", fake_time)
    with float32_conv_precision(precision):
        y = fastconv.conv2d(x, w, None, **c.kwargs, backend="cpp")
        assert [a for a in timed if a.startswith("winograd")] == tiles
        (key, algo), = _entries(tuning).items()
        assert algo == "winograd3" and key.endswith(f"|precision={precision}")

        def no_timing(run, algo):
            raise AssertionError(f"timed {algo} again")
        monkeypatch.setattr(autotune, "_time", no_timing)
        autotune.forget()  # from the file now
        assert_equal(fastconv.conv2d(x, w, None, **c.kwargs, backend="cpp"), y, "the cached tile")
        assert_equal(y, _run(c, "fwd", "winograd3", x, w, dy), "the winner runs F(3x3)")


def test_autotune_off_runs_the_heuristics(tuning, rng):
    autotune.set_autotune(False)
    c = LAYERS[0]
    x, w, dy = _inputs(rng, c, randn, np.float32)
    _all_passes(c, x, w, dy)
    assert not tuning.exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99, "entries": {}}),
                                     json.dumps(["a", "list"]), json.dumps({"format": 1, "entries": {"k": 3}})],
                         ids=["corrupt", "other_format", "not_an_object", "bad_entry"])
def test_a_bad_cache_file_is_ignored_with_a_warning(tuning, rng, content):
    tuning.write_text(content)
    c = LAYERS[2]
    x, w, dy = _inputs(rng, c, randn, np.float32)
    with pytest.warns(RuntimeWarning, match="fastconv autotune: ignoring"):
        y = fastconv.conv2d(x, w, None, **c.kwargs, backend="cpp")
    assert_close(y, reference_conv_pass(c.kwargs, "fwd", x, w, dy), "after a bad cache file")
    assert len(_entries(tuning)) == 1  # replaced by a good one


@pytest.mark.parametrize("c", [LAYERS[1], LAYERS[0]], ids=["not_winograd", "winograd_layer"])
def test_a_stale_entry_is_timed_again(tuning, rng, c):
    """An entry naming "winograd": on a layer it does not apply to, or as a file written before
    the tiles competed holds it for a Winograd layer (the name is accepted, but no longer offered):
    the file loads without a warning, the pass is timed again and the entry replaced."""
    x, w, dy = _inputs(rng, c, randn, np.float32)
    fastconv.conv2d(x, w, None, **c.kwargs, backend="cpp")
    (key,) = _entries(tuning)
    tuning.write_text(json.dumps({"format": autotune.FORMAT, "entries": {key: "winograd"}}))
    autotune.forget()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fastconv.conv2d(x, w, None, **c.kwargs, backend="cpp")
    assert _entries(tuning)[key] != "winograd"
    assert_close(y, reference_conv_pass(c.kwargs, "fwd", x, w, dy), f"{c.name} after a stale entry")


def test_autotune_from_the_environment_and_bad_switch():
    env = {**os.environ, "FASTCONV_AUTOTUNE": "1"}
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_autotune())"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    with pytest.raises(TypeError, match="set_autotune: enabled must be a bool, got str"):
        fastconv.set_autotune("yes")
