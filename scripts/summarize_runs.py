#!/usr/bin/env python
"""Print a markdown table comparing finished runs, and optionally draw it.

python scripts/summarize_runs.py runs/study-* --figure docs/study.png
"""

import argparse
import sys
from pathlib import Path

from numpy_vae.plots import plot_study
from numpy_vae.runs import format_study_table, summarize_runs

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--figure", type=Path, help="also draw the comparison as a PNG here")
    args = parser.parse_args()
    try:
        rows = summarize_runs(args.runs)
    except (ValueError, OSError) as err:
        sys.exit(f"summarize_runs.py: error: {err}")
    print(format_study_table(rows))
    if args.figure:
        plot_study(rows, args.figure)
        print(f"wrote {args.figure}")
