"""Each contender in a worker process of its own, stopped while another one runs.

Thread pools go on spinning after a call: OpenBLAS's after a NumPy matmul, PyTorch's OpenMP team
after each op, fastconv's own. On two shared cores the contender timed next ran up to 2x slower
(seven C++ calls, about 100 ms, ran 1.8x slower after one NumPy matmul; one ran 2x slower after a
PyTorch conv), so timing contenders one after another in one process measured their neighbours'
pools as much as themselves. Here every contender, the reference included, runs in a worker
process, and while one worker verifies or times its calls, the parent has stopped every other
worker (SIGSTOP, then SIGCONT when its turn comes): a stopped process's threads take no CPU,
whatever they were doing. The interleaved rounds of :mod:`.timing` are kept, so all contenders
still meet the same slow and fast phases of a shared machine.

A worker holds one case at a time: it makes the case's inputs from the case's seed (so every
worker has the same arrays), makes the verification call and sends the result back, which the
parent compares with the reference worker's; then it times its calls round by round as the parent
asks. The parent keeps each contender's times: when the rounds of a case are spread over sweeps of
the suite (:mod:`.timing`), a worker prepares the case again in each sweep (the same inputs; the
result is not sent again) and is handed its times so far. :class:`LocalWorker` runs the same session in the calling process, one contender after
another, for the tests and for platforms without SIGSTOP.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
import zlib

import numpy as np

from .cases import Case, Contender, make_inputs
from .timing import Policy, Timed, run_round


def case_rng(seed: int, case: Case):
    """The generator of a case's inputs: the same in every worker, and the same for a case whatever
    else the run holds (seeded by the run's seed and the case's name)."""
    return np.random.default_rng([seed, zlib.crc32(case.id.encode())])


class Session:
    """What a worker does for its contender, in whichever process it runs."""

    def __init__(self, contender: Contender, threads: int, policy: Policy):
        from .. import _threads
        from .runner import import_torch

        self.contender, self.policy = contender, policy
        self.torch = import_torch() if contender.family == "torch" else None
        if contender.family == "torch":
            self.torch.set_num_threads(threads)
            self.torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm during warm-up
        _threads.set_num_threads(threads)  # fastconv's backends and the BLAS NumPy uses alike
        self.timed = None

    def prepare(self, case: Case, seed: int, send: bool = True):
        """The case's first call: ``("ok", result on the host)`` (``("ok", None)`` unless ``send``:
        a later sweep's, verified already), ``("n/a", why)`` (the backend lacks the op) or
        ``("error", why)``."""
        import time

        self.timed = None
        try:
            prepared = self.contender.prepare(case, make_inputs(case, case_rng(seed, case)), self.torch)
            start = time.perf_counter()
            out = prepared.to_host(prepared.fn())
            first_s = time.perf_counter() - start
        except NotImplementedError as exc:
            return "n/a", str(exc)
        except Exception as exc:  # reported against the contender; the run goes on
            return "error", f"{type(exc).__name__}: {exc}"
        self.timed = Timed(prepared.fn, prepared.timer, first_s)
        return "ok", out if send else None

    def round(self, step: int, times=()):
        """The contender's share of round ``step`` (0: the warm-up) after the runs ``times`` (seconds)
        of the earlier rounds: ``("ok", times so far)`` or ``("error", why)``."""
        times = list(times)
        try:
            run_round(self.timed, times, self.policy, step)
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {exc}"
        return "ok", times

    def release(self):
        """Drop the case's arrays."""
        self.timed = None


class LocalWorker:
    """A contender's session in this process."""

    def __init__(self, contender: Contender, threads: int, policy: Policy, session=Session):
        self.contender = contender
        self.session = session(contender, threads, policy)

    def call(self, method: str, *args):
        return getattr(self.session, method)(*args)

    def close(self):
        pass


def _serve(conn, contender, threads, policy, session_class):
    """A worker process's loop: calls on its session, one message at a time, until ``close`` (or
    until the parent is gone: the pipe's end)."""
    # A stopped process in a process group that becomes orphaned (the shell that started the bench
    # exits first) gets SIGHUP, then SIGCONT: ignored, the worker carries on, or ends when it finds
    # the parent gone.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        session = session_class(contender, threads, policy)
    except Exception:
        conn.send(("crash", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        if method == "close":
            return
        try:
            conn.send(("ok", getattr(session, method)(*args)))
        except Exception:  # a bug in the session itself: the parent raises it
            conn.send(("crash", traceback.format_exc()))


class ProcessWorker:
    """A contender's session in a process of its own, stopped whenever it is not being called.

    ``session``: the class whose instance serves the calls (:class:`Session` for the kernel cases;
    the end-to-end benchmark passes its own), built in the worker as ``session(contender, threads,
    policy)``; with the spawn start method it must be importable by name."""

    def __init__(self, contender, threads: int, policy, context=None, session=Session, wait=True):
        context = context or multiprocessing.get_context("spawn")  # no fork: the parent may hold CUDA
        self.contender = contender
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, contender, threads, policy, session),
                                       daemon=True,
                                       name=f"fastconv bench: {contender.name}")
        self.process.start()
        child.close()
        if wait:
            self.started()

    def started(self):
        """Wait until the worker has started (its imports done), then stop it for the first time.
        ``wait=False`` leaves this to the caller, so that several workers import at once."""
        self._reply()
        self._stop()

    def _reply(self):
        status, payload = self.conn.recv()
        if status == "crash":
            raise RuntimeError(f"bench worker for {self.contender.name} failed:\n{payload}")
        return payload

    def _stop(self):
        os.kill(self.process.pid, signal.SIGSTOP)
        os.waitpid(self.process.pid, os.WUNTRACED)  # returns once every thread of it has stopped

    def call(self, method: str, *args):
        os.kill(self.process.pid, signal.SIGCONT)
        try:
            self.conn.send((method, args))
            return self._reply()
        except (EOFError, OSError) as exc:  # the process is gone: say how it ended
            self.process.join(timeout=5)
            raise RuntimeError(f"bench worker for {self.contender.name} ended during {method!r} "
                               f"(exit code {self.process.exitcode}; a negative one is the signal)") from exc
        finally:
            if self.process.is_alive():
                self._stop()

    def close(self):
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGCONT)
            self.conn.send(("close", ()))
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def can_stop_processes() -> bool:
    return hasattr(signal, "SIGSTOP") and hasattr(os, "WUNTRACED")


def start_workers(contenders, threads: int, policy, isolate: bool = True, session=Session) -> list:
    """A worker per contender, serving calls with ``session`` (see :class:`ProcessWorker`):
    processes that are stopped while others run (``isolate`` and the platform allow), else
    sessions in this process."""
    if isolate and can_stop_processes():
        context = multiprocessing.get_context("spawn")
        workers = []
        try:
            for c in contenders:  # all start importing at once (each import takes seconds) ...
                workers.append(ProcessWorker(c, threads, policy, context, session, wait=False))
            for w in workers:  # ... and each is stopped once it is ready
                w.started()
        except BaseException:  # one failed to start: the ones already started must not outlive the run
            for w in workers:
                w.close()
            raise
        return workers
    return [LocalWorker(c, threads, policy, session) for c in contenders]
