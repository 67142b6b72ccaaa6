"""The one place where the array module and the floating-point type are chosen.

Every other module receives a :class:`Backend` and does its math with ``backend.xp``
(NumPy, or later CuPy) and ``backend.special`` (``scipy.special`` or ``cupyx.scipy.special``).
This is the "CPU/GPU agnostic code" pattern of CuPy and Chainer: ``xp`` flows in, the same
expression serves both array modules, and transfers to and from the host are explicit.

Float32 is the default for training; gradient checks use float64 so that central differences
are accurate to about 1e-10.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy
import scipy.special

BACKENDS = ("numpy",)
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Backend:
    """An array module, its special functions and a floating-point type.

    Attributes
    ----------
    name : str
        ``"numpy"`` (default).
    xp : module
        The array module (``numpy``).
    special : module
        Special functions with the same interface as ``scipy.special`` (``expit``, ``log_expit``).
    dtype : numpy.dtype
        Floating-point type of parameters, activations and gradients.
    """

    name: str
    xp: ModuleType
    special: ModuleType
    dtype: Any

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move ``a`` to this backend's device as an array of ``dtype`` (default ``self.dtype``)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_host(self, a: Any) -> numpy.ndarray:
        """Copy an array of this backend to a NumPy array on the host (the explicit transfer)."""
        return numpy.asarray(a)

    def rng(self, seed: int | None) -> Any:
        """A seeded generator with ``standard_normal(size, dtype=..., out=...)`` on the device."""
        return numpy.random.default_rng(seed)


def get_backend(name: str = "numpy", dtype: str | Any = "float32") -> Backend:
    """Choose the array module and floating-point type.

    Parameters
    ----------
    name : {"numpy"}
        Array module.
    dtype : {"float32", "float64"}
        Floating-point type; float32 for training, float64 for gradient checks.

    Returns
    -------
    Backend

    Raises
    ------
    ValueError
        If the name or the dtype is not one of the supported values.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        dtype_name = numpy.dtype(dtype).name
    except TypeError:
        dtype_name = str(dtype)
    if dtype_name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose float32 (training) or float64")
    return Backend(name="numpy", xp=numpy, special=scipy.special, dtype=numpy.dtype(dtype_name))


def array_module(a: Any) -> ModuleType:
    """The array module that ``a`` belongs to (for code handed arrays without a backend)."""
    return numpy
