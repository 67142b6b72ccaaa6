r"""Adam on one flat vector: one compiled pass per step, rounded as PyTorch rounds, in threads.

:class:`FastAdam` computes :class:`numpy_vae.optim.Adam`'s update (the derivation is there) and
is held to it by ``tests/test_fast_vs_reference.py``. What makes it fast:

- The model hands it one flat parameter vector and one flat gradient vector
  (:class:`numpy_vae.fast.parameters.FlatParameters`), so a step is one pass over four vectors.
- That pass is a compiled loop (:func:`numpy_vae.fast.kernels.adam_update`): each element's
  ``m``, ``v`` and parameter are updated in registers, reading four numbers and writing three,
  where NumPy's in-place form took 12 passes over memory (run in 512 KiB blocks so that they
  came from the cache). Measured on the default model's 650k float32 parameters (2 cores,
  shared): 0.41-0.63 ms per step alone against 1.34-1.41 ms for the blocked passes, and in
  training 0.18-0.27 s of an epoch against 1.16-1.38 s.
- The vector is cut into ``threads`` contiguous slices updated in parallel by the threads of
  :mod:`numpy_vae.fast.parallel` (the kernel releases the GIL). Each element's update is
  independent of every other, so the result is bitwise the same for any number of threads.
  Measured inside training, instrumented epochs alternating in one process, 3 rounds, seconds
  of Adam per epoch (and of the whole epoch): 1 thread 0.21-0.27 (1.71-1.99), 2 threads
  0.18-0.22 (1.63-1.83); numba's own threads instead (``parallel=True``, ``prange``, OpenMP
  layer) 0.17-0.51 (2.70-4.48): OpenMP's idle threads spin and take the cores from OpenBLAS's,
  so the matrix products slow down. With ``OMP_WAIT_POLICY=PASSIVE`` they matched the pool
  (0.15-0.17, epochs 1.70-1.75), but that must be set before the process starts; numba's
  ``workqueue`` layer was slower (0.35-0.87). So one set of threads shares the cores with
  OpenBLAS: this package's pool, whose idle threads sleep, in ``default_threads()`` threads:
  one, while OpenBLAS's own idle threads spin, which :mod:`numpy_vae.fast.parallel` measured
  to be faster in training than quieting them for a second thread of Adam's.

``m`` and ``v`` are rounded as PyTorch's single-tensor CPU implementation rounds them (``lerp_``
and ``mul_``/``addcmul_``). The last line is evaluated in the equivalent form
:math:`\theta - s\, m / (\sqrt v + \hat\epsilon)` with
:math:`s = \eta \sqrt{1-\beta_2^t} / (1-\beta_1^t)` and
:math:`\hat\epsilon = \epsilon \sqrt{1-\beta_2^t}` (multiply the fraction's numerator and
denominator by :math:`\sqrt{1-\beta_2^t}`), which differs from PyTorch's order only by rounding.

**Subnormal moments are flushed to zero.** A parameter whose gradient is exactly 0 (a weight of a
pixel that is black in every image) keeps a first moment that shrinks by :math:`\beta_1` per
step: from 1e-3 it is below float32's smallest normal number :math:`\tau` (1.2e-38) after about
800 steps, and :math:`v` follows after some 80 000. x86 CPUs compute on such subnormal numbers in
slow microcode, and an epoch of the default model slowed by about a fifth once they appeared. So
after its update, ``m`` becomes 0 where :math:`|m| < \tau` and ``v`` where :math:`v < \tau`
(:math:`\tau` = ``numpy.finfo(dtype).smallest_normal``; float64: 2.2e-308), before the step
reads them. What that changes, with :math:`\eta_t = \eta / (1 - \beta_1^t)` and
:math:`\Delta` the step this class takes:

- where ``m`` is flushed, the step is 0 instead of
  :math:`s|m| / (\sqrt v + \hat\epsilon) < s\tau/\hat\epsilon = \eta_t \tau / \epsilon`
  (float32, :math:`\eta = 10^{-3}`, :math:`\epsilon = 10^{-8}`: 1.2e-32 at t = 1, falling to
  1.2e-33);
- where only ``v`` is flushed, the denominator loses :math:`\sqrt v < \sqrt\tau`, so
  :math:`\Delta` is larger than the unflushed step by at most
  :math:`|\Delta| \sqrt\tau / \hat\epsilon` (float32: a relative
  :math:`1.1\cdot10^{-19} / (10^{-8}\sqrt{1-\beta_2^t})`, at most 3.4e-10 at t = 1, far below
  the unit roundoff 6e-8, i.e. less than the step's own rounding);

so per element :math:`|\Delta - \Delta_{\text{unflushed}}| \le \eta_t\tau/\epsilon +
|\Delta|\sqrt\tau/\hat\epsilon`, and the moments themselves move by less than :math:`\tau`
per step (``tests/test_kernels.py`` holds the step to this bound). With
:math:`\epsilon = 0` the bound is void and nothing is flushed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy

from numpy_vae.fast.kernels import adam_update
from numpy_vae.fast.parallel import default_threads, run_split
from numpy_vae.optim import Adam

Array = Any


class FastAdam(Adam):
    """:class:`numpy_vae.optim.Adam`, in one compiled pass, in threads, with subnormal moments
    flushed (see the module); the same arguments, plus:

    Parameters
    ----------
    threads : int, optional
        Threads for the update; default :func:`numpy_vae.fast.parallel.default_threads` for
        NumPy arrays and 1 for device arrays.
    """

    #: Fewest elements per thread: below this a hand-over between threads costs more than it saves.
    MIN_ELEMENTS_PER_THREAD = 1 << 16

    def __init__(
        self,
        params: Sequence[Array],
        grads: Sequence[Array],
        *settings: Any,
        threads: int | None = None,
        **named: Any,
    ) -> None:
        super().__init__(params, grads, *settings, **named)  # lr, betas, eps as for Adam
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if threads is None:  # host threads only for host arrays (a GPU has its own parallelism)
            threads = default_threads() if self.xp is numpy else 1
        self.threads = threads
        # Which parameter arrays the compiled kernel takes (contiguous NumPy arrays); the others
        # (device arrays, strided views) take adam_update_passes with a scratch array each.
        self._compiled = [
            self.xp is numpy and p.flags.c_contiguous and g.flags.c_contiguous
            for p, g in zip(self.params, self.grads, strict=True)
        ]
        self._scratch = [
            None if compiled else self.xp.empty_like(p)
            for p, compiled in zip(self.params, self._compiled, strict=True)
        ]

    def flush_threshold(self, dtype: Any) -> float:
        """Moments below this become 0: the dtype's smallest normal number, or 0 (no flush)
        when ``eps`` is 0 (the module's bound needs ``eps > 0``)."""
        return float(numpy.finfo(dtype).smallest_normal) if self.eps > 0 else 0.0

    def step(self) -> Any:
        """One update of every parameter (the specification's, see the module). Returns
        whether the step left a second-moment entry that is not finite (a bool, or a device
        scalar on a device): the gradient was not finite there, or its square overflowed.
        The check comes from the update's own pass; the parameters have then been updated
        with it, so a caller that would rather skip such a step checks the gradient first.
        """
        self.step_count += 1
        t = self.step_count
        beta1, beta2 = self.betas
        bias_correction2_sqrt = math.sqrt(1 - beta2**t)
        scale = self.lr * bias_correction2_sqrt / (1 - beta1**t)
        eps_hat = self.eps * bias_correction2_sqrt
        nonfinite: Any = False
        for i, arrays in enumerate(zip(self.params, self.grads, self.m, self.v, strict=True)):
            dtype = arrays[0].dtype
            tiny = self.flush_threshold(dtype)
            if not self._compiled[i]:
                scratch = self._scratch[i]
                adam_update_passes(*arrays, scratch, beta1, beta2, scale, eps_hat, tiny, self.xp)
                nonfinite = nonfinite | ~self.xp.isfinite(arrays[3]).all()
                continue
            cast = dtype.type  # float32 arrays compute in float32, as under NEP 50
            largest = numpy.finfo(dtype).max  # (the flag's threshold)
            scalars = (1 - beta1, beta2, 1 - beta2, -scale, eps_hat, tiny, largest)
            scalars = tuple(cast(s) for s in scalars)
            flat = [a.reshape(-1) for a in arrays]  # views: the arrays are contiguous

            def update(lo: int, hi: int, flat: list = flat, scalars: tuple = scalars) -> bool:
                return adam_update(*(a[lo:hi] for a in flat), *scalars)

            parts = run_split(update, flat[0].size, self.threads, self.MIN_ELEMENTS_PER_THREAD, 16)
            nonfinite = nonfinite or any(parts)
        return nonfinite


def adam_update_passes(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    a: Array,
    beta1: float,
    beta2: float,
    scale: float,
    eps_hat: float,
    tiny: float,
    xp: Any,
) -> None:
    """:func:`numpy_vae.fast.kernels.adam_update` for the arrays it does not take (device arrays,
    which no compiled loop here reads, and strided views), in in-place passes with ``a`` as
    scratch: the same operations in the same order, so the same numbers (tested bitwise).
    Python floats combine with float32 arrays in float32 (NEP 50)."""
    # m + (1 - beta1)(g - m) is beta1 m + (1 - beta1) g, rounded as torch's lerp_.
    xp.subtract(g, m, out=a)
    a *= 1 - beta1
    m += a
    m *= xp.abs(m) >= tiny  # the flush: |m| < tiny becomes 0
    # v beta2 + ((1 - beta2) g) g, as torch's mul_ then addcmul_.
    v *= beta2
    xp.multiply(g, 1 - beta2, out=a)
    a *= g
    v += a
    v *= v >= tiny
    # theta + m / (sqrt(v) + eps_hat) (-scale)
    xp.sqrt(v, out=a)
    a += eps_hat
    xp.divide(m, a, out=a)
    a *= -scale
    p += a
