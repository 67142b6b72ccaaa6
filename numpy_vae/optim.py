"""Optimizers that update parameter arrays in place from their gradient arrays.

Both take lists of arrays (parameters, and the gradient arrays the model writes), pairwise. The
fast path's :class:`numpy_vae.fast.FastAdam` is the same Adam on one flat vector, rounded as
PyTorch rounds and split over threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from numpy_vae.backend import array_module

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
        check_pairs(params, grads)
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
    """

    def __init__(
        self,
        params: Sequence[Array],
        grads: Sequence[Array],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        check_pairs(params, grads)
        check_adam_settings(lr, betas, eps)
        self.params, self.grads = list(params), list(grads)
        self.lr, self.betas, self.eps = lr, (float(betas[0]), float(betas[1])), eps
        self.step_count = 0
        self.xp = array_module(self.params[0]) if self.params else None
        self.m = [self.xp.zeros_like(p) for p in self.params]
        self.v = [self.xp.zeros_like(p) for p in self.params]

    def step(self) -> None:
        """One update of every parameter from the gradient arrays' current contents."""
        self.step_count += 1
        t, (beta1, beta2), xp = self.step_count, self.betas, self.xp
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v, strict=True):
            m[...] = beta1 * m + (1 - beta1) * g
            v[...] = beta2 * v + (1 - beta2) * g * g
            p -= self.lr / (1 - beta1**t) * m / (xp.sqrt(v) / math.sqrt(1 - beta2**t) + self.eps)

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


def check_adam_settings(lr: float, betas: tuple[float, float], eps: float) -> None:
    """Raise a ValueError naming the first of Adam's settings that is out of range."""
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def check_pairs(params: Sequence[Array], grads: Sequence[Array]) -> None:
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} parameter arrays but {len(grads)} gradient arrays")
    for p, g in zip(params, grads, strict=True):
        if p.shape != g.shape:
            raise ValueError(f"parameter of shape {p.shape} has a gradient of shape {g.shape}")
