"""The command line of ``scripts/burda_study.py``: Burda et al. (2016) Table 1, row by row.

Trains the rows of the paper's one-stochastic-layer MNIST table under the burda2016 protocol,
stage by stage (stage i is 3^i epochs), and measures each stage's end: test NLL by the
importance-weighted estimate (k = 5000), the bound trained on, active units. Stopped anywhere,
the same command continues (each row resumes from its checkpoint and skips measured stages).
Two processes with different --rows use both cores better than one (batch 20 is too small for
two BLAS threads).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from numpy_vae.cli.common import Parser, fail, positive_int
from numpy_vae.cli.study import add_budget, add_flags, add_rows, chosen_rows, make_reports, run_rows
from numpy_vae.experiments.burda import ROWS, collect, markdown_table, run_row


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="burda_study.py", description=__doc__.split("\n\n", 1)[1])
    add_rows(p, ROWS)
    p.add_argument(
        "--stages",
        type=positive_int,
        default=3,
        help="train each row through this many stages (1..8; 8 is the paper's 3,280 epochs; "
        "stages end at epochs 1, 4, 13, 40, 121, 364, 1093, 3280)",
    )
    add_budget(
        p,
        iw_k=5000,
        measured="the NLL (default: all 10,000; k = 5000 on all of them is about 10 CPU-minutes "
        "per stage)",
    )
    add_flags(
        p,
        None,
        None,
        table="the measured stages as the Markdown table of docs/10-importance-weighting.md",
        steps="batches, and test images of the NLL estimate",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/burda_study.py``; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.table:
        where = f"{args.runs_dir} (burda_<row>/stage_*.json)"
        return make_reports(
            p.prog, args, collect(args.runs_dir), where, markdown_table, what="stage"
        )
    try:
        rows = chosen_rows(args.rows, ROWS)
    except ValueError as err:
        return fail(p.prog, str(err))
    if args.stages > 8:
        return fail(p.prog, f"--stages is at most 8 (the paper's schedule), got {args.stages}")
    return run_rows(p.prog, args, rows, run_row, args.stages, stage_lines, "a stage's end")


def stage_lines(row: str, stages: list[dict[str, Any]]) -> list[str]:
    """One line per measured stage of ``row``: what ``main`` prints."""
    return [
        f"{row} stage {s['stage']} (epoch {s['epoch']}): test NLL "
        f"{s['test_iw_nll']:.2f} ± {s['test_iw_nll_se']:.2f} (k = {s['iw_k']}, "
        f"{s['test_images']} images), -bound {s['test_bound']:.2f}, active "
        f"{s['active_units']}, {s['seconds_per_epoch']:.0f} s/epoch"
        for s in stages
    ]
