"""fastconv.set_num_threads / get_num_threads / FASTCONV_NUM_THREADS, and the BLAS cap they imply."""

import os
import subprocess
import sys

import pytest

import fastconv
from fastconv import _threads


@pytest.fixture
def fresh_threads(monkeypatch):
    """No number set, no environment variable; BLAS limits restored afterwards."""
    monkeypatch.setattr(_threads, "_requested", None)
    monkeypatch.delenv(_threads.ENV, raising=False)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=None):  # restores the original limits on exit
        yield


def _blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}


def test_exported_at_top_level():
    assert fastconv.set_num_threads is _threads.set_num_threads
    assert fastconv.get_num_threads is _threads.get_num_threads


def test_default_is_the_usable_cores(fresh_threads):
    assert fastconv.get_num_threads() == _threads._usable_cores() >= 1
    assert _threads.thread_source() == "usable cores"


def test_environment_variable(fresh_threads, monkeypatch):
    monkeypatch.setenv("FASTCONV_NUM_THREADS", " 3 ")
    assert fastconv.get_num_threads() == 3
    assert _threads.thread_source() == "FASTCONV_NUM_THREADS"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_environment_variable(fresh_threads, monkeypatch, value):
    monkeypatch.setenv("FASTCONV_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"FASTCONV_NUM_THREADS: expected a positive integer, got '{value}'"):
        fastconv.get_num_threads()


def test_set_wins_over_environment_and_caps_blas(fresh_threads, monkeypatch):
    monkeypatch.setenv("FASTCONV_NUM_THREADS", "3")
    fastconv.set_num_threads(1)
    assert fastconv.get_num_threads() == 1
    assert _threads.thread_source() == "set_num_threads"
    assert _blas_threads() == {1}


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                          (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_bad_set_num_threads(fresh_threads, value, error):
    with pytest.raises(error, match="^set_num_threads: "):
        fastconv.set_num_threads(value)
    assert _threads._requested is None  # nothing changed


def test_num_threads_context_restores(fresh_threads):
    fastconv.set_num_threads(2)
    before = _blas_threads()
    with _threads.num_threads(1) as n:
        assert n == 1 and fastconv.get_num_threads() == 1
        assert _blas_threads() == {1}
    assert fastconv.get_num_threads() == 2
    assert _blas_threads() == before
    with pytest.raises(ValueError, match="^num_threads: "):
        with _threads.num_threads(0):
            pass


def test_environment_caps_blas_from_import():
    pytest.importorskip("threadpoolctl")
    code = ("import fastconv, threadpoolctl; "
            "print(fastconv.get_num_threads(), sorted({p['num_threads'] for p in threadpoolctl.threadpool_info() "
            "if p['user_api'] == 'blas'}))")
    env = dict(os.environ, FASTCONV_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "[1]"]
