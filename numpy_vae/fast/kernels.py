r"""Compiled loops of the fast path: each kernel is its formula as one loop over the elements.

A kernel reads every input element once, computes its whole formula in registers and writes
every output element once, where NumPy would run a pass over memory per operation. They are
compiled by numba (``@njit(cache=True)``: the machine code is kept under ``__pycache__`` and
reused by the next process, so only the first run after an edit pays for compilation;
:func:`compile_seconds` says how much). ``nogil=True`` lets :mod:`numpy_vae.fast.parallel` run
a kernel on disjoint slices in several threads.

Kernels take NumPy arrays only; a device array (CuPy) takes the device form beside each caller.
Without numba the kernels are the same functions run by the Python interpreter (correct, and
hundreds of times slower): :data:`COMPILED` says which, and training then runs the
specification instead (:class:`numpy_vae.training.trainer.Trainer`).

Every scalar argument is cast to the arrays' dtype by the caller, so that a float32 kernel
computes in float32 as NumPy does under NEP 50 (a Python float would make numba compute in
float64). No ``fastmath``: each operation rounds as IEEE says, in the order written, so a
kernel gives the same bits as the NumPy passes that write out the same operations.

Measured and left to NumPy (no SVML on this machine, so numba calls the scalar ``expf``/
``log1pf``): the Bernoulli value and gradient as one loop took 1.10 ms per 128 x 784 batch
(float32), against 0.41 ms for :func:`numpy_vae.fast.likelihoods.bernoulli_nll_fused`, whose
``exp`` and ``log`` passes are NumPy's SIMD loops (0.04 ms for the ``exp`` of the batch,
against 0.22 ms in a compiled loop).
"""

from __future__ import annotations

import time
from typing import Any

from numpy import sqrt  # typed per dtype by numba: float32 in, float32 out

try:
    import numba
except ImportError:  # the kernels run as plain Python; training runs the specification
    numba = None

#: Whether the kernels are compiled (numba imports); if not, they run as plain Python loops.
COMPILED = numba is not None

Array = Any


def kernel(function: Any) -> Any:
    """``function`` compiled, or as it is without numba.

    ``error_model="numpy"``: a float division by 0 gives inf or NaN as in NumPy, where numba's
    default raises ZeroDivisionError, and the check that needs keeps a loop from being
    vectorized (measured: Adam's pass over 650k float32 numbers took 1.06 ms with it, 0.39 ms
    without, on 256-bit SIMD registers)."""
    if numba is None:
        return function
    return numba.njit(cache=True, nogil=True, error_model="numpy")(function)


@kernel
def adam_update(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, minus_scale, eps_hat, tiny):  # noqa: ANN001, ANN201
    r"""Adam's step on matching 1-D arrays, in place, in one pass; moments below ``tiny`` flushed.

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m),\quad
        v \leftarrow \beta_2 v + ((1-\beta_2) g) g,\quad
        \theta \leftarrow \theta + \frac{m}{\sqrt v + \hat\epsilon}\,(-s)

    and then ``m = 0`` where ``|m| < tiny``, ``v = 0`` where ``v < tiny`` (before the update
    reads them). :class:`numpy_vae.fast.optim.FastAdam` gives ``s``, :math:`\hat\epsilon`,
    the scalars cast to the arrays' dtype, and ``tiny`` (the dtype's smallest normal number,
    or 0 for no flush); its docstring bounds what the flush changes.
    """
    zero = tiny - tiny  # 0 in the arrays' dtype (a literal 0 would make numba use float64)
    for i in range(p.size):
        m_i = m[i] + one_minus_beta1 * (g[i] - m[i])
        v_i = v[i] * beta2 + (g[i] * one_minus_beta2) * g[i]
        m_i = m_i if abs(m_i) >= tiny else zero
        v_i = v_i if v_i >= tiny else zero
        m[i] = m_i
        v[i] = v_i
        p[i] += m_i / (sqrt(v_i) + eps_hat) * minus_scale


#: The kernels, each with example arguments of each dtype (see :func:`compile_seconds`).
def _examples() -> list[tuple[Any, tuple]]:
    import numpy

    out = []
    for dtype in (numpy.float32, numpy.float64):
        a = [numpy.zeros(1, dtype) for _ in range(4)]
        scalars = [dtype(s) for s in (0.1, 0.999, 0.001, -1e-3, 1e-8, 1e-38)]
        out.append((adam_update, (*a, *scalars)))
    return out


def compile_seconds() -> float:
    """Seconds spent making every kernel ready for float32 and float64 arrays: compiling them,
    or (the usual case, ``cache=True``) loading the machine code an earlier run cached. Calls
    each kernel once on one-element arrays; 0 without numba."""
    if numba is None:
        return 0.0
    start = time.perf_counter()
    for function, args in _examples():
        function(*args)
    return time.perf_counter() - start
