"""Optimizers that update parameter arrays in place from their gradient arrays.

Both work on lists of arrays; the model hands them its flat parameter and gradient vectors
(:class:`numpy_vae.parameters.FlatParameters`), so one step is a few whole-vector operations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy

from .backend import array_module
from .parallel import default_threads, run_split

Array = Any


class SGD:
    r"""Plain stochastic gradient descent: :math:`\theta \leftarrow \theta - \eta\, g`.

    Parameters
    ----------
    params, grads : sequence of arrays
        Parameters (updated in place) and their gradients, pairwise.
    lr : float
        Learning rate, > 0.
    """

    def __init__(self, params: Sequence[Array], grads: Sequence[Array], lr: float = 1e-2) -> None:
        _check_pairs(params, grads)
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.params, self.grads, self.lr = list(params), list(grads), lr
        self.step_count = 0

    def step(self) -> None:
        for p, g in zip(self.params, self.grads, strict=True):
            p -= self.lr * g
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_count = int(state["step"])


class Adam:
    r"""Adam (Kingma & Ba 2015) with bias correction, eps placed as in ``torch.optim.Adam``.

    For step :math:`t = 1, 2, \dots` and gradient :math:`g`:

    .. math::
        m &\leftarrow \beta_1 m + (1-\beta_1) g \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        \theta &\leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,
            \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    Why the bias correction: ``m`` and ``v`` start at 0, so after t steps
    :math:`m_t = (1-\beta_1)\sum_{i=1}^t \beta_1^{t-i} g_i`, whose weights sum to
    :math:`1 - \beta_1^t`, not 1. If the gradients have a steady mean :math:`\bar g`, then
    :math:`\mathbb E[m_t] = (1 - \beta_1^t)\,\bar g`: early averages are shrunk towards the
    zero they started from (by a factor 0.1 at t = 1 with :math:`\beta_1 = 0.9`). Dividing by
    :math:`1 - \beta_1^t` undoes exactly that, and likewise :math:`v_t / (1 - \beta_2^t)` for
    the second moment; the factors tend to 1 as t grows. Without them the early steps would
    use :math:`m / \sqrt v` with ``v`` shrunk far more (:math:`\beta_2 = 0.999`) than ``m``:
    steps :math:`(1-\beta_1^t)/\sqrt{1-\beta_2^t}` times too large, about 3.2 at t = 1, 6.5 at
    t = 10, 3.2 at t = 100 and still 1.3 at t = 1000.

    ``m`` and ``v`` are rounded as PyTorch's single-tensor CPU implementation rounds them
    (``lerp_`` and ``mul_``/``addcmul_``). The last line is evaluated in the equivalent form
    :math:`\theta - s\, m / (\sqrt v + \hat\epsilon)` with
    :math:`s = \eta \sqrt{1-\beta_2^t} / (1-\beta_1^t)` and
    :math:`\hat\epsilon = \epsilon \sqrt{1-\beta_2^t}` (multiply the fraction's numerator and
    denominator by :math:`\sqrt{1-\beta_2^t}`), which saves one pass over the
    parameters and differs from PyTorch's order only by rounding.

    A step is 12 elementwise passes over every parameter array. For the model's flat vector
    (650k numbers) these passes cost about as much as the matrix products of the step, so the
    vector is cut into ``threads`` contiguous slices updated in parallel (NumPy releases the GIL
    inside each pass; see :mod:`numpy_vae.parallel`). Each element's update is independent of
    every other, so the result is bitwise the same for any number of threads.

    Parameters
    ----------
    params, grads : sequence of arrays
        Parameters (updated in place) and their gradients, pairwise.
    lr : float
        Learning rate :math:`\eta`, > 0.
    betas : (float, float)
        Decay rates :math:`\beta_1, \beta_2` in [0, 1).
    eps : float
        :math:`\epsilon` >= 0, added to the bias-corrected root of ``v``.
    threads : int, optional
        Threads for the update; default :func:`numpy_vae.parallel.default_threads` for NumPy
        arrays and 1 for device arrays.
    """

    #: Fewest elements per thread: below this a hand-over between threads costs more than it saves.
    MIN_ELEMENTS_PER_THREAD = 1 << 16

    def __init__(
        self,
        params: Sequence[Array],
        grads: Sequence[Array],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        threads: int | None = None,
    ) -> None:
        _check_pairs(params, grads)
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.params, self.grads = list(params), list(grads)
        self.lr, self.betas, self.eps = lr, (float(betas[0]), float(betas[1])), eps
        self.step_count = 0
        self.xp = array_module(self.params[0]) if self.params else None
        if threads is None:  # host threads only for host arrays (a GPU has its own parallelism)
            threads = default_threads() if self.xp is numpy else 1
        self.threads = threads
        self.m = [self.xp.zeros_like(p) for p in self.params]
        self.v = [self.xp.zeros_like(p) for p in self.params]
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

            def update(lo: int, hi: int, flat: list = flat) -> None:
                p, g, m, v, a = (x[lo:hi] for x in flat)
                _adam_update(p, g, m, v, a, beta1, beta2, scale, eps_hat, self.xp)

            # 16-element boundaries keep every slice aligned for the SIMD loops.
            run_split(update, flat[0].size, self.threads, self.MIN_ELEMENTS_PER_THREAD, align=16)

    def state_dict(self) -> dict[str, Any]:
        """Step count and moment arrays (the arrays themselves; copy before mutating)."""
        state: dict[str, Any] = {"step": self.step_count}
        for i, (m, v) in enumerate(zip(self.m, self.v, strict=True)):
            state[f"m.{i}"] = m
            state[f"v.{i}"] = v
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` output; arrays are copied into the existing moments."""
        for i, (m, v) in enumerate(zip(self.m, self.v, strict=True)):
            for key, dest in ((f"m.{i}", m), (f"v.{i}", v)):
                if key not in state:
                    raise ValueError(f"optimizer state has no {key!r}: not an Adam state")
                if tuple(state[key].shape) != tuple(dest.shape):
                    raise ValueError(
                        f"optimizer state {key!r} has shape {tuple(state[key].shape)}, "
                        f"expected {tuple(dest.shape)}: it belongs to a different model"
                    )
                dest[...] = state[key]
        self.step_count = int(state["step"])


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


def _check_pairs(params: Sequence[Array], grads: Sequence[Array]) -> None:
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} parameter arrays but {len(grads)} gradient arrays")
    for p, g in zip(params, grads, strict=True):
        if p.shape != g.shape:
            raise ValueError(f"parameter of shape {p.shape} has a gradient of shape {g.shape}")
