"""The command line of ``scripts/benchmark.py``: time a training epoch against its peers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.experiments.benchmark import (
    N_TRAIN,
    ModelSpec,
    format_report,
    format_sweep,
    run,
    sweep_specs,
)
from numpy_vae.training.atomic import write_json


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    default = ModelSpec()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--hidden", type=int, nargs="+", default=list(default.hidden_dims))
    parser.add_argument("--latent", type=int, default=default.latent_dim)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement")
    parser.add_argument("--mnist", action="store_true", help="real MNIST instead of synthetic")
    parser.add_argument("--n", type=int, default=N_TRAIN, help="number of training images")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--memory-epochs", type=int, default=10, help="0 skips the memory run")
    parser.add_argument("--no-phases", action="store_true", help="skip the instrumented pass")
    parser.add_argument("--sweep", action="store_true", help="batch-size and width sweep")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = ModelSpec(args.batch_size, tuple(args.hidden), args.latent)
    if args.sweep:
        specs = sweep_specs()
    else:
        specs = [default] if spec == default else [default, spec]
    report = run(
        specs,
        mnist=args.mnist,
        n=args.n,
        repeats=args.repeats,
        torch=not args.no_torch,
        memory_epochs=0 if args.sweep else args.memory_epochs,
        seed=args.seed,
        phases=not (args.no_phases or args.sweep),
        log=lambda s: print(s, file=sys.stderr),
    )
    print(format_report(report))
    if args.sweep:
        print()
        print(format_sweep(report))
    if args.json:
        write_json(args.json, report)  # atomically: never a half-written report
    return 0
