"""``python -m numpy_vae PROGRAM [ARGS]``: the command lines of ``scripts/`` by name.

``python -m numpy_vae train --epochs 5`` is ``python scripts/train_mnist.py --epochs 5``.
"""

import importlib
import sys

PROGRAMS = {
    "train": "train",
    "evaluate": "evaluate",
    "gradcheck": "gradcheck",
    "gradient-variance": "gradient_variance",
    "benchmark": "benchmark",
    "compare-torch": "compare_torch",
    "check-gpu": "check_gpu",
    "burda-study": "burda_study",
    "make-golden": "make_golden",
    "summarize-runs": "summarize_runs",
}


def main(argv: list[str] | None = None) -> int:
    """Run the program named first in ``argv``; returns its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in PROGRAMS:
        given = f"unknown program {argv[0]!r}; " if argv and argv[0] not in ("-h", "--help") else ""
        print(
            f"usage: python -m numpy_vae PROGRAM [ARGS]\n{given}programs: {', '.join(PROGRAMS)} "
            "(each takes --help)",
            file=sys.stderr if given or not argv else sys.stdout,
        )
        return 2 if given or not argv else 0
    module = importlib.import_module(f"numpy_vae.cli.{PROGRAMS[argv[0]]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
