"""``python -m numpy_vae PROGRAM [ARGS]``: the command lines of ``scripts/`` by name.

``python -m numpy_vae train --epochs 5`` is ``python scripts/train_mnist.py --epochs 5`` and the
installed ``numpy-vae-train --epochs 5``; its usage line and messages name it ``numpy-vae-train``
(the installed command of the same program), not the script, which was not run.
"""

from __future__ import annotations

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
    "collapse-study": "collapse_study",
    "disentanglement-study": "disentanglement_study",
    "completion-study": "completion_study",
    "make-golden": "make_golden",
    "summarize-runs": "summarize_runs",
}

#: The programs installed as a command of their own, ``numpy-vae-<program>`` (setup.cfg's
#: console scripts). make-golden is not: it writes the test fixtures of a checkout.
INSTALLED = frozenset(PROGRAMS) - {"make-golden"}


def invoked_name(program: str) -> str:
    """The name a program's usage line and messages give it when run through this module.

    The installed command where there is one: the command lines' parser
    (:class:`numpy_vae.cli.common.Parser`) takes a ``numpy-vae-*`` program name from
    ``sys.argv[0]``, and anything else would leave it naming its script (``train_mnist.py``),
    which was not run. Otherwise the invocation itself, which a plain ``argparse`` parser shows
    as it is.
    """
    return f"numpy-vae-{program}" if program in INSTALLED else f"python -m numpy_vae {program}"


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
    # The program's parser reads its name from sys.argv[0]; restored afterwards, so that a
    # caller in the same process (a test) keeps its own.
    saved = list(sys.argv)
    sys.argv[:1] = [invoked_name(argv[0])]
    try:
        return module.main(argv[1:])
    finally:
        sys.argv[:] = saved


if __name__ == "__main__":
    sys.exit(main())
