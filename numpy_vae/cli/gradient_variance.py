"""The command line of ``scripts/gradient_variance.py``: the estimator experiment."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.cli.common import Parser, add_progress_flags, positive_int
from numpy_vae.experiments.estimators import (
    SAMPLE_COUNTS,
    check_closed_form,
    decoder_case,
    gradient_variance,
)
from numpy_vae.training.atomic import write_json
from numpy_vae.training.data import default_data_dir, default_runs_dir
from numpy_vae.training.progress import Progress


def parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/gradient_variance.py``."""

    def counts(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected integers like 1,10,100, got {text!r}"
            ) from None
        if min(values) < 1:
            raise argparse.ArgumentTypeError(f"sample counts must be positive, got {text!r}")
        return values

    p = Parser(
        prog="gradient_variance.py",
        description="Estimate the gradient of E_q[log p(x|z)] with respect to mu and logvar "
        "with the reparameterization trick and with the score function (REINFORCE), for "
        "K = 1 to 1000 samples: print the variance of each against K, draw it (log-log), and "
        "check both estimators on a quadratic with a closed-form expectation. Exit status 1 if "
        "that check fails, 2 on bad usage.",
    )
    p.add_argument("--run", type=Path, metavar="RUN_DIR", help="use this training run's model")
    p.add_argument("--image", type=int, default=0, help="MNIST test image (if MNIST is cached)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="MNIST cache folder")
    p.add_argument(
        "--sample-counts", type=counts, default=list(SAMPLE_COUNTS), help="the values of K"
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=100,
        help="independent K-sample estimates at the largest K",
    )
    p.add_argument("--latent-dim", type=positive_int, default=4, help="L of the closed-form case")
    p.add_argument("--seed", type=int, default=0, help="noise, the closed-form case, the model")
    p.add_argument(
        "--plot",
        type=Path,
        help="figure path (default: gradient_variance.png in the --run folder, or in "
        "$NUMPY_VAE_RUNS, else ./runs, for an untrained model)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    add_progress_flags(p, "rows of z through the decoder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/gradient_variance.py``; returns the exit status."""
    from numpy_vae.training.plots import plot_gradient_variance

    p = parser()
    args = p.parse_args(argv)
    if args.repeats < 2:
        print(f"{p.prog}: error: --repeats must be at least 2", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        closed, passed, lines = check_closed_form(args.latent_dim, args.repeats, args.seed)
        print("\n".join(lines))
        print()
        objective, mu, logvar, what = decoder_case(args.run, args.image, args.data_dir, args.seed)
        # Each estimator passes every draw through the decoder once (values or gradients).
        rows = 2 * args.repeats * max(args.sample_counts)
        bar = not args.no_progress and sys.stderr.isatty()
        if bar or args.log_interval:
            label = "decoder passes, rows of z"
            objective.progress = Progress(rows, label, bar=bar, log_interval=args.log_interval)
        study = gradient_variance(
            objective, mu, logvar, args.sample_counts, args.repeats, args.seed
        )
        print(f"f(z) = log p(x|z): {what}; q = N(mu, exp(logvar)) from its encoder")
        print(
            f"variance of the K-sample gradient estimate (mean over the {mu.size} coordinates), "
            f"from {study.samples:,} draws cut into blocks of K:"
        )
        if objective.progress is not None:
            objective.progress.close()
        print(study.table())
        # Beside the run it studies: an untrained model's figure never overwrites a run's.
        plot = args.plot or (args.run or default_runs_dir()) / "gradient_variance.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_gradient_variance(study, plot, what)
        print(f"wrote {plot}")
        if args.json is not None:
            data = {"closed_form": closed.to_json(), "closed_form_passed": passed,
                    "decoder": {**study.to_json(), "case": what}}  # fmt: skip
            write_json(args.json, data)
            print(f"wrote {args.json}")
    except (ValueError, OSError) as err:
        print(f"{p.prog}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{time.perf_counter() - start:.1f} s")
    return 0 if passed else 1
