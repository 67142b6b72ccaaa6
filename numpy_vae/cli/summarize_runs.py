"""Print a markdown table comparing finished runs, one row per run folder, and optionally draw it.

The first line is the --help description, so it is plain text (no reStructuredText markup).
The command line of scripts/summarize_runs.py, python -m numpy_vae summarize-runs and
numpy-vae-summarize-runs:

    python scripts/summarize_runs.py runs/study-* --figure docs/study.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.experiments.variants import format_study_table, summarize_runs
from numpy_vae.training.plots import plot_study


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (and draw the figure); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--figure", type=Path, help="also draw the comparison as a PNG here")
    args = parser.parse_args(argv)
    try:
        rows = summarize_runs(args.runs)
    except (ValueError, OSError) as err:
        print(f"summarize_runs.py: error: {err}", file=sys.stderr)
        return 2
    print(format_study_table(rows))
    if args.figure:
        plot_study(rows, args.figure)
        print(f"wrote {args.figure}")
    return 0
