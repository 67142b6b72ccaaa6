"""The one place where the array module and the floating-point type are chosen.

Every other module receives a :class:`Backend` and does its math with ``backend.xp``
(NumPy or CuPy) and ``backend.special`` (``scipy.special`` or ``cupyx.scipy.special``).
This is the "CPU/GPU agnostic code" pattern of CuPy and Chainer: ``xp`` flows in, the same
expression serves both array modules, and transfers to and from the host are explicit
(:meth:`Backend.asarray` moves host data to the device, :func:`to_host` brings it back).

Three backends:

``"numpy"``
    The host. The default.
``"cupy"``
    An NVIDIA GPU through CuPy, an optional dependency imported here and nowhere else, and only
    when this backend is chosen. If CuPy is missing or no GPU is visible, choosing it raises
    :class:`BackendUnavailable` with a one-line reason and the fix.
``"strict"``
    A CPU test device (:mod:`numpy_vae.devices.strict`), for checking device code without a GPU
    (``--backend strict``), slower than ``"numpy"`` for anything else: NumPy underneath, CuPy's
    manners on top (implicit conversion to NumPy raises, mixing with host arrays raises, CuPy's
    generator API, every transfer counted). The test suite runs the real code on it to prove
    that nothing leaks to the host on a machine without a GPU.

Float32 is the default for training; gradient checks use float64 so that central differences
are accurate to about 1e-10.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy
import scipy.special

BACKENDS = ("numpy", "cupy", "strict")
DTYPES = ("float32", "float64")
CUPY_FIX = (
    "pip install cupy-cuda12x (CUDA 12) or cupy-cuda11x (CUDA 11), matching the CUDA version "
    "that `nvidia-smi` reports"
)


class BackendUnavailable(ValueError):
    """The chosen backend cannot run on this machine (CuPy not installed, or no usable GPU)."""


@dataclass(frozen=True)
class Backend:
    """An array module, its special functions and a floating-point type.

    Attributes
    ----------
    name : str
        ``"numpy"`` (default), ``"cupy"`` or ``"strict"`` (the CPU test device).
    xp : module
        The array module (``numpy``, ``cupy``, or the test device's namespace).
    special : module
        Special functions with the same interface as ``scipy.special`` (``expit``).
    dtype : numpy.dtype
        Floating-point type of parameters, activations and gradients.
    """

    name: str
    xp: Any
    special: Any
    dtype: Any

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move ``a`` to this backend's device as an array of ``dtype`` (default ``self.dtype``)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_host(self, a: Any) -> numpy.ndarray:
        """Copy an array of this backend to a NumPy array on the host (the explicit transfer)."""
        return to_host(a)

    def rng(self, seed: int | None) -> Any:
        """A seeded generator drawing on the device.

        NumPy: ``numpy.random.default_rng(seed)`` (PCG64). CuPy: ``cupy.random.default_rng(seed)``
        (cuRAND XORWOW), whose state cannot be serialised; callers derive a fresh generator from
        an integer seed instead of storing one. Both offer ``standard_normal(size, dtype=,
        out=)`` and ``random(size, dtype=)``; only NumPy's has ``permutation`` (see
        :meth:`permutation`). The two never draw the same numbers for the same seed.
        """
        if self.name == "numpy":
            return numpy.random.default_rng(seed)
        return self.xp.random.default_rng(seed)

    def permutation(self, rng: Any, n: int) -> Any:
        """A uniformly random permutation of ``range(n)``, as an integer array on the device.

        NumPy keeps ``rng.permutation(n)`` (so NumPy runs draw what they always drew). CuPy's
        ``Generator`` has no ``permutation``, so there the permutation is the order that sorts
        ``n`` independent uniform draws, which is uniformly distributed over all orders.
        """
        if self.name == "numpy":
            return rng.permutation(n)
        return self.xp.argsort(rng.random(n))

    def describe(self) -> str:
        """One line naming the array module, its version and the device, for reports."""
        if self.name == "cupy":
            try:
                device = self.xp.cuda.Device()
                props = self.xp.cuda.runtime.getDeviceProperties(device.id)
                gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
                where = f"GPU {device.id}: {gpu} ({props['multiProcessorCount']} SMs)"
            except Exception as err:  # a report line must not fail
                where = f"a GPU ({_one_line(err, 60)})"
            return f"cupy {self.xp.__version__} on {where}, {self.dtype.name}"
        if self.name == "strict":
            return f"strict CPU test device (numpy {numpy.__version__}), {self.dtype.name}"
        return f"numpy {numpy.__version__} on the CPU, {self.dtype.name}"

    def synchronize(self) -> None:
        """Wait until the device has finished the work queued so far (for timing); else a no-op."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()


def get_backend(name: str | Backend = "numpy", dtype: str | Any = "float32") -> Backend:
    """Choose the array module and floating-point type.

    Parameters
    ----------
    name : {"numpy", "cupy", "strict"}
        Array module; ``"strict"`` is the CPU test device of :mod:`numpy_vae.devices.strict`.
    dtype : {"float32", "float64"}
        Floating-point type; float32 for training, float64 for gradient checks.

    Returns
    -------
    Backend

    Raises
    ------
    BackendUnavailable
        If ``"cupy"`` is chosen but CuPy is not installed or no GPU is usable (a ValueError).
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
    dtype = numpy.dtype(dtype_name)
    if name == "numpy":
        return Backend(name="numpy", xp=numpy, special=scipy.special, dtype=dtype)
    if name == "cupy":
        cupy, special = _import_cupy()
        return Backend(name="cupy", xp=cupy, special=special, dtype=dtype)
    from numpy_vae.devices import strict as strict_backend

    return Backend(name="strict", xp=strict_backend.xp, special=strict_backend.special, dtype=dtype)


_CUPY: tuple[Any, Any] | None = None


def _import_cupy() -> tuple[Any, Any]:
    """``(cupy, cupyx.scipy.special)``, or BackendUnavailable saying what is missing and the fix.

    Beyond the import, one tiny reduction runs on the device: it needs a driver, a visible GPU
    and a working kernel compiler, the three usual points of failure of a fresh CuPy install.
    """
    global _CUPY
    if _CUPY is not None:
        return _CUPY
    try:
        import cupy
        import cupyx.scipy.special
    except ModuleNotFoundError as err:
        if err.name not in ("cupy", "cupyx"):
            raise BackendUnavailable(
                f"backend 'cupy' is unavailable: CuPy failed to import ({_one_line(err)}); "
                f"reinstall it: {CUPY_FIX}"
            ) from None
        raise BackendUnavailable(
            f"backend 'cupy' is unavailable: CuPy is not installed; {CUPY_FIX}"
        ) from None
    except Exception as err:  # CUDA libraries that fail to load, a broken install
        raise BackendUnavailable(
            f"backend 'cupy' is unavailable: CuPy failed to import ({_one_line(err)}); "
            f"reinstall it: {CUPY_FIX}"
        ) from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("the CUDA runtime reports 0 devices")
        cupy.arange(4, dtype=cupy.float32).sum().item()
    except Exception as err:  # cupy.cuda.runtime.CUDARuntimeError, a failed compile, ...
        raise BackendUnavailable(
            f"backend 'cupy' is unavailable: CuPy is installed but no usable GPU is visible "
            f"({_one_line(err)}); check the GPU and its driver with `nvidia-smi`, and "
            "CUDA_VISIBLE_DEVICES"
        ) from None
    _CUPY = (cupy, cupyx.scipy.special)
    return _CUPY


def _one_line(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_host(a: Any) -> numpy.ndarray:
    """An array of any backend as a NumPy array: the one explicit device-to-host transfer.

    NumPy arrays are returned as they are (no copy); CuPy arrays are copied with
    ``cupy.asnumpy``; arrays of the test device with its counted transfer.
    """
    if isinstance(a, numpy.ndarray):
        return a
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy.asnumpy(a)
    strict = sys.modules.get(f"{__package__}.devices.strict")
    if strict is not None and isinstance(a, strict.DeviceArray):
        return strict.to_host(a)
    return numpy.asarray(a)


def array_module(a: Any) -> Any:
    """The array module that ``a`` belongs to (for code handed arrays without a backend)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    strict = sys.modules.get(f"{__package__}.devices.strict")
    if strict is not None and isinstance(a, strict.DeviceArray):
        return strict.xp
    return numpy
