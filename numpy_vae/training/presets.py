"""Named learning-rate schedules and initializations: what a run's ``lr_schedule`` and ``init``
name, resolved to the plain callables that :class:`~numpy_vae.training.trainer.Trainer` takes.

Training knows the plain ones itself: the ``constant`` learning rate and the ``torch``
initialization (the model's own, ``torch.nn.Linear``'s uniform, drawn when the model is built).
A published protocol is a preset of the experiments ring, which lies above training (imports run
downward only), so it registers its pieces here when it is imported:
:mod:`numpy_vae.experiments.burda` registers ``burda2016``. The command line imports it; a
Python program that trains a ``burda2016`` configuration imports it too (where else would its
settings come from), or passes the callables to the trainer itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy

from numpy_vae.model import VAE

#: The names a configuration may give: ``TrainConfig.init`` and ``TrainConfig.lr_schedule``
#: (fixed, so that any stored configuration validates whether or not a preset is loaded).
INITS = ("torch", "burda2016")
LR_SCHEDULES = ("constant", "burda2016")

#: Where each name that training does not define itself is registered from.
PROVIDERS = {"burda2016": "numpy_vae.experiments.burda"}

#: ``schedule(lr, epoch)``: Adam's learning rate in ``epoch`` (1-based) of a run whose
#: configured rate is ``lr``.
LearningRateSchedule = Callable[[float, int], float]


class Initializer(Protocol):
    """Sets a freshly built model's parameters in place, from the training images (host ``uint8``
    rows, for data-dependent biases) and an integer seed of its own."""

    def __call__(self, model: VAE, train_images: numpy.ndarray, seed: int) -> None: ...


def constant(lr: float, epoch: int) -> float:
    """The configured rate in every epoch."""
    return lr


def model_initialization(model: VAE, train_images: numpy.ndarray, seed: int) -> None:
    """Keep the parameters the model drew when it was built (``torch.nn.Linear``'s uniform)."""


T = TypeVar("T")

_SCHEDULES: dict[str, LearningRateSchedule] = {"constant": constant}
_INITIALIZERS: dict[str, Initializer] = {"torch": model_initialization}


def register(
    name: str,
    *,
    lr_schedule: LearningRateSchedule | None = None,
    initializer: Initializer | None = None,
) -> None:
    """Make ``name`` resolve to ``lr_schedule`` (for ``lr_schedule=name``) and ``initializer``
    (for ``init=name``). Registering the same name again replaces the callables."""
    for value, names, table in (
        (lr_schedule, LR_SCHEDULES, _SCHEDULES),
        (initializer, INITS, _INITIALIZERS),
    ):
        if value is None:
            continue
        if name not in names:
            raise ValueError(f"{name!r} is not a name configurations know: {', '.join(names)}")
        table[name] = value  # type: ignore[assignment]


def lr_schedule(name: str) -> LearningRateSchedule:
    """The learning-rate schedule called ``name``; see :func:`_resolve` for the errors."""
    return _resolve(name, "lr_schedule", "lr_schedule", _SCHEDULES)


def initializer(name: str) -> Initializer:
    """The initialization called ``name``; see :func:`_resolve` for the errors."""
    return _resolve(name, "init", "initializer", _INITIALIZERS)


def _resolve(name: str, key: str, argument: str, table: dict[str, T]) -> T:
    """``table[name]``, or a ValueError that says which module registers it (``key``: the
    configuration's field; ``argument``: the Trainer's argument that takes the callable)."""
    if name in table:
        return table[name]
    if name in PROVIDERS:
        raise ValueError(
            f"{key} {name!r} is defined by {PROVIDERS[name]}, which is not loaded: import it "
            f"first (import {PROVIDERS[name]}), or pass the Trainer {argument}="
        )
    raise ValueError(f"unknown {key} {name!r}; choose one of {', '.join(table)}")
