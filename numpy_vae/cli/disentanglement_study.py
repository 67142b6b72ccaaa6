"""The command line of ``scripts/disentanglement_study.py``: beta-VAE on procedural dSprites.

Trains a row per beta (the beta-VAE paper's MLP, 10 latent dimensions) on a sample of
dSprites drawn from its factors, and measures each: test reconstruction and KL, active units,
the mutual information gap and the FactorVAE score of its posterior means. Stopped anywhere,
the same command continues (each row resumes from its checkpoint; a measured row is read
back). Each run folder has the usual figures, traversal.png among them. --table prints the
measured rows; --figure draws reconstruction and the metrics against beta.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numpy_vae.cli.common import Parser, add_network_flags, fail, positive_int, progress_bar
from numpy_vae.cli.study import add_budget, add_flags, make_reports, run_study
from numpy_vae.experiments.disentanglement_study import (
    BASE,
    BETAS,
    collect,
    markdown_table,
    plot_study,
    run_name,
    run_row,
    study_data,
)
from numpy_vae.training.dsprites import DSPRITES, FactorGrid


def betas(text: str) -> list[float]:
    """An argparse type: comma-separated betas, each a finite number >= 0."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(not (0 <= v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"each beta must be a finite number >= 0, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="disentanglement_study.py", description=__doc__.split("\n\n", 1)[1])
    p.add_argument(
        "--betas",
        type=betas,
        default=list(BETAS),
        metavar="B1,B2,...",
        help="the rows' KL weights, comma-separated",
    )
    add_budget(p, BASE["epochs"])
    p.add_argument(
        "--n-train", type=positive_int, default=100_000, help="training images, drawn once"
    )
    p.add_argument("--n-test", type=positive_int, default=10_000, help="test images")
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=DSPRITES.image_size,
        help="side of the images in pixels (dSprites' factor grid, drawn smaller)",
    )
    add_network_flags(p, BASE["hidden_dims"], widths_of="of the encoder (the decoder mirrors them)")
    p.add_argument(
        "--metric-points",
        type=positive_int,
        default=10_000,
        help="tuples for MIG, training votes of the FactorVAE score (half as many to score it)",
    )
    add_flags(
        p,
        "disentanglement_beta<B>",
        "reconstruction and the two metrics against beta",
        seed_of="every row and of the data sample",
        mnist=False,
        into="PNG",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/disentanglement_study.py``; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.table or args.figures:
        found = [r for r in collect(args.runs_dir, args.seed) if r["beta"] in args.betas]
        where = f"{args.runs_dir}/{run_name(args.betas[0], args.seed)}/ (or the other betas)"
        return make_reports(p.prog, args, found, where, markdown_table, draw)
    n_images = DSPRITES.n_images
    if args.image_size < 8 or args.n_train + args.n_test > n_images:
        return fail(
            p.prog,
            f"--image-size must be at least 8 and --n-train + --n-test at most {n_images}, "
            f"got {args.image_size} and {args.n_train + args.n_test}",
        )
    grid = FactorGrid(image_size=args.image_size)

    def body() -> None:
        data = study_data(grid, args.n_train, args.n_test, args.seed)
        bar = progress_bar(args)
        for beta in args.betas:
            r = run_row(
                beta,
                data,
                args.runs_dir,
                args.epochs,
                seed=args.seed,
                metric_points=args.metric_points,
                progress=bar,
                log_interval=args.log_interval,
                hidden_dims=args.hidden,
            )
            print(
                f"beta {beta:g} (epoch {r['epoch']}): reconstruction {r['test_recon']:.2f}, "
                f"KL {r['test_kl']:.2f}, active {r['active_units']}, MIG {r['mig']:.3f}, "
                f"FactorVAE {r['factor_vae']:.3f}",
                flush=True,
            )

    return run_study(p.prog, body, "a row")


def draw(args: argparse.Namespace, found: list[dict[str, Any]]) -> list[Path]:
    """``--figure``: reconstruction and the two metrics of the measured rows against beta."""
    plot_study(found, args.figures)
    return [args.figures]
