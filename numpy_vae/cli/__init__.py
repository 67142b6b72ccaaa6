"""The command lines: one module per program, each with ``main(argv) -> exit status``.

``scripts/<name>.py`` is a shim that calls ``numpy_vae.cli.<name>.main``. Shared here: one-line
errors with exit status 2 (:class:`~numpy_vae.cli.common.Parser`), the argument types, the model
flags and the data loading (:mod:`numpy_vae.cli.common`); the flags, reports and run of rows
that the studies share (:mod:`numpy_vae.cli.study`). Nothing below this ring imports it.
"""

from numpy_vae.cli.common import add_model_flags
from numpy_vae.cli.evaluate import main as evaluate_main
from numpy_vae.cli.train import main as train_main

__all__ = ["add_model_flags", "evaluate_main", "train_main"]
