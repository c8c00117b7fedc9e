"""A patched model under DistributedDataParallel (gloo, two processes on loopback) computes the
same gradients as one process on the full batch.

The test starts this file as a script twice (rank 0 and rank 1) with ``subprocess``: a plain
script needs no pickling of test functions, which ``torch.multiprocessing.spawn`` would need.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import fastconv
import fastconv.torch as ft

nn = torch.nn
WORLD, BATCH, STEPS = 2, 8, 3


def make_model():
    """The same initial weights in every process, patched onto fastconv. No batch norm: under DDP
    each rank would normalise with its own half batch, and the gradients would differ by design."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 2)), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 1 * 4, 4))
    report = ft.patch(model)
    assert len(report.swapped) == 5 and not report.skipped, report
    return model


def batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 12, 12, generator=gen), torch.randint(0, 4, (BATCH,), generator=gen))
            for _ in range(STEPS)]


def train(model, rank=0, world=1):
    """SGD steps on this rank's share of each batch; the gradients of every step, by name."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    params = dict(model.module.named_parameters() if world > 1 else model.named_parameters())
    history = []
    share = BATCH // world
    for x, target in batches():
        opt.zero_grad()
        rows = slice(rank * share, (rank + 1) * share)
        # mean over the local share: DDP averages over ranks, so this is the full-batch mean
        nn.functional.cross_entropy(model(x[rows]), target[rows]).backward()
        history.append({name: p.grad.clone() for name, p in params.items()})
        opt.step()
    return history


def worker(rank: int, out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # two processes share the machine: one thread each, in both pools
    fastconv.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)  # MASTER_ADDR/PORT from the env
    try:
        model = nn.parallel.DistributedDataParallel(make_model())
        torch.save(train(model, rank, WORLD), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_gradients_match_single_process(tmp_path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the host name resolves to
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(fastconv.__file__).parents[1]),
                                                      env.get("PYTHONPATH")]))
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, output) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{output}"
    print(f"DDP run: {time.perf_counter() - start:.1f} s")

    single = train(make_model())
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    assert len(single) == STEPS and all(len(r) == STEPS for r in ranks)
    for step in range(STEPS):
        for name, grad in single[step].items():
            assert grad.abs().sum() > 0, name  # a zero gradient would agree trivially
            for rank in ranks:
                torch.testing.assert_close(rank[step][name], grad, rtol=1e-5, atol=1e-6,
                                           msg=f"step {step}, {name}")


if __name__ == "__main__":
    worker(int(sys.argv[1]), Path(sys.argv[2]))
