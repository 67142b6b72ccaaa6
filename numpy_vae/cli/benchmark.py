"""The command line of ``scripts/benchmark.py``: time a training epoch against its peers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.cli.common import (
    Parser,
    add_network_flags,
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
    add_network_flags(
        parser,
        default.hidden_dims,
        latent_dim=default.latent_dim,
        batch_size=default.batch_size,
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
    parser.add_argument(
        "--rounds",
        type=positive_int,
        help="rounds in which the libraries alternate (default: 1, or 3 with --iwae)",
    )
    iwae = parser.add_argument_group("the Burda et al. 2016 model (--iwae)")
    iwae.add_argument(
        "--iwae",
        action="store_true",
        help="instead: the IWAE step of the Burda model at batch 20 for each --k against "
        "PyTorch, and the IW evaluation against its GEMM floor",
    )
    iwae.add_argument(
        "--k", type=positive_int, nargs="+", default=[1, 5, 50], help="samples per example"
    )
    iwae.add_argument("--steps", type=positive_int, default=200, help="timed steps per K")
    iwae.add_argument("--threads", type=positive_int, default=1, help="BLAS threads")
    iwae.add_argument(
        "--eval-images",
        type=nonnegative_int,
        default=20,
        help="test images of the timed k=5000 evaluation (0: skip; projected to 10,000)",
    )
    iwae.add_argument("--eval-k", type=positive_int, default=5000, help="samples per image")
    args = parser.parse_args(argv)
    if args.iwae:
        from numpy_vae.experiments import iwae_speed

        report = iwae_speed.run(
            args.k,
            rounds=args.rounds or 3,
            steps=args.steps,
            threads=args.threads,
            torch=not args.no_torch,
            eval_images=args.eval_images,
            eval_k=args.eval_k,
            log=lambda s: print(s, file=sys.stderr),
        )
        print(iwae_speed.format_report(report))
        if args.json:
            write_json(args.json, report)
        return 0
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
        rounds=args.rounds or 1,
    )
    print(format_report(report))
    if args.sweep:
        print()
        print(format_sweep(report))
    if args.json:
        write_json(args.json, report)  # atomically: never a half-written report
    return 0
