"""numpy-vae: a variational autoencoder in NumPy with hand-derived, checked gradients."""

from .backend import Backend, BackendUnavailable, get_backend
from .gradcheck import check_gradients, numerical_gradient, relative_error
from .model import VAE, LossParts
from .optim import SGD, Adam

__all__ = [
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
