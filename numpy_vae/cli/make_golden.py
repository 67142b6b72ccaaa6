"""Write the golden files tests/fixtures/golden_<variant>.npz (see numpy_vae.checks.golden).

    python scripts/make_golden.py                           # every variant
    python scripts/make_golden.py --variant gaussian --out /tmp/golden
    python scripts/make_golden.py --variant vae_k made      # only these
    python scripts/make_golden.py --variant completion completion_baseline

The committed files are references: regenerate them only on purpose (a deliberate change of what
the model computes), and say so in the commit message. A new variant is written alone, so that
the others stay byte for byte as committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from numpy_vae.checks.golden import COMPLETION_VARIANTS, VARIANTS, write_golden

DEFAULT_OUT = Path("tests") / "fixtures"  # run from the repository root


def main(argv: list[str] | None = None) -> int:
    every = {**VARIANTS, **COMPLETION_VARIANTS}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        nargs="+",
        choices=[*every, "all"],
        default=["all"],
        metavar="VARIANT",
        help=f"the variants to write: all (the default), or some of {', '.join(every)}",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    variants = list(every) if "all" in args.variant else list(dict.fromkeys(args.variant))
    for variant in variants:
        path = write_golden(variant, args.out)
        print(f"{path}  ({path.stat().st_size / 1024:.1f} KiB)  {every[variant].description}")
    return 0
