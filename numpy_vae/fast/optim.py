r"""Adam on one flat vector: 12 in-place passes per step, rounded as PyTorch rounds, in threads.

:class:`FastAdam` computes :class:`numpy_vae.optim.Adam`'s update (the derivation is there) and
is held to it by ``tests/test_fast_vs_reference.py``. Four things make it fast:

- The model hands it one flat parameter vector and one flat gradient vector
  (:class:`numpy_vae.fast.parameters.FlatParameters`), so a step is a few whole-vector passes.
- Every pass is in place, into one scratch array per parameter array: no allocations.
- The passes run block by block (``BLOCK_BYTES`` of each array, 128k float32 numbers): all
  twelve passes over one block, then the next. Each pass touches at most three of the
  block's arrays (1.5 MiB), so they come from the core's cache rather than from memory
  twelve times. Measured, one thread, 425k float32 parameters (the Burda model): 1.17 ms
  unblocked, 0.77 ms in 512 KiB blocks (0.76 in 256 KiB ones, but with two threads smaller
  blocks lose to the GIL hand-overs between passes: 1.06 ms against 0.68 ms; 512 KiB loses
  nothing there).
- For the default model's 650k numbers the passes cost about as much as the step's matrix
  products, so the vector is cut into ``threads`` contiguous slices updated in parallel (NumPy
  releases the GIL inside each pass; see :mod:`numpy_vae.fast.parallel`). Each element's update
  is independent of every other, so the result is bitwise the same for any number of threads
  and any block size.

``m`` and ``v`` are rounded as PyTorch's single-tensor CPU implementation rounds them (``lerp_``
and ``mul_``/``addcmul_``). The last line is evaluated in the equivalent form
:math:`\theta - s\, m / (\sqrt v + \hat\epsilon)` with
:math:`s = \eta \sqrt{1-\beta_2^t} / (1-\beta_1^t)` and
:math:`\hat\epsilon = \epsilon \sqrt{1-\beta_2^t}` (multiply the fraction's numerator and
denominator by :math:`\sqrt{1-\beta_2^t}`), which saves one pass over the parameters and
differs from PyTorch's order only by rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy

from numpy_vae.fast.parallel import default_threads, run_split
from numpy_vae.optim import Adam

Array = Any


class FastAdam(Adam):
    """:class:`numpy_vae.optim.Adam`, in place and in threads; the same arguments, plus:

    Parameters
    ----------
    threads : int, optional
        Threads for the update; default :func:`numpy_vae.fast.parallel.default_threads` for
        NumPy arrays and 1 for device arrays.
    """

    #: Fewest elements per thread: below this a hand-over between threads costs more than it saves.
    MIN_ELEMENTS_PER_THREAD = 1 << 16
    #: Bytes of one array in a block (see the module docstring).
    BLOCK_BYTES = 1 << 19

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
        # One scratch array per parameter array keeps the step free of allocations.
        self._scratch = [self.xp.empty_like(p) for p in self.params]

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        beta1, beta2 = self.betas
        bias_correction2_sqrt = math.sqrt(1 - beta2**t)
        scale = self.lr * bias_correction2_sqrt / (1 - beta1**t)
        eps_hat = self.eps * bias_correction2_sqrt
        for arrays in zip(self.params, self.grads, self.m, self.v, self._scratch, strict=True):
            flat = [_flat_view(a) for a in arrays]
            if any(a is None for a in flat):  # not contiguous: no slicing, one call
                _adam_update(*arrays, beta1, beta2, scale, eps_hat, self.xp)
                continue

            block = max(16, self.BLOCK_BYTES // flat[0].itemsize // 16 * 16)  # aligned, too

            def update(lo: int, hi: int, flat: list = flat, block: int = block) -> None:
                for start in range(lo, hi, block):  # all 12 passes on one cached block
                    p, g, m, v, a = (x[start : min(hi, start + block)] for x in flat)
                    _adam_update(p, g, m, v, a, beta1, beta2, scale, eps_hat, self.xp)

            # 16-element boundaries keep every slice aligned for the SIMD loops.
            run_split(update, flat[0].size, self.threads, self.MIN_ELEMENTS_PER_THREAD, align=16)


def _adam_update(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    a: Array,
    beta1: float,
    beta2: float,
    scale: float,
    eps_hat: float,
    xp: Any,
) -> None:
    """One Adam step on matching arrays (or matching slices of them), in 12 in-place passes;
    ``a`` is scratch. Python floats combine with float32 arrays in float32 (NEP 50)."""
    # m + (1 - beta1)(g - m) is beta1 m + (1 - beta1) g, rounded as torch's lerp_.
    xp.subtract(g, m, out=a)
    a *= 1 - beta1
    m += a
    # v beta2 + ((1 - beta2) g) g, as torch's mul_ then addcmul_.
    v *= beta2
    xp.multiply(g, 1 - beta2, out=a)
    a *= g
    v += a
    # theta - scale m / (sqrt(v) + eps_hat)
    xp.sqrt(v, out=a)
    a += eps_hat
    xp.divide(m, a, out=a)
    a *= -scale
    p += a


def _flat_view(a: Array) -> Array | None:
    """``a`` as a 1-D view, or None if that would need a copy."""
    return a.reshape(-1) if a.flags.c_contiguous else None
