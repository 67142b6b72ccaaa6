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

from numpy_vae.cli.common import (
    Parser,
    add_progress_flags,
    add_study_folders,
    chosen_rows,
    fail,
    positive_int,
    run_rows,
)
from numpy_vae.experiments.burda import ROWS, collect, markdown_table, run_row


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="burda_study.py", description=__doc__.split("\n\n", 1)[1])
    p.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated rows to train, from {', '.join(ROWS)}",
    )
    p.add_argument(
        "--stages",
        type=positive_int,
        default=3,
        help="train each row through this many stages (1..8; 8 is the paper's 3,280 epochs; "
        "stages end at epochs 1, 4, 13, 40, 121, 364, 1093, 3280)",
    )
    p.add_argument("--iw-k", type=positive_int, default=5000, help="importance samples for NLL")
    p.add_argument(
        "--test-images",
        type=positive_int,
        help="measure the NLL on this many test images drawn at random once (default: all "
        "10,000; k = 5000 on all of them is about 10 CPU-minutes per stage)",
    )
    add_study_folders(p)
    p.add_argument(
        "--table",
        action="store_true",
        help="train nothing: print the measured stages as the Markdown table of "
        "docs/10-importance-weighting.md",
    )
    add_progress_flags(p, "batches, and test images of the NLL estimate")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/burda_study.py``; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.table:
        found = collect(args.runs_dir)
        if not found:
            return fail(
                p.prog, f"no measured stage under {args.runs_dir} (burda_<row>/stage_*.json)"
            )
        print(markdown_table(found))
        return 0
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
