"""The ``fastconv`` command line: one sub-command per job, each in its own module.

- ``fastconv bench``: verify every backend against the reference, then time it next to PyTorch;
  writes ``bench-results/`` (``bench.json``, ``report.md``, ``speedup.png``). ``fastconv bench --e2e``:
  whole networks (ResNet-18, MobileNetV2, LeNet-5), a training step and an inference pass, PyTorch
  eager against the same model patched with ``fastconv.torch.patch()``; writes ``e2e.json``, ``e2e.md``.
- ``fastconv check``: verify every backend against the reference (and the reference against PyTorch).
- ``fastconv info``: backends (available or why not), versions, CPU features, threads, GPUs.
- ``fastconv train``: train a LeNet-style CNN on scikit-learn's digits with ``fastconv.nn``; writes
  ``train-results/`` (``training.png``, ``metrics.json``, ``model.npz``).
"""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="verify every available backend against the reference")
    check.add_argument("--backends", help="comma-separated backend names (default: all available)")
    check.set_defaults(run=_run_check)

    bench = commands.add_parser(
        "bench", help="verify, then time every backend side by side with PyTorch",
        description="Verify every backend against the reference on each case, then time it next to "
                    "PyTorch (NCHW and channels_last). Prints a table and writes bench.json, report.md "
                    "and speedup.png into --out. Exit status 1 when a backend failed verification.")
    bench.add_argument("--shapes", metavar="FILE", help="a shapes JSON file (default: the shipped suite)")
    bench.add_argument("--backends", help="comma-separated fastconv backends (default: all available)")
    bench.add_argument("--passes", help="comma-separated: forward, backward-input, backward-weight, "
                                        "backward (= both backward passes); default: all")
    bench.add_argument("--match", metavar="TEXT", help="only the shapes whose name contains TEXT")
    bench.add_argument("--threads", type=int, help="threads for fastconv and PyTorch alike "
                                                   "(default: fastconv.get_num_threads())")
    bench.add_argument("--dtype", choices=("float32", "float64"), help="default: the suite's (float32)")
    bench.add_argument("--repeat", type=int, help="timed runs per case and contender "
                                                  "(default: as many as fit the budget, at least 3)")
    bench.add_argument("--budget", type=float, metavar="SECONDS",
                       help="timing budget per case and contender (default 0.5; --quick 0.05)")
    bench.add_argument("--quick", action="store_true",
                       help="the cheapest shape of each kind and a short budget: seconds")
    bench.add_argument("--out", default="bench-results", metavar="DIR", help="default: bench-results")
    bench.add_argument("--device", choices=("all", "cpu", "gpu"), default="all",
                       help="the contenders of one device only: gpu times the cupy backend next to PyTorch "
                            "CUDA (cuDNN), fp32 with TF32 off and with PyTorch's defaults (default: all)")
    bench.add_argument("--in-process", action="store_true",
                       help="run every contender in this process (quicker to start) instead of each in a "
                            "worker process stopped while the others run: a contender's times may then "
                            "include the previous one's thread pools winding down")
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bench.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    bench.add_argument("--seed", type=int, default=0, help="seed of the input values (default 0)")
    e2e = bench.add_argument_group(
        "end to end (--e2e)",
        "Whole networks on 32x32 images: one SGD step and one inference pass of a CIFAR-size ResNet-18, "
        "a CIFAR-size MobileNetV2 and LeNet-5, PyTorch eager (NCHW and channels_last) against the same "
        "model patched with fastconv.torch.patch() (NCHW and channels_last); every contender verified "
        "against PyTorch NCHW first, then timed in interleaved rounds. Takes --threads (default 2 here), "
        "--quick, --repeat (rounds), --budget (seconds per model and pass, default 10), --seed, --out "
        "and --in-process; writes e2e.json and e2e.md. Exit status 1 when a contender failed verification.")
    e2e.add_argument("--e2e", action="store_true", help="run the end-to-end benchmark instead of the kernels'")
    e2e.add_argument("--models", help="comma-separated: resnet18, mobilenetv2, lenet5 (default: all)")
    e2e.add_argument("--batch-size", type=int, help="images per step (default 32)")
    bench.set_defaults(run=_run_bench)

    info = commands.add_parser("info", help="backends, versions, CPU features, threads, GPUs")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_run_info)

    _add_train(commands)

    args = parser.parse_args(argv)
    return args.run(args)


def _run_check(args) -> int:
    from .verify import run_check

    names = args.backends.split(",") if args.backends else None
    return run_check(names, out=sys.stdout)


#: ``fastconv bench`` options that choose kernel cases, meaningless with --e2e: (dest, its flag)
_KERNEL_ONLY = (("shapes", "--shapes"), ("backends", "--backends"), ("passes", "--passes"), ("match", "--match"),
                ("dtype", "--dtype"), ("no_torch", "--no-torch"))


def _run_bench(args) -> int:
    from .bench import bench

    if args.e2e:
        return _run_e2e(args)
    for dest, flag in (("models", "--models"), ("batch_size", "--batch-size")):
        if getattr(args, dest) is not None:
            print(f"fastconv bench: {flag} is an option of --e2e", file=sys.stderr)
            return 2
    try:
        return bench(shapes=args.shapes, backends=args.backends.split(",") if args.backends else None,
                     passes=args.passes, threads=args.threads, dtype=args.dtype, repeat=args.repeat,
                     budget=args.budget, quick=args.quick, match=args.match, out=args.out,
                     torch=not args.no_torch, chart=not args.no_chart, seed=args.seed,
                     command=shlex.join(["fastconv"] + sys.argv[1:]), device=args.device,
                     isolate=not args.in_process)
    except ValueError as exc:
        print(f"fastconv {exc}", file=sys.stderr)
        return 2


def _run_e2e(args) -> int:
    from .bench.e2e import bench_e2e

    given = [flag for dest, flag in _KERNEL_ONLY if getattr(args, dest) not in (None, False)]
    if args.device != "all":
        given.append("--device")
    if given:
        print(f"fastconv bench: --e2e runs whole networks on the CPU; {', '.join(given)} choose kernel cases",
              file=sys.stderr)
        return 2
    try:
        return bench_e2e(models=args.models.split(",") if args.models else None, batch=args.batch_size,
                         threads=args.threads, quick=args.quick, repeat=args.repeat, budget=args.budget,
                         seed=args.seed, out=args.out, in_process=args.in_process,
                         command=shlex.join(["fastconv"] + sys.argv[1:]))
    except ValueError as exc:
        print(f"fastconv {exc}", file=sys.stderr)
        return 2


def _run_info(args) -> int:
    from .bench import info

    return info(as_json=args.json)


def _add_train(commands) -> None:
    from .training import DEFAULT_LR, SCHEDULES, TrainConfig

    d = TrainConfig()
    train = commands.add_parser(
        "train", help="train a LeNet-style CNN on scikit-learn's digits (needs fastconv[train])",
        description="Train a LeNet-style CNN with fastconv.nn on sklearn.datasets.load_digits (8x8 images, "
                    "no download): stratified train/validation/test split, early stopping on the validation "
                    "loss, the best epoch's parameters kept. Prints train/val/test accuracy and writes "
                    "training.png, metrics.json and model.npz into --out.")
    train.add_argument("--backend", default=d.backend, help="backend of every layer (default: auto)")
    train.add_argument("--epochs", type=int, default=d.epochs, help=f"at most this many (default {d.epochs})")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    train.add_argument("--optimizer", choices=tuple(DEFAULT_LR), default=d.optimizer, help="default: sgd")
    train.add_argument("--lr", type=float, help="learning rate (default per optimizer: "
                                                + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items()) + ")")
    train.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD/RMSprop (default {d.momentum})")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    train.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"L2 (default {d.weight_decay})")
    train.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                       help="per-epoch learning-rate schedule (default: step)")
    train.add_argument("--patience", type=int, default=d.patience,
                       help=f"stop after this many epochs without a better validation loss (default {d.patience})")
    train.add_argument("--seed", type=int, default=d.seed, help=f"split, initialisation and order (default {d.seed})")
    train.add_argument("--batch-norm", action="store_true", help="batch norm after each convolution")
    train.add_argument("--dropout", type=float, default=d.dropout, help="dropout before the last layer (default 0)")
    train.add_argument("--threads", type=int, help="fastconv threads (default: fastconv.get_num_threads())")
    train.add_argument("--out", default="train-results", metavar="DIR", help="default: train-results")
    train.add_argument("--no-out", action="store_true", help="write nothing")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from .training import TrainConfig, run_train

    config = TrainConfig(backend=args.backend, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                         weight_decay=args.weight_decay, schedule=args.schedule, patience=args.patience,
                         seed=args.seed, batch_norm=args.batch_norm, dropout=args.dropout, threads=args.threads)
    return run_train(config, None if args.no_out else args.out, quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
