"""The command line of ``scripts/gradcheck.py``.

Check every parameter gradient of a VAE in float64 and print one row per parameter array, in
three sections: the specification (numpy_vae.VAE) against central differences of its loss; the
fast path that training runs (numpy_vae.fast.FastVAE) against central differences of its own
loss; and the fast path against the specification (same parameters, inputs and eps), within 64 n
eps (n = B K + D + H). Exit status 0 if all pass, 1 if one fails, 2 on bad usage. Model flags
mean what they mean for train_mnist.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.checks.gradreport import DEFAULT_STEP, DEFAULT_TOL, PATHS, gradient_report
from numpy_vae.cli.common import (
    Parser,
    add_model_flags,
    fail,
    finite_float,
    model_config_from_args,
    nonnegative_int,
    positive_int,
)
from numpy_vae.training.atomic import write_json


def parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/gradcheck.py``."""
    p = Parser(prog="gradcheck.py", description=__doc__.split("\n\n", 1)[1])
    add_model_flags(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="examples in the batch")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="weights, inputs, noise and entries"
    )
    p.add_argument(
        "--entries", type=positive_int, default=10, help="entries checked per parameter array"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="check every entry (the default model has 650k: about half an hour for each of the "
        "specification and the fast path)",
    )
    p.add_argument("--tol", type=finite_float(0, False), default=DEFAULT_TOL, help="relative bound")
    p.add_argument("--h", type=finite_float(0, False), default=DEFAULT_STEP, help="difference step")
    p.add_argument(
        "--path",
        choices=PATHS,
        default="both",
        help="which code to check: spec (the specification against finite differences), fast "
        "(the fast path training runs, against finite differences and against the "
        "specification) or both; the stl and dreg estimators are not gradients of the loss, so "
        "for them only the fast path against the specification is checked",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/gradcheck.py``; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    try:
        report = gradient_report(
            model_config_from_args(args),
            batch=args.batch_size,
            seed=args.seed,
            entries=None if args.full else args.entries,
            tol=args.tol,
            h=args.h,
            path=args.path,
        )
        print(report.format())
        if args.json is not None:
            write_json(args.json, report.to_json())
    except (ValueError, OSError) as err:
        return fail(p.prog, str(err))
    return 0 if report.passed else 1
