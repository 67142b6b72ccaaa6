"""The command line of ``scripts/collapse_study.py``: posterior collapse and its remedies.

Trains the rows of the study (an MLP and a MADE decoder, the MADE with KL warm-up, free bits, a
weaker MADE, beta < 1, and the MADE without z) on dynamically binarized MNIST with one budget,
and measures each: test negative ELBO, KL, active units, the test NLL by the importance-weighted
estimate and the mutual information between x and z. Stopped anywhere, the same command
continues (each row resumes from its checkpoint; a measured row is read back). Two processes
with different --rows use both cores. --figures draws the KL-per-dimension and sample figures
of the measured rows; --table prints the table of docs/08-posterior-collapse.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numpy_vae.cli.common import Parser, fail
from numpy_vae.cli.study import add_budget, add_flags, add_rows, chosen_rows, make_reports, run_rows
from numpy_vae.experiments.collapse import (
    ROWS,
    collect,
    markdown_table,
    plot_kl_per_dim,
    plot_samples,
    run_name,
    run_row,
)
from numpy_vae.training.checkpoint import load_model


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="collapse_study.py", description=__doc__.split("\n\n", 1)[1])
    add_rows(p, ROWS)
    add_budget(p, 20, iw_k=1000, test_images=1000, measured="the IW NLL and the mutual information")
    add_flags(p, "collapse_<row>", "kl_per_dim.png and samples.png")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/collapse_study.py``; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    try:
        rows = chosen_rows(args.rows, ROWS)
    except ValueError as err:
        return fail(p.prog, str(err))
    if args.table or args.figures:
        measured = collect(args.runs_dir, args.seed)
        found = {row: measured[row] for row in rows if row in measured}  # in the order asked
        where = f"{args.runs_dir}/{run_name('<row>', args.seed)}/"
        return make_reports(p.prog, args, found, where, markdown_table, draw)
    return run_rows(p.prog, args, rows, run_row, args.epochs, row_lines, "a row", args.seed)


def draw(args: argparse.Namespace, found: dict[str, Any]) -> list[Path]:
    """``--figures``: the KL per dimension and samples of the measured rows ``found``."""
    kl_per_dim, samples = args.figures / "kl_per_dim.png", args.figures / "samples.png"
    plot_kl_per_dim(args.runs_dir, list(found), kl_per_dim, args.seed)
    models = {r: load_model(args.runs_dir / run_name(r, args.seed)) for r in found}
    plot_samples(models, samples)
    return [kl_per_dim, samples]


def row_lines(row: str, r: dict[str, Any]) -> list[str]:
    """The line ``main`` prints for the measurement of ``row``."""
    return [
        f"{row} (epoch {r['epoch']}): test -ELBO {r['test_neg_elbo']:.2f}, NLL "
        f"{r['test_iw_nll']:.2f} ± {r['test_iw_nll_se']:.2f} (k = {r['iw_k']}), KL "
        f"{r['test_kl']:.2f}, active {r['active_units']}, MI "
        f"{r['mutual_information']:.2f}"
    ]
