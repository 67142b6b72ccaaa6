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
import sys
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.cli.common import (
    Parser,
    add_progress_flags,
    fail,
    load_dataset,
    positive_int,
    run_study,
)
from numpy_vae.experiments.burda import ROWS, collect, markdown_table, run_row
from numpy_vae.training.data import default_data_dir, default_runs_dir


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
    p.add_argument("--runs-dir", type=Path, default=default_runs_dir(), help="parent of the runs")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="MNIST cache")
    p.add_argument(
        "--table",
        action="store_true",
        help="train nothing: print the measured stages as the README's Markdown table",
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
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        return fail(p.prog, f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.stages > 8:
        return fail(p.prog, f"--stages is at most 8 (the paper's schedule), got {args.stages}")

    def study() -> None:
        dataset, _ = load_dataset(args.data_dir, None)
        bar = not args.no_progress and sys.stderr.isatty()
        for row in rows:
            for s in run_row(
                row,
                dataset,
                args.runs_dir,
                args.stages,
                iw_k=args.iw_k,
                test_images=args.test_images,
                progress=bar,
                log_interval=args.log_interval,
            ):
                print(
                    f"{row} stage {s['stage']} (epoch {s['epoch']}): test NLL "
                    f"{s['test_iw_nll']:.2f} ± {s['test_iw_nll_se']:.2f} (k = {s['iw_k']}, "
                    f"{s['test_images']} images), -bound {s['test_bound']:.2f}, active "
                    f"{s['active_units']}, {s['seconds_per_epoch']:.0f} s/epoch",
                    flush=True,
                )

    return run_study(p.prog, study, "a stage's end")
