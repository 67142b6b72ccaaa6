"""numpy-vae: a variational autoencoder in NumPy with hand-derived, checked gradients.

The specification is the modules at the top of the package (read them in this order):
:mod:`~numpy_vae.reparam`, :mod:`~numpy_vae.kl`, :mod:`~numpy_vae.likelihoods`,
:mod:`~numpy_vae.layers`, :mod:`~numpy_vae.decoders`, :mod:`~numpy_vae.model`,
:mod:`~numpy_vae.optim` and :mod:`~numpy_vae.gradcheck`; then the multi-sample bounds
(:mod:`~numpy_vae.bounds`, :mod:`~numpy_vae.objectives`) and the MADE decoder
(:mod:`~numpy_vae.made`). They stand on :mod:`~numpy_vae.backend` (where ``xp`` comes from),
:mod:`~numpy_vae.config` (the model's hyperparameters) and :mod:`~numpy_vae.inputs` (the checks
of everything a user passes in). The rings around them, each importing
only from the rings below it: :mod:`numpy_vae.fast` (the same math, fused and in place; what
training runs), :mod:`numpy_vae.training`, :mod:`numpy_vae.checks`, :mod:`numpy_vae.devices`,
:mod:`numpy_vae.experiments` and :mod:`numpy_vae.cli`.
"""

import importlib

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
    "Dataset": "numpy_vae.training.data",
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
