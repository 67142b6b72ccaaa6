"""A CPU stand-in for a GPU array module, for tests: NumPy underneath, CuPy's manners on top.

**A test device.** It is slower than NumPy and exists to prove, on a machine without a GPU,
that the package keeps its arrays on the device (``--backend strict`` checks a run that way).
Choose it as backend ``"strict"`` (``get_backend("strict")``,
``TrainConfig(backend="strict")``).

CuPy differs from NumPy where it hurts, and :class:`DeviceArray` differs in the same ways:

- ``numpy.asarray(device_array)`` raises ``TypeError``, as CuPy's "implicit conversion to a
  NumPy array is not allowed". Every conversion the code did not ask for fails loudly: a NumPy
  function, matplotlib, ``numpy.testing``, ``numpy.savez``.
- An operation mixing a device array with a ``numpy.ndarray`` (of any shape, 0-d included)
  raises ``TypeError``. Python and NumPy scalars mix freely, as in CuPy.
- Random numbers come from :func:`default_rng`, whose :class:`Generator` has only methods that
  ``cupy.random.Generator`` has (``random``, ``standard_normal``, ``integers``, ``uniform``,
  with CuPy's signatures): no ``permutation``, ``shuffle`` or ``choice``. Draws are made on the
  device, by another bit generator (Philox) than NumPy's default, so no test can rely on the two
  backends drawing the same numbers; and the generator refuses to be pickled, as CuPy's state
  cannot be serialised.
- Special functions exist only in :data:`special` (as ``cupyx.scipy.special``); a
  ``scipy.special`` ufunc applied to a device array raises.
- Every transfer is explicit and counted (:func:`count_transfers`): device to host by
  :func:`to_host`, and by the scalar reads that CuPy permits but that synchronise the device
  (``float()``, ``int()``, ``bool()``, ``operator.index()``, ``.item()``, ``.tolist()``,
  formatting); host to device by ``xp.asarray``/``xp.array`` of host data. Transfers copy, as
  they must between two memories: a host array never aliases device memory.

NumPy ufuncs (``numpy.exp(device_array)``) run on the device, as CuPy's ``__array_ufunc__``
makes them. Stricter than CuPy, on purpose: a NumPy *function* (``numpy.concatenate``,
``numpy.clip``) applied to a device array raises instead of dispatching through
``__array_function__``, and host arrays or lists are refused as indices into a device array
and as values assigned into one. Code must name ``backend.xp``, which keeps it honest about
which module runs.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy
import scipy.special
from numpy.lib.mixins import NDArrayOperatorsMixin

_HOST_SCALARS = (bool, int, float, complex, numpy.generic)
# Transfers are reported at the first caller outside the boundary (this file and backend.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
_BOUNDARY = {
    os.path.normcase(os.path.abspath(path))
    for path in (__file__, os.path.join(_HERE, os.pardir, "backend.py"))
}


# --------------------------------------------------------------------------------------------
# Counting transfers
# --------------------------------------------------------------------------------------------


@dataclass
class Transfers:
    """Transfers seen while :func:`count_transfers` was active.

    Attributes
    ----------
    to_host, to_device : int
        Number of device-to-host and host-to-device transfers.
    events : list of (direction, what, bytes, where)
        One entry per transfer; ``where`` is the ``file:line`` of the first caller outside
        this module and :mod:`numpy_vae.backend`.
    """

    to_host: int = 0
    to_device: int = 0
    events: list[tuple[str, str, int, str]] = field(default_factory=list)

    def report(self) -> str:
        """The events, one per line, for an assertion message."""
        lines = (f"  {d} {what} ({n} bytes) at {where}" for d, what, n, where in self.events)
        return "\n".join(lines)


_counters: list[Transfers] = []


@contextmanager
def count_transfers() -> Iterator[Transfers]:
    """Count the transfers made inside the ``with`` block.

    Examples
    --------
    >>> with count_transfers() as t:
    ...     loss = float(model.loss(x, validate=False).loss)
    >>> t.to_host
    1
    """
    counter = Transfers()
    _counters.append(counter)
    try:
        yield counter
    finally:
        _counters.remove(counter)


def _record(direction: str, what: str, nbytes: int) -> None:
    if not _counters:
        return
    where = _caller()
    for counter in _counters:
        setattr(counter, direction, getattr(counter, direction) + 1)
        counter.events.append((direction, what, nbytes, where))


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None and os.path.normcase(frame.f_code.co_filename) in _BOUNDARY:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


# --------------------------------------------------------------------------------------------
# The device array
# --------------------------------------------------------------------------------------------


def _refuse_host(a: Any, context: str) -> TypeError:
    return TypeError(
        f"{context} mixes a host numpy.ndarray (shape {a.shape}) with device arrays; move it "
        "explicitly with backend.asarray(...) (CuPy refuses this too)"
    )


def _unwrap(value: Any, context: str) -> Any:
    """Device arrays to their NumPy payload, recursively through lists, tuples and dicts;
    host arrays refused."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, numpy.ndarray):
        raise _refuse_host(value, context)
    if isinstance(value, list | tuple):
        return type(value)(_unwrap(v, context) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, context) for k, v in value.items()}
    return value


def _wrap(value: Any) -> Any:
    """NumPy results to device arrays; NumPy scalars become 0-d device arrays (as in CuPy)."""
    if isinstance(value, numpy.ndarray):
        return DeviceArray(value)
    if isinstance(value, numpy.generic):
        return DeviceArray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _apply(func: Any, args: tuple, kwargs: dict, context: str) -> Any:
    out = kwargs.get("out")
    result = func(*_unwrap(args, context), **_unwrap(kwargs, context))
    if out is not None:
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    return _wrap(result)


def _unwrap_index(key: Any) -> Any:
    if isinstance(key, DeviceArray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k) for k in key)
    if isinstance(key, numpy.ndarray | list):
        raise TypeError(
            f"indexing a device array with a host {type(key).__name__}: build the index on the "
            "device (backend.xp.asarray(...)) so that the transfer is explicit"
        )
    return key


class DeviceArray(NDArrayOperatorsMixin):
    """An array "on the device": a NumPy array that refuses to leave except explicitly.

    Made by the functions of :data:`xp`, never directly. Arithmetic operators, indexing,
    in-place updates, views and the usual methods (``sum``, ``mean``, ``reshape``, ``astype``,
    ...) behave as NumPy's and return device arrays; reductions return 0-d device arrays, as
    CuPy's do, never host scalars.
    """

    __slots__ = ("_a",)

    def __init__(self, a: numpy.ndarray) -> None:
        self._a = a

    # Metadata lives on the host in CuPy too: reading it transfers nothing.
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[DeviceArray]:
        for i in range(len(self._a)):
            yield DeviceArray(self._a[i])

    # ---------------------------------------------------------------- leaving the device
    def __array__(self, dtype: Any = None, copy: Any = None) -> numpy.ndarray:
        raise TypeError(
            "implicit conversion of a device array to a NumPy array (numpy.asarray, a NumPy "
            "function, matplotlib, ...): copy it explicitly with backend.to_host(...)"
        )

    def _read(self, what: str) -> numpy.ndarray:
        _record("to_host", what, self._a.nbytes)
        return self._a

    def __float__(self) -> float:
        return float(self._read("float()"))

    def __int__(self) -> int:
        return int(self._read("int()"))

    def __complex__(self) -> complex:
        return complex(self._read("complex()"))

    def __bool__(self) -> bool:
        return bool(self._read("bool()"))

    def __index__(self) -> int:
        return operator.index(self._read("index"))

    def item(self, *args: Any) -> Any:
        return self._read("item()").item(*args)

    def tolist(self) -> Any:
        return self._read("tolist()").tolist()

    def __format__(self, spec: str) -> str:
        a = self._read("format")
        return format(a.item() if a.ndim == 0 else a, spec)

    def __repr__(self) -> str:
        return f"DeviceArray({self._read('repr')!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("pickling a device array: copy it to the host with backend.to_host first")

    def __copy__(self) -> DeviceArray:
        return DeviceArray(self._a.copy())

    def __deepcopy__(self, memo: Any) -> DeviceArray:
        return DeviceArray(self._a.copy())

    # ---------------------------------------------------------------- staying on the device
    def __getitem__(self, key: Any) -> DeviceArray:
        return _wrap(self._a[_unwrap_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, list):
            raise TypeError("assigning a host list into a device array: use backend.asarray")
        self._a[_unwrap_index(key)] = _unwrap(value, "assignment into a device array")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # Reached through the arithmetic operators (and NumPy scalars meeting a device array).
        if getattr(numpy, ufunc.__name__, None) is not ufunc:
            raise TypeError(
                f"{ufunc.__name__} is not a NumPy ufunc (scipy.special?): device arrays take "
                "special functions from backend.special"
            )
        if method != "__call__":
            raise TypeError(f"numpy.{ufunc.__name__}.{method} on a device array: use backend.xp")
        return _apply(ufunc, inputs, kwargs, f"numpy.{ufunc.__name__}")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(
            f"numpy.{func.__name__} called on a device array: use backend.xp.{func.__name__}"
        )


_METHODS = (
    "all", "any", "argmax", "argmin", "argsort", "astype", "clip", "copy", "cumsum", "dot",
    "fill", "max", "mean", "min", "nonzero", "prod", "ravel", "repeat", "reshape", "round",
    "sort", "squeeze", "std", "sum", "take", "transpose", "var",
)  # fmt: skip


def _method(name: str) -> Any:
    def method(self: DeviceArray, *args: Any, **kwargs: Any) -> Any:
        return _apply(getattr(self._a, name), args, kwargs, f"DeviceArray.{name}")

    method.__name__ = method.__qualname__ = name
    return method


for _name in _METHODS:
    setattr(DeviceArray, _name, _method(_name))


# --------------------------------------------------------------------------------------------
# Crossing the boundary explicitly
# --------------------------------------------------------------------------------------------


def to_host(a: DeviceArray) -> numpy.ndarray:
    """Copy a device array to a new NumPy array (a counted device-to-host transfer)."""
    if not isinstance(a, DeviceArray):
        raise TypeError(f"to_host expects a device array, got {type(a).__name__}")
    return a._read("to_host").copy()


def asarray(a: Any, dtype: Any = None) -> DeviceArray:
    """A device array from ``a``: no transfer if it is one already (cast to ``dtype`` if given),
    else a copy of the host data (a counted host-to-device transfer)."""
    if isinstance(a, DeviceArray):
        return a if dtype is None or a.dtype == numpy.dtype(dtype) else a.astype(dtype)
    data = numpy.array(a, dtype=dtype, copy=True)
    _record("to_device", "asarray", data.nbytes)
    return DeviceArray(data)


def array(a: Any, dtype: Any = None, copy: bool = True) -> DeviceArray:
    """As :func:`asarray`, but a device array is copied unless ``copy=False``."""
    if isinstance(a, DeviceArray):
        return DeviceArray(numpy.array(a._a, dtype=dtype, copy=copy))
    return asarray(a, dtype)


# --------------------------------------------------------------------------------------------
# Random numbers: the subset of cupy.random.Generator
# --------------------------------------------------------------------------------------------


def _shape(size: Any) -> tuple[int, ...]:
    if size is None:
        return ()
    return tuple(size) if isinstance(size, tuple | list) else (operator.index(size),)


class Generator:
    """Mimics ``cupy.random.Generator``: draws land on the device; only CuPy's methods exist.

    ``size=None`` gives a 0-d device array (as CuPy), not a Python float. ``out`` must be a
    C-contiguous device array of exactly ``dtype``.
    """

    def __init__(self, bit_generator: numpy.random.BitGenerator) -> None:
        self._rng = numpy.random.Generator(bit_generator)

    @staticmethod
    def _float_dtype(dtype: Any, method: str) -> numpy.dtype:
        dtype = numpy.dtype(dtype)
        if dtype not in (numpy.float32, numpy.float64):
            raise TypeError(f"Unsupported dtype {dtype.name} for {method}")
        return dtype

    @staticmethod
    def _check_out(out: Any, dtype: numpy.dtype, size: Any) -> numpy.ndarray:
        if not isinstance(out, DeviceArray):
            raise TypeError(f"out must be a device array, got {type(out).__name__}")
        if out.dtype != dtype:
            raise TypeError(f"Supplied output array has the wrong type: {out.dtype} for {dtype}")
        if not out.flags.c_contiguous:
            raise ValueError("Supplied output array is not contiguous, writable or aligned.")
        if size is not None and _shape(size) != out.shape:
            raise ValueError("size must match out.shape when used together")
        return out._a

    def random(self, size: Any = None, dtype: Any = numpy.float64, out: Any = None) -> DeviceArray:
        """Uniform floats in [0, 1)."""
        return self._floats("random", size, dtype, out)

    def standard_normal(
        self, size: Any = None, dtype: Any = numpy.float64, out: Any = None
    ) -> DeviceArray:
        """Standard normal floats."""
        return self._floats("standard_normal", size, dtype, out)

    def _floats(self, method: str, size: Any, dtype: Any, out: Any) -> DeviceArray:
        """Floats from NumPy's ``method``, taking ``size``, ``dtype`` and ``out`` as CuPy does."""
        dtype = self._float_dtype(dtype, method)
        draw = getattr(self._rng, method)
        if out is not None:
            draw(out=self._check_out(out, dtype, size), dtype=dtype)
            return out
        return DeviceArray(numpy.asarray(draw(_shape(size), dtype=dtype)))

    def integers(
        self,
        low: int,
        high: int | None = None,
        size: Any = None,
        dtype: Any = numpy.int64,
        endpoint: bool = False,
    ) -> DeviceArray:
        """Uniform integers in [low, high) (or [0, low))."""
        values = self._rng.integers(
            int(low), None if high is None else int(high), _shape(size), dtype, endpoint
        )
        return DeviceArray(numpy.asarray(values))

    def uniform(
        self, low: float = 0.0, high: float = 1.0, size: Any = None, dtype: Any = numpy.float64
    ) -> DeviceArray:
        """Uniform floats in [low, high), for scalar bounds."""
        values = self._rng.uniform(float(low), float(high), _shape(size)).astype(dtype)
        return DeviceArray(numpy.asarray(values))

    def __reduce__(self) -> Any:
        raise TypeError(
            "a device generator's state cannot be serialised (CuPy's cannot either): derive a "
            "fresh generator from an integer seed instead"
        )


def default_rng(seed: Any = None) -> Generator:
    """A device generator seeded like ``cupy.random.default_rng(seed)`` (Philox bits here)."""
    if isinstance(seed, Generator):
        return seed
    return Generator(numpy.random.Philox(seed))


# --------------------------------------------------------------------------------------------
# The namespaces: xp (the subset of numpy the package uses) and special
# --------------------------------------------------------------------------------------------

_FUNCTIONS = (
    "abs", "absolute", "add", "all", "any", "arange", "argmax", "argmin", "argsort",
    "broadcast_to", "ceil", "clip", "concatenate", "copy", "count_nonzero", "cumsum", "divide",
    "dot", "empty", "empty_like", "equal", "exp", "expm1", "eye", "floor", "full", "full_like",
    "greater", "greater_equal", "isfinite", "isnan", "less", "less_equal", "linspace", "log",
    "log1p", "logaddexp", "matmul", "max", "maximum", "mean", "min", "minimum", "multiply",
    "negative", "nonzero", "not_equal", "ones", "ones_like", "power", "prod", "repeat",
    "reshape", "sign", "sort", "sqrt", "square", "stack", "std", "subtract", "sum", "take",
    "tanh", "tile", "transpose", "true_divide", "var", "where", "zeros", "zeros_like",
)  # fmt: skip
_NAMES = (
    "bool_", "dtype", "e", "finfo", "float16", "float32", "float64", "iinfo", "inf", "int8",
    "int16", "int32", "int64", "intp", "nan", "newaxis", "pi", "uint8", "uint16", "uint32",
    "uint64",
)  # fmt: skip


def _function(func: Any, module: str) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _apply(func, args, kwargs, f"{module}.{func.__name__}")

    wrapper.__name__ = wrapper.__qualname__ = func.__name__
    wrapper.__doc__ = f"``{module}.{func.__name__}`` on device arrays."
    return wrapper


#: The array module of the test device: the subset of NumPy's namespace the package uses.
xp = SimpleNamespace(
    __name__=f"{__name__}.xp",
    ndarray=DeviceArray,
    asarray=asarray,
    array=array,
    random=SimpleNamespace(default_rng=default_rng, Generator=Generator),
    **{name: _function(getattr(numpy, name), "numpy") for name in _FUNCTIONS},
    **{name: getattr(numpy, name) for name in _NAMES},
)

#: Special functions of the test device (as ``cupyx.scipy.special``).
special = SimpleNamespace(
    __name__=f"{__name__}.special",
    **{
        name: _function(getattr(scipy.special, name), "scipy.special")
        for name in ("expit", "log_expit", "logit")
    },
)
