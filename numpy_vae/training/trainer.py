"""Training: minibatches, the KL weight schedule, evaluation, checkpoints and exact resumption.

An epoch (:meth:`Trainer.train_epoch`) is the textbook loop: for each batch of the training set
(a :class:`~numpy_vae.training.data.ImageSplit`, which scales and binarizes it), draw the noise
and take one :meth:`Trainer.train_step`: the loss and its gradient, a health check, Adam's
update, the running sums. The learning rate of each epoch and the initial parameters come from
plain callables (:mod:`numpy_vae.training.presets`).

Randomness is derived, not carried: every epoch's shuffle, binarization and reparameterization
noise come from generators seeded by ``(seed, stream, epoch)``. A run stopped after epoch 4 and
resumed therefore draws exactly what an uninterrupted run draws in epochs 5 to 10, and the
checkpoint needs only the epoch counter besides parameters and optimizer moments.

On the GPU (backend ``"cupy"``) the generators are CuPy's (cuRAND XORWOW), made on the device
from the same derived integer seeds; their state cannot be serialised, which this scheme never
needs. A resumed GPU run reproduces the uninterrupted GPU run bit for bit on the same GPU model
with the same CuPy, CUDA and driver versions (CuPy does not promise the same streams across its
versions, nor cuBLAS the same rounding across GPU architectures). It does not reproduce a NumPy
run: the two generators draw different numbers from the same seed. Both start from the same
initial parameters, which are drawn on the host.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy

from numpy_vae.backend import BACKENDS, DTYPES, Backend, get_backend
from numpy_vae.config import ModelConfig
from numpy_vae.decoders import DECODERS
from numpy_vae.fast import kernels
from numpy_vae.fast.model import FastVAE
from numpy_vae.fast.optim import FastAdam
from numpy_vae.model import VAE, LossParts
from numpy_vae.objectives import OBJECTIVES
from numpy_vae.optim import Adam
from numpy_vae.training import presets
from numpy_vae.training.data import BINARIZE_MODES, Batch, Dataset, ImageSplit
from numpy_vae.training.evaluate import active_units, posterior_means
from numpy_vae.training.presets import INITS, LR_SCHEDULES, Initializer, LearningRateSchedule
from numpy_vae.training.progress import Progress

Array = Any

# Independent random streams; the numbers only have to differ.
SHUFFLE, BINARIZE, EPS, EVAL_EPS, TEST_BINARIZE, IW_EPS, INIT = range(7)


@dataclass
class TrainConfig(ModelConfig):
    """Every hyperparameter of a run: the model's (:class:`numpy_vae.config.ModelConfig`, whose
    fields come first) and training's. The defaults are the classic PyTorch MNIST example.

    Optimization: Adam with ``lr``, ``batch_size``, ``epochs``. ``kl_warmup`` is a number of
    epochs over which the KL weight rises linearly from 0 to ``beta``, updated every step (0: no
    warm-up). ``binarize``: ``"none"`` trains on grey levels ``k/255`` (as the PyTorch example),
    ``"dynamic"`` on a fresh Bernoulli draw every epoch, ``"threshold"`` on ``k/255 > 0.5``.
    ``backend``: ``"numpy"``, ``"cupy"`` (an NVIDIA GPU) or ``"strict"`` (the CPU test device of
    :mod:`numpy_vae.devices.strict`); ``dtype``: ``"float32"`` or ``"float64"``.
    ``skip_nonfinite``: skip (and count) a batch whose loss or gradient is not finite instead of
    stopping with :class:`Diverged`. ``reference``: train through the specification
    (:class:`numpy_vae.VAE` and :class:`numpy_vae.Adam`) instead of the fast path (slower; the
    same numbers to rounding).

    ``init`` and ``lr_schedule`` name an initialization and a learning-rate schedule
    (:mod:`numpy_vae.training.presets`): ``torch`` (the model's own) and ``constant`` (``lr``
    throughout), or those of the Burda et al. (2016) protocol, ``burda2016``, which
    :mod:`numpy_vae.experiments.burda` provides together with its other settings
    (``BURDA2016``, Adam's ``adam_eps`` among them).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    kl_warmup: float = 0.0
    binarize: str = "none"
    backend: str = "numpy"
    dtype: str = "float32"
    eval_batch_size: int = 1000
    skip_nonfinite: bool = False
    reference: bool = False
    init: str = "torch"
    lr_schedule: str = "constant"
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        problems = []
        try:
            super().__post_init__()
        except ValueError as err:
            problems.append(str(err))
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("lr", "adam_eps"):
            if not _is_positive_number(getattr(self, name)):
                problems.append(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not (
            isinstance(self.kl_warmup, int | float)
            and not isinstance(self.kl_warmup, bool)
            and math.isfinite(self.kl_warmup)
            and self.kl_warmup >= 0
        ):
            problems.append(f"kl_warmup must be a number of epochs >= 0, got {self.kl_warmup!r}")
        for name in ("skip_nonfinite", "reference"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false")
        if not problems and self.beta == 0 and (self.free_bits > 0 or self.kl_warmup > 0):
            problems.append(
                "free_bits and kl_warmup act on the KL term, which beta = 0 switches off; "
                "set beta > 0 or drop them"
            )
        if not problems and OBJECTIVES[self.objective].multi_sample and self.kl_warmup > 0:
            problems.append(
                f"kl_warmup weights the elbo objective's analytic KL; the {self.objective} "
                "objective has no separate KL term"
            )
        if not problems and DECODERS[self.decoder].binary_pixels and self.binarize == "none":
            problems.append(
                f"the {self.decoder} decoder models binary pixels (it is fed its own 0/1 draws "
                "when sampling): choose binarize='dynamic' or 'threshold' (--binarize dynamic)"
            )
        if self.init not in INITS:
            problems.append(f"init must be one of {', '.join(INITS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.binarize not in BINARIZE_MODES:
            problems.append(f"binarize must be one of {', '.join(BINARIZE_MODES)}")
        if self.backend not in BACKENDS:
            problems.append(
                f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), **self.model_json()}  # the model's fields as JSON values

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """From :meth:`to_json`'s dict; a key it does not know is refused
        (:func:`unknown_keys_message`)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(unknown_keys_message(unknown))
        return cls(**d)


#: Keys that configurations written by earlier versions stored and this one no longer reads, and
#: how to convert such a configuration by hand (numpy-vae is 0.x: old runs are refused, not
#: upgraded).
RETIRED_KEYS = {"conditional": 'replace "conditional": true by "n_classes": 10 (false by 0)'}


def unknown_keys_message(unknown: set[str]) -> str:
    """The error for configuration keys that :class:`TrainConfig` lacks, with the conversion of
    each retired one (:data:`RETIRED_KEYS`)."""
    hints = [RETIRED_KEYS[key] for key in sorted(unknown) if key in RETIRED_KEYS]
    return "; ".join([f"unknown configuration keys: {', '.join(sorted(unknown))}", *hints])


def _is_positive_number(value: Any) -> bool:
    """A finite real number > 0 (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


class Diverged(RuntimeError):
    """Training produced a non-finite loss, gradient or test metric.

    ``skippable``: the cause was one batch's loss or gradient, which ``skip_nonfinite`` would
    skip (rather than parameters that have gone bad).
    """

    def __init__(self, message: str, skippable: bool = False) -> None:
        super().__init__(message)
        self.skippable = skippable


def derived_seed(seed: int, stream: int, epoch: int) -> int:
    """An integer seed for one random stream of one epoch, from the run's seed."""
    return int(numpy.random.SeedSequence([seed, stream, epoch]).generate_state(1)[0])


def kl_weight(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """KL weight at a batch position (0-based, counted over all epochs): linear from 0 to beta
    over ``kl_warmup`` epochs."""
    if config.kl_warmup <= 0:
        return config.beta
    progress = step / (config.kl_warmup * steps_per_epoch)
    return config.beta * min(1.0, progress)


class _EpochTally:
    """One epoch's running sums, on the device, and the health of its steps.

    On the host every step's health is checked at once. On a device that would cost a
    synchronising transfer per step, so the values are kept there and read once at the end of
    the epoch (:meth:`means`), unless skipping needs each verdict before the update.
    """

    def __init__(self, epoch: int, steps: int, backend: Backend, skip_nonfinite: bool) -> None:
        self.epoch, self.steps, self.backend = epoch, steps, backend
        xp = backend.xp
        self.totals = xp.zeros(3, dtype=numpy.float64)  # objective, recon, kl: summed on the device
        check_now = backend.name == "numpy" or skip_nonfinite
        self.health = None if check_now else xp.zeros(steps, dtype=numpy.float64)
        self.used = 0  # examples in the sums
        self.skipped = 0  # batches skipped as non-finite

    def check(self, batch: int, value: Array) -> bool:
        """False if ``value`` (a device scalar) is not finite; True if it is, or if it is kept to
        be checked by :meth:`means`."""
        if self.health is not None:
            self.health[batch] = value
            return True
        return math.isfinite(float(self.backend.to_host(value)))

    def add(self, parts: LossParts, n: int) -> None:
        """Add a step's loss and its parts, summed over its ``n`` examples."""
        self.totals += self.backend.xp.stack([parts.loss, parts.recon, parts.kl])
        self.used += n

    def means(self, step: int) -> tuple[float, float, float]:
        """The epoch's objective, reconstruction and KL per example; ``step``: the optimizer
        steps taken by the epoch's end.

        Raises
        ------
        Diverged
            A kept health value was not finite, or every batch was skipped.
        """
        xp, host = self.backend.xp, self.backend.to_host
        if self.health is None:
            sums = host(self.totals)
        else:  # one transfer for both
            sums, health = numpy.split(host(xp.concatenate([self.totals, self.health])), [3])
            bad = numpy.flatnonzero(~numpy.isfinite(health))
            if bad.size:
                i = int(bad[0])
                raise Diverged(
                    f"step {step - self.steps + i + 1} (epoch {self.epoch}, batch {i + 1} of "
                    f"{self.steps}): the loss or gradient is not finite",
                    True,
                )
        if self.skipped == self.steps:
            raise Diverged(f"epoch {self.epoch}: every batch had a non-finite loss or gradient")
        loss, recon, kl = (float(v) / self.used for v in sums)
        return loss, recon, kl


class Trainer:
    """Owns a model, its Adam optimizer and the data; trains epoch by epoch.

    Parameters
    ----------
    config : TrainConfig
    data : Dataset
    progress : bool
        Draw a progress bar on standard error while an epoch runs.
    log_interval : int
        Without the bar, print a plain progress line every this many batches (0: none).
    lr_schedule : callable, optional
        ``lr_schedule(lr, epoch)``, Adam's learning rate in each epoch. Default: the schedule
        that ``config.lr_schedule`` names (:func:`numpy_vae.training.presets.lr_schedule`).
    initializer : callable, optional
        ``initializer(model, train_images, seed)`` sets the initial parameters in place.
        Default: the initialization that ``config.init`` names
        (:func:`numpy_vae.training.presets.initializer`).

    Raises
    ------
    ValueError
        A conditional model without labels, a batch size larger than the training set, or a
        schedule or initialization named by the configuration whose module is not loaded (the
        message names it).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: Dataset,
        progress: bool = False,
        log_interval: int = 0,
        *,
        lr_schedule: LearningRateSchedule | None = None,
        initializer: Initializer | None = None,
    ) -> None:
        if config.n_classes and not data.labelled:
            raise ValueError("a conditional model needs labels, and the data set has none")
        self.config = config
        self.lr_schedule = lr_schedule or presets.lr_schedule(config.lr_schedule)
        initializer = initializer or presets.initializer(config.init)
        self.backend: Backend = get_backend(config.backend, config.dtype)
        # A batch larger than the training set would make every epoch one step on all of it,
        # without a word (issue 24). Checked after the backend, which is the first thing to fix.
        n_train = int(data.train_images.shape[0])
        if config.batch_size > n_train:
            raise ValueError(
                f"batch size {config.batch_size} is larger than the {n_train} training images; "
                f"choose a batch size (--batch-size) of at most {n_train}"
            )
        if not config.reference and self.backend.xp is numpy and not kernels.COMPILED:
            print(
                "numba is not importable: training runs the specification (numpy_vae.VAE and "
                "Adam, as --reference) instead of the compiled fast path",
                file=sys.stderr,
            )
            self.config = config = replace(config, reference=True)
        model_config = config.model_config()
        if config.reference:  # the specification: plain NumPy, one array per parameter
            self.model = VAE(
                data.input_dim, config=model_config, backend=self.backend, seed=config.seed
            )
            params, grads = self.model.params, self.model.grads
            self.optimizer = Adam(
                list(params.values()), list(grads.values()), lr=config.lr, eps=config.adam_eps
            )
        else:  # the fast path: one flat vector, fused kernels, in place
            self.model = FastVAE(
                data.input_dim, config=model_config, backend=self.backend, seed=config.seed
            )
            flat = self.model.flat
            self.optimizer = FastAdam([flat.data], [flat.grad], lr=config.lr, eps=config.adam_eps)
        initializer(self.model, data.train_images, derived_seed(config.seed, INIT, 0))
        # The fast path's flat gradient vector, for a one-sdot norm (None on the reference path).
        self._grad_vector = None if config.reference else self.model.flat.grad
        # Skipping a batch needs the verdict before the update; FastAdam's comes with it.
        self._check_before_update = config.reference or config.skip_nonfinite
        xp, dtype = self.backend.xp, self.backend.dtype
        # The training set goes to the device once, as uint8, and is converted batch by batch;
        # the labels go along only where the model takes them.
        labels = data.train_labels if config.n_classes else None
        self.train_set = ImageSplit(data.train_images, labels, config.binarize, xp, dtype)
        # The test set as the model sees it, fixed: a dynamic binarization is drawn once.
        test_set = ImageSplit(data.test_images, None, config.binarize, xp, dtype)
        self.test_x = test_set.whole(self._rng(TEST_BINARIZE, 0))
        self.test_labels = xp.asarray(data.test_labels) if data.labelled else None
        self.progress, self.log_interval = progress, log_interval
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.history: list[dict[str, Any]] = []

    @property
    def train_images(self) -> Array:
        """The training images on the device, ``uint8``."""
        return self.train_set.images

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.config.batch_size)

    def _rng(self, stream: int, epoch: int) -> Any:
        return self.backend.rng(derived_seed(self.config.seed, stream, epoch))

    # ------------------------------------------------------------------ parameter vectors
    def _squared_gradient_norm(self) -> Array:
        """``g . g`` over every parameter, on the device (one sdot on the fast path)."""
        if self._grad_vector is not None:
            return self._grad_vector @ self._grad_vector
        return sum((g * g).sum() for g in self.model.grads.values())

    def _host_params(self) -> dict[str, numpy.ndarray]:
        """The parameters as host arrays by name (one transfer on the fast path)."""
        if self.config.reference:
            return self.model.state_dict()
        return self.model.flat.split(self.backend.to_host(self.model.flat.data))

    def _host_vector(self, arrays: list[Array]) -> numpy.ndarray:
        """Optimizer arrays (one per optimizer slot) as one host vector: every parameter's
        entries in C order, in the model's parameter order, on either path."""
        if not self.config.reference:  # one flat vector, some of its blocks transposed
            return self.model.flat.to_standard(self.backend.to_host(arrays[0]))
        return numpy.concatenate([self.backend.to_host(a).reshape(-1) for a in arrays])

    def _split_vector(self, vector: numpy.ndarray) -> list[numpy.ndarray]:
        """A host vector laid out like :meth:`_host_vector`'s, cut into the optimizer's slots."""
        shapes = [tuple(p.shape) for p in self.model.params.values()]
        sizes = [int(numpy.prod(s)) for s in shapes]
        if vector.size != sum(sizes):
            raise ValueError(
                f"optimizer state has {vector.size} numbers, the model {sum(sizes)} parameters"
            )
        if not self.config.reference:
            return [self.model.flat.from_standard(vector)]
        parts = numpy.split(vector, numpy.cumsum(sizes)[:-1])
        return [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> dict[str, Any]:
        """One pass over the training set in a fresh random order; returns the epoch's metrics.

        The trainer's epoch counter and history change only when the whole epoch (training and
        test evaluation) has succeeded, so an interrupted or diverged epoch never looks complete.

        Raises
        ------
        Diverged
            A batch's loss or gradient was not finite (unless ``skip_nonfinite``), every batch
            was skipped, or the test negative ELBO was not finite. The parameters are then
            unusable; the caller keeps its last checkpoint.
        """
        # Non-finite values are caught explicitly, with a message that says where; NumPy's
        # overflow warnings would only print lines before it.
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._train_epoch()

    def _train_epoch(self) -> dict[str, Any]:
        cfg, model, epoch = self.config, self.model, self.epoch + 1
        shuffle_rng, binarize_rng, eps_rng = (
            self._rng(stream, epoch) for stream in (SHUFFLE, BINARIZE, EPS)
        )
        self.optimizer.lr = self.lr_schedule(cfg.lr, epoch)
        order = self.backend.permutation(shuffle_rng, len(self.train_set))  # on the device
        tally = _EpochTally(epoch, self.steps_per_epoch, self.backend, cfg.skip_nonfinite)
        bar = self._progress_bar(epoch)
        start = time.perf_counter()
        for batch in self.train_set.batches(order, cfg.batch_size, binarize_rng):
            eps = eps_rng.standard_normal(model.noise_shape(batch.size), dtype=model.dtype)
            self.train_step(batch, eps, self._kl_weight(epoch, batch.number), tally)
            self._show_progress(bar, batch, tally)
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        train = tally.means(self.step)
        test = self.evaluate(epoch)
        if not math.isfinite(test["neg_elbo"]):
            raise Diverged(f"epoch {epoch}: the test negative ELBO is {test['neg_elbo']}")
        metrics = self._epoch_metrics(epoch, train, test, tally.skipped, seconds)
        self.epoch = epoch
        self.history.append(metrics)
        return metrics

    def train_step(self, batch: Batch, eps: Array, kl_weight: float, tally: _EpochTally) -> bool:
        """One step on ``batch``: the loss and its gradient, the health check, Adam's update,
        and the epoch's running sums. ``eps``: the reparameterization noise.

        Returns False for a batch skipped as non-finite (``skip_nonfinite``).
        """
        parts = self.model.loss(batch.x, batch.y, eps=eps, kl_weight=kl_weight, validate=False)
        if self._check_before_update:
            if not self._healthy(parts, batch.number, tally, self._squared_gradient_norm()):
                return False
            self.optimizer.step()
        else:  # FastAdam's own pass says whether the gradient was finite (see _healthy)
            nonfinite = self.optimizer.step()
            self._healthy(
                parts, batch.number, tally, self.backend.xp.where(nonfinite, math.inf, 0.0)
            )
        self.step += 1
        tally.add(parts, batch.size)
        return True

    def _kl_weight(self, epoch: int, batch: int) -> float:
        """The KL weight of a batch of ``epoch``. The warm-up follows the batch's place in
        training, so skipped batches do not stretch it (without skips this is the optimizer's
        step count)."""
        steps = self.steps_per_epoch
        return kl_weight(self.config, (epoch - 1) * steps + batch, steps)

    # ------------------------------------------------------------------ health, progress, metrics
    def _healthy(self, parts: LossParts, batch: int, tally: _EpochTally, gradient: Array) -> bool:
        """Whether the step's loss and ``gradient`` (a number, not finite iff the gradient is
        not healthy) are finite, or will be checked at the epoch's end (:class:`_EpochTally`).
        False: skip the batch.

        ``gradient`` is the squared gradient norm before the update where a verdict is needed
        first (``skip_nonfinite``, and the specification's Adam): non-finite iff some entry is,
        or the sum overflows (in float32: a norm above 1.8e19, already a diverged model). On
        the fast path without skipping it comes from FastAdam's own pass instead, which saves
        a pass over the gradient (0.1 ms of a 3.4 ms step): infinite iff a second moment is
        not finite, i.e. a gradient entry is not, or its square overflowed; the parameters
        have then taken the step, and the run stops here as it would have.

        Raises
        ------
        Diverged
            Not finite, and ``skip_nonfinite`` is off.
        """
        if tally.check(batch, parts.loss + gradient):
            return True
        if not self.config.skip_nonfinite:
            raise Diverged(self._nonfinite(parts, tally.epoch, batch, self.step + 1), True)
        tally.skipped += 1
        return False

    def _nonfinite(self, parts: Any, epoch: int, batch: int, step: int) -> str:
        """The message for a non-finite step: which quantity, where, and what to try."""
        host = self.backend.to_host
        values = {name: float(host(getattr(parts, name))) for name in ("recon", "kl")}
        bad = [f"{name} = {v}" for name, v in values.items() if not math.isfinite(v)]
        grad = numpy.concatenate([host(g).reshape(-1) for g in self.model.grads.values()])
        if not numpy.isfinite(grad).all():
            names = [k for k, g in self.model.grads.items() if not numpy.isfinite(host(g)).all()]
            bad.append(f"non-finite gradient of {', '.join(names)}")
        elif not bad:
            norm = float(numpy.linalg.norm(grad.astype(numpy.float64)))
            bad.append(f"gradient norm {norm:.3g}, whose square overflows {grad.dtype}")
        where = f"step {step} (epoch {epoch}, batch {batch + 1} of {self.steps_per_epoch})"
        return f"{where}: {'; '.join(bad)}"

    def _progress_bar(self, epoch: int) -> Progress | None:
        """The epoch's progress bar or log lines, if either was asked for."""
        if not (self.progress or self.log_interval):
            return None
        label = f"epoch {epoch}/{self.config.epochs}"
        return Progress(
            self.steps_per_epoch, label, bar=self.progress, log_interval=self.log_interval
        )

    def _show_progress(self, bar: Progress | None, batch: Batch, tally: _EpochTally) -> None:
        """Advance the bar past ``batch``; the running loss per image is read from the device
        only when the bar is redrawn or a line printed."""
        if bar is None:
            return
        seen = batch.number * self.config.batch_size + batch.size
        bar.update(batch.number + 1, lambda: float(self.backend.to_host(tally.totals[0])) / seen)

    def _epoch_metrics(
        self,
        epoch: int,
        train: tuple[float, float, float],
        test: dict[str, Any],
        skipped: int,
        seconds: float,
    ) -> dict[str, Any]:
        """The record of a finished epoch: ``train`` is its (objective, recon, KL) per example."""
        loss, recon, kl = train
        steps = self.steps_per_epoch
        return {
            "epoch": epoch,
            "step": self.step,
            "kl_weight": kl_weight(self.config, epoch * steps - 1, steps),
            "train_loss": loss,
            "train_neg_elbo": recon + kl,
            "train_recon": recon,
            "train_kl": kl,
            "lr": self.optimizer.lr,
            "test_loss": test["loss"],
            "test_neg_elbo": test["neg_elbo"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "test_kl_per_dim": [float(v) for v in test["kl_per_dim"]],
            "active_units": test["active_units"],
            "skipped_batches": skipped,
            "seconds": seconds,
            "images_per_second": len(self.train_set) / seconds,
        }

    def batch_inputs(self, index: Array, binarize_rng: Any) -> Array:
        """The training images at ``index`` as the model takes them
        (:meth:`numpy_vae.training.data.ImageSplit.inputs`); overwritten by the next call."""
        return self.train_set.inputs(index, binarize_rng)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, epoch: int | None = None) -> dict[str, Any]:
        """Test-set metrics: negative ELBO per example (one z per image, noise fixed per epoch),
        its parts, the KL of each latent dimension and the active units.

        ``epoch`` picks the noise (default: the epochs completed)."""
        labels = self.test_labels if self.config.n_classes else None
        result = evaluate_elbo(
            self.model,
            self.test_x,
            labels,
            self._rng(EVAL_EPS, self.epoch if epoch is None else epoch),
            self.config.eval_batch_size,
        )
        mu = posterior_means(self.model, self.test_x, labels, self.config.eval_batch_size)
        result["active_units"], result["mean_variance"] = active_units(mu)
        return result

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Host arrays and plain values: everything a resumed run needs."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "params": self._host_params(),
            "adam_step": self.optimizer.step_count,
            # Adam's moments as one vector each, in the model's parameter order (for
            # the fast path that is its flat vector; a reference run resumes on either path).
            "adam_m": self._host_vector(self.optimizer.m),
            "adam_v": self._host_vector(self.optimizer.v),
            "history": list(self.history),
            "config": self.config.to_json(),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = state["params"]
        missing, extra = set(self.model.params) - set(params), set(params) - set(self.model.params)
        if missing or extra:
            names = [f"lacks {', '.join(sorted(missing))}"] if missing else []
            names += [f"has unknown {', '.join(sorted(extra))}"] if extra else []
            raise ValueError(
                f"checkpoint parameters do not fit the model: it {'; it '.join(names)}"
            )
        for name, p in self.model.params.items():
            if tuple(params[name].shape) != tuple(p.shape):
                raise ValueError(
                    f"checkpoint parameter {name} has shape {tuple(params[name].shape)}, "
                    f"the model needs {tuple(p.shape)}"
                )
            p[...] = self.backend.asarray(params[name])
        moments = {"step": state["adam_step"]}
        for key, name in (("m", "adam_m"), ("v", "adam_v")):
            for i, part in enumerate(self._split_vector(numpy.asarray(state[name]))):
                moments[f"{key}.{i}"] = self.backend.asarray(part)
        self.optimizer.load_state_dict(moments)
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.history = list(state["history"])


def evaluate_elbo(
    model: VAE, x: Array, y: Array | None, rng: Any, batch_size: int = 1000
) -> dict[str, Any]:
    """Negative ELBO, reconstruction and KL per example over a data set, with one z per example
    (or the K of a multi-sample objective, and its bound).

    Parameters
    ----------
    model : VAE
    x : array (N, D)
        Inputs as the model takes them (floats).
    y : int array (N,) or None
        Labels, for a conditional model.
    rng : generator
        Draws the reparameterization noise (``standard_normal(size, dtype=...)``).
    batch_size : int
        Decoder rows per forward pass (examples times their K samples); bounds memory.

    Returns
    -------
    dict with ``neg_elbo``, ``recon``, ``kl``, ``loss`` (floats, per example; ``loss`` is the
    objective the model trains, e.g. the negative IWAE bound with its K samples) and
    ``kl_per_dim`` (host array (L,), per example).
    """
    xp = model.xp
    n = x.shape[0]
    totals = xp.zeros(4, dtype=numpy.float64)
    kl_per_dim = xp.zeros(model.latent_dim, dtype=numpy.float64)
    # K samples per example make K decoder rows: as many rows per pass as for the ELBO.
    batch_size = max(1, batch_size // math.prod(model.noise_shape(1)[1:-1]))
    for begin in range(0, n, batch_size):
        xb = x[begin : begin + batch_size]
        yb = None if y is None else y[begin : begin + batch_size]
        eps = rng.standard_normal(model.noise_shape(xb.shape[0]), dtype=model.dtype)
        parts = model.loss(xb, yb, eps=eps, grad=False, validate=False)
        totals += xp.stack([parts.neg_elbo, parts.recon, parts.kl, parts.loss])
        kl_per_dim += parts.kl_per_dim
    host = model.backend.to_host(xp.concatenate([totals, kl_per_dim])) / n  # one transfer
    return {
        "neg_elbo": float(host[0]),
        "recon": float(host[1]),
        "kl": float(host[2]),
        "loss": float(host[3]),
        "kl_per_dim": host[4:],
    }
