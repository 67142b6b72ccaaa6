"""The command line of ``scripts/benchmark.py``: time a training epoch against its peers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.cli.common import (
    Parser,
    hidden_widths,
    nonnegative_int,
    positive_int,
)
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
    """Run the benchmark, print the report (and write its JSON); returns the exit status."""
    default = ModelSpec()
    parser = Parser(
        prog="benchmark.py",
        description="Time a training epoch of numpy-vae against PyTorch and the GEMM floor.",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=default.batch_size, help="examples per step"
    )
    parser.add_argument(
        "--hidden",
        type=hidden_widths,
        default=default.hidden_dims,
        metavar="W1,W2,...",
        help="hidden widths of the encoder, comma-separated",
    )
    parser.add_argument(
        "--latent-dim", type=positive_int, default=default.latent_dim, help="size of z"
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed epochs each")
    parser.add_argument("--mnist", action="store_true", help="real MNIST instead of synthetic")
    parser.add_argument("--n", type=positive_int, default=N_TRAIN, help="training images")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument(
        "--jax", action="store_true", help="also time a jitted JAX step (needs pip install jax)"
    )
    parser.add_argument(
        "--memory-epochs", type=nonnegative_int, default=10, help="0 skips the memory run"
    )
    parser.add_argument("--no-phases", action="store_true", help="skip the instrumented pass")
    parser.add_argument("--sweep", action="store_true", help="batch-size and width sweep")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="data and weights")
    args = parser.parse_args(argv)
    spec = ModelSpec(args.batch_size, tuple(args.hidden), args.latent_dim)
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
        jax=args.jax,
    )
    print(format_report(report))
    if args.sweep:
        print()
        print(format_sweep(report))
    if args.json:
        write_json(args.json, report)  # atomically: never a half-written report
    return 0
