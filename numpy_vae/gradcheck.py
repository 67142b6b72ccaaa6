"""Central-difference gradient checking, for this package's tests and for anyone's own functions.

The check is a vector-Jacobian product: for ``f`` returning an array and an upstream gradient
``d_out`` of the same shape, the derivative of ``sum(f(x) * d_out)`` with respect to each entry of
``x`` is estimated by central differences of ``f`` along that entry. Keeping ``f``'s output
unreduced matters: the outputs that ``x_i`` does not touch cancel exactly, so their rounding
never pollutes the estimate.

Two stencils: the familiar ``(f(x+h) - f(x-h)) / 2h`` (error ``O(h^2)``) and the five-point
``(-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h`` (error ``O(h^4)``, the default). Rounding
adds about ``eps_machine |f| / h``. In float64 the five-point stencil at ``h = 1e-4`` is accurate
to roughly 1e-11 of ``|f|``, which leaves room for a 1e-7 relative bound even on gradient arrays a
thousand times smaller than the loss. Keep inputs at least ``2h`` away from kinks (ReLU at 0).

Inputs may live on any backend (a GPU, say): they are perturbed where they are, and each
output of ``f`` and each gradient is copied to the host explicitly by
:func:`numpy_vae.backend.to_host`; the arithmetic of the check is NumPy float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy

from numpy_vae.backend import to_host

Array = Any


def numerical_gradient(
    f: Callable[[], Array],
    x: Array,
    d_out: Array | None = None,
    h: float = 1e-4,
    indices: Any = None,
    points: int = 5,
) -> Array:
    """Central-difference estimate of d sum(f() * d_out) / dx.

    Parameters
    ----------
    f : callable
        Takes no arguments and reads ``x`` (which is perturbed in place), returning an array or
        a scalar.
    x : array
        The input to differentiate with respect to; restored on return.
    d_out : array, optional
        Upstream gradient with ``f()``'s shape; default all ones (plain gradient of the sum).
    h : float
        Step.
    indices : iterable of index tuples, optional
        Entries of ``x`` to estimate (others are left 0 in the result); default all.
    points : {3, 5}
        Stencil: three points (``x - h, x, x + h``; the centre is unused) or five.

    Returns
    -------
    array with the shape of ``x``
    """
    if points not in (3, 5):
        raise ValueError(f"points must be 3 or 5, got {points}")
    offsets = (1, -1) if points == 3 else (2, 1, -1, -2)
    weight = 1.0 if d_out is None else to_host(d_out).astype(numpy.float64)
    grad = numpy.zeros(x.shape, dtype=numpy.float64)
    if indices is None:
        indices = numpy.ndindex(*x.shape)
    for idx in indices:
        old = x[idx].copy()
        outputs = []
        for k in offsets:
            x[idx] = old + k * h
            outputs.append(numpy.asarray(to_host(f()), dtype=numpy.float64))
        x[idx] = old
        if points == 3:
            diff = outputs[0] - outputs[1]
            grad[idx] = numpy.sum(diff * weight) / (2 * h)
        else:
            # Pair the symmetric terms first so that untouched outputs cancel exactly.
            diff = 8 * (outputs[1] - outputs[2]) - (outputs[0] - outputs[3])
            grad[idx] = numpy.sum(diff * weight) / (12 * h)
    return grad


def relative_error(a: Array, b: Array) -> float:
    """max|a - b| / max(max|a|, max|b|): the error of an array relative to its scale.

    An array-level scale (rather than entry by entry) keeps tiny entries, where rounding
    dominates, from reporting huge errors; a factor-of-two mistake anywhere in the array still
    shows as an error of order one.
    """
    a = numpy.asarray(to_host(a), dtype=numpy.float64)
    b = numpy.asarray(to_host(b), dtype=numpy.float64)
    scale = max(numpy.abs(a).max(initial=0.0), numpy.abs(b).max(initial=0.0))
    diff = numpy.abs(a - b).max(initial=0.0)
    if scale == 0.0:
        return 0.0
    return float(diff / scale)


def check_gradients(
    f: Callable[[], Array],
    inputs: Mapping[str, Array],
    analytic: Mapping[str, Array],
    d_out: Array | None = None,
    h: float | Mapping[str, float] = 1e-4,
    max_entries: int | None = None,
    seed: int = 0,
    points: int = 5,
) -> dict[str, float]:
    """Relative error of each analytic gradient against central differences.

    Parameters
    ----------
    f : callable
        Takes no arguments, reads the arrays in ``inputs`` (perturbed in place).
    inputs : mapping name -> array
        float64 arrays to differentiate with respect to.
    analytic : mapping name -> array
        The gradients to check, same names and shapes (copied before ``f`` is called again).
    d_out : array, optional
        Upstream gradient for ``f``'s output (default: ones).
    h : float or mapping name -> float
        Step, or one step per input. Where the output is large but depends on an input only
        linearly or quadratically, a large step for that input is exact (central differences
        are exact on quadratics) and keeps the rounding of the large output out of the estimate.
    max_entries : int, optional
        Check at most this many randomly chosen entries per array (all if None).
    seed : int
        Chooses those entries.
    points : {3, 5}
        Central-difference stencil, see :func:`numerical_gradient`.

    Returns
    -------
    dict name -> relative error (see :func:`relative_error`) over the checked entries.
    """
    analytic = {name: numpy.array(to_host(g), dtype=numpy.float64) for name, g in analytic.items()}
    rng = numpy.random.default_rng(seed)
    errors = {}
    for name, x in inputs.items():
        if x.dtype != numpy.float64:
            raise ValueError(f"{name} is {x.dtype}: gradient checks need float64")
        if tuple(analytic[name].shape) != tuple(x.shape):
            raise ValueError(
                f"gradient of {name} has shape {analytic[name].shape}, input has {x.shape}"
            )
        if max_entries is None or max_entries >= x.size:
            flat = numpy.arange(x.size)
        else:
            flat = rng.choice(x.size, size=max_entries, replace=False)
        indices = [numpy.unravel_index(i, x.shape) for i in flat]
        step = h[name] if isinstance(h, Mapping) else h
        numeric = numerical_gradient(f, x, d_out, step, indices, points)
        mask = numpy.zeros(x.shape, dtype=bool)
        for idx in indices:
            mask[idx] = True
        errors[name] = relative_error(analytic[name][mask], numeric[mask])
    return errors


def assert_gradients_close(errors: Mapping[str, float], tol: float = 1e-7) -> None:
    """Raise AssertionError listing every array whose relative error exceeds ``tol``."""
    bad = {name: err for name, err in errors.items() if not err <= tol}
    if bad:
        lines = "\n".join(f"  {name}: {err:.3e}" for name, err in sorted(bad.items()))
        raise AssertionError(f"gradient check failed (tolerance {tol:g}):\n{lines}")
