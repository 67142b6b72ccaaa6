"""numpy-vae: a variational autoencoder in NumPy with hand-derived, checked gradients.

The specification is the seven modules at the top of the package (read them in this order):
:mod:`~numpy_vae.reparam`, :mod:`~numpy_vae.kl`, :mod:`~numpy_vae.likelihoods`,
:mod:`~numpy_vae.layers`, :mod:`~numpy_vae.model`, :mod:`~numpy_vae.optim` and
:mod:`~numpy_vae.gradcheck`, on :mod:`~numpy_vae.backend` (where ``xp`` comes from) and
:mod:`~numpy_vae.config` (the model's hyperparameters). The rings around them, each importing
only from the rings below it: :mod:`numpy_vae.fast` (the same math, fused and in place; what
training runs), :mod:`numpy_vae.training`, :mod:`numpy_vae.checks`, :mod:`numpy_vae.devices`,
:mod:`numpy_vae.experiments` and :mod:`numpy_vae.cli`.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

# The installed commands (numpy-vae-train, python -m numpy_vae ...) get what scripts/*.py set
# before NumPy loads OpenBLAS, which reads it only then: idle BLAS threads spin ~0.1 ms instead
# of ~0.1 s after every product (see numpy_vae/fast/parallel.py). A library import leaves the
# environment alone.
if (
    "numpy" not in sys.modules
    and sys.argv
    and (os.path.basename(sys.argv[0]).startswith("numpy-vae") or sys.argv[0] == "-m")
):
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

from numpy_vae.backend import Backend, BackendUnavailable, get_backend
from numpy_vae.gradcheck import check_gradients, numerical_gradient, relative_error
from numpy_vae.model import VAE, LossParts
from numpy_vae.optim import SGD, Adam

__all__ = [  # the specification's names; LAZY_NAMES below lists the rest
    "VAE",
    "SGD",
    "Adam",
    "Backend",
    "BackendUnavailable",
    "LossParts",
    "check_gradients",
    "get_backend",
    "numerical_gradient",
    "relative_error",
]
__version__ = "0.1.0"

#: The rest of the public API, from the rings above the specification: importable from
#: ``numpy_vae`` and loaded on first use (so ``import numpy_vae`` stays the math alone).
LAZY_NAMES = {
    "ModelConfig": "numpy_vae.config",
    "FastVAE": "numpy_vae.fast",
    "FastAdam": "numpy_vae.fast",
    "Dataset": "numpy_vae.training.trainer",
    "TrainConfig": "numpy_vae.training.trainer",
    "Trainer": "numpy_vae.training.trainer",
    "evaluate_elbo": "numpy_vae.training.trainer",
    "load_mnist": "numpy_vae.training.data",
    "scale_images": "numpy_vae.training.data",
    "binarize": "numpy_vae.training.data",
    "iw_log_likelihood": "numpy_vae.training.evaluate",
    "active_units": "numpy_vae.training.evaluate",
    "save_model": "numpy_vae.training.checkpoint",
    "load_model": "numpy_vae.training.checkpoint",
    "train_run": "numpy_vae.training.runs",
    "write_figures": "numpy_vae.training.runs",
}


def __getattr__(name: str) -> object:
    if name in LAZY_NAMES:
        return getattr(importlib.import_module(LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *LAZY_NAMES])


#: Module paths from before the package had rings, and where each module lives now. Importing an
#: old path gives the new module itself (the same object), so old imports keep working.
MOVED_MODULES = {
    "atomic": "training.atomic",
    "benchmark": "experiments.benchmark",
    "buffers": "fast.buffers",
    "checkpoint": "training.checkpoint",
    "data": "training.data",
    "devicecheck": "devices.gpucheck",
    "estimators": "experiments.estimators",
    "evaluate": "training.evaluate",
    "golden": "checks.golden",
    "gradreport": "checks.gradreport",
    "parallel": "fast.parallel",
    "parameters": "fast.parameters",
    "plots": "training.plots",
    "runs": "training.runs",
    "strict_backend": "devices.strict",
    "torch_twin": "checks.torch_twin",
    "train": "training.trainer",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``numpy_vae.<old name>`` to the module at its new path."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        old = name.removeprefix(f"{__name__}.")
        if old != name and old in MOVED_MODULES:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name.split('.')[-1]]}")

    def exec_module(self, module):  # noqa: ANN001, ANN201
        pass  # the module at the new path is already executed


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
