"""Burda, Grosse & Salakhutdinov (2016), Table 1, one stochastic layer on MNIST: the protocol
and the study.

The protocol is a preset: :data:`BURDA2016` holds its settings (what ``--protocol burda2016``
sets), :func:`learning_rate` its schedule and :func:`initialize` its initial parameters, which
this module registers with :mod:`numpy_vae.training.presets` as ``burda2016`` when it is imported
(training cannot import them: it lies below the experiments).

Each row of the paper's table is a run of the protocol with one objective and K. The schedule is
eight stages of 3^i epochs (i = 0..7, 3,280 epochs); :func:`run_row` trains a row stage by stage
and, at each stage's end, measures what the paper reports: the test negative log-likelihood by
the importance-weighted estimate with k = 5000, the bound the row trains on (on the test set,
with its own K), and the active units. Every stage's figures go to ``RUN/stage_<i>.json``
(written whole or not at all); a row stopped anywhere continues from its last checkpoint and
skips the stages it has measured, so the study can be run a piece at a time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy

from numpy_vae.model import VAE
from numpy_vae.training import presets
from numpy_vae.training.atomic import write_json
from numpy_vae.training.data import Dataset
from numpy_vae.training.evaluate import iw_log_likelihood, test_subset
from numpy_vae.training.progress import Progress
from numpy_vae.training.runs import train_or_resume
from numpy_vae.training.trainer import IW_EPS, TrainConfig, derived_seed

#: The Burda et al. (2016) MNIST protocol, one stochastic layer: what ``--protocol burda2016``
#: sets (any flag given beside it wins). 3,280 epochs: the stages 1 + 3 + ... + 3^7.
BURDA2016 = {
    "hidden_dims": (200, 200),
    "latent_dim": 50,
    "activation": "tanh",
    "binarize": "dynamic",
    "batch_size": 20,
    "lr": 1e-3,
    "adam_eps": 1e-4,
    "init": "burda2016",
    "lr_schedule": "burda2016",
    "epochs": 3280,
}


def stage_ends(stages: int = 8) -> list[int]:
    """The epoch at which each stage of the schedule ends: 1, 4, 13, 40, ..., 3280."""
    return [sum(3**j for j in range(i + 1)) for i in range(stages)]


def learning_rate(lr: float, epoch: int) -> float:
    """Adam's learning rate in ``epoch`` (1-based): stage i (0-based) spans 3^i epochs with
    ``lr * 10^(-i/7)``; past the last stage, the last rate.

    The paper's schedule; the official code rounds it (``1e-4 * round(10 ** (1 - i/7), 1)``,
    1.6% at most from this one, in stage 5).
    """
    ends = stage_ends()
    stage = next((i for i, end in enumerate(ends) if epoch <= end), len(ends) - 1)
    return lr * 10 ** (-stage / 7)


def initialize(model: VAE, train_images: numpy.ndarray, seed: int) -> None:
    """Burda et al.'s initial parameters, in place.

    Every weight Glorot-uniform, ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``, every
    bias 0; the decoder's output bias ``logit(clip(mean pixel, 0.001, 0.999))`` of the training
    images (grey levels k/255), so the untrained decoder already draws the average digit. Their
    encoder has two heads, ``mu`` and ``log sigma``, each Linear(h, L); here one Linear(h, 2L)
    gives ``mu`` and ``logvar = 2 log sigma``, so the ``mu`` rows take Glorot's draw for (h, L)
    and the ``logvar`` rows twice such a draw: the initial q is the same function.
    """
    rng = numpy.random.default_rng(seed)
    host = {}
    for name, p in model.params.items():
        shape = tuple(p.shape)
        if name.endswith(".bias"):
            host[name] = numpy.zeros(shape)
            continue
        fan_out, fan_in = shape
        if name == "head.weight":
            fan_out //= 2  # each of the two heads
        a = math.sqrt(6.0 / (fan_in + fan_out))
        host[name] = rng.uniform(-a, a, size=shape)
        if name == "head.weight":
            host[name][fan_out:] *= 2  # logvar = 2 log sigma
    mean = (train_images.astype(numpy.float64) / 255).mean(axis=0)
    clipped = numpy.clip(mean, 0.001, 0.999)
    last_bias = [n for n in model.params if n.startswith("decoder.") and n.endswith(".bias")][-1]
    host[last_bias] = numpy.log(clipped / (1 - clipped))
    model.load_state_dict(host)


presets.register("burda2016", lr_schedule=learning_rate, initializer=initialize)

#: The rows of Table 1 (one stochastic layer, MNIST): objective and K.
ROWS = {
    "vae_k1": ("vae", 1),
    "vae_k5": ("vae", 5),
    "vae_k50": ("vae", 50),
    "iwae_k5": ("iwae", 5),
    "iwae_k50": ("iwae", 50),
}
#: The paper's test NLL of each row, in nats (Table 1; k = 5000 for the estimate).
PAPER_NLL = {
    "vae_k1": 86.76,
    "vae_k5": 86.47,
    "vae_k50": 86.35,
    "iwae_k5": 85.54,
    "iwae_k50": 84.78,
}
#: The epochs of the full schedule.
FULL_EPOCHS = BURDA2016["epochs"]


def row_config(row: str, seed: int = 0) -> TrainConfig:
    """The protocol's configuration for one row, over the full 3,280 epochs."""
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
    objective, k = ROWS[row]
    return TrainConfig(**BURDA2016, objective=objective, k=k, seed=seed)


def run_row(
    row: str,
    dataset: Dataset,
    runs_dir: Path,
    stages: int,
    iw_k: int = 5000,
    test_images: int | None = None,
    seed: int = 0,
    progress: bool = False,
    log_interval: int = 0,
) -> list[dict[str, Any]]:
    """Train ``row`` through its first ``stages`` stages, measuring each stage's end.

    Returns the stage results (the ones measured now and the ones found on disk), in order.
    """
    base = row_config(row, seed)
    run_dir = Path(runs_dir) / f"burda_{row}"
    results = []
    for stage, end in enumerate(stage_ends()[:stages]):
        path = run_dir / f"stage_{stage}.json"
        if path.is_file():
            results.append(_read_json(path))
            continue
        config = replace(base, epochs=end)
        extra = {"data": "MNIST", "study": "burda2016", "row": row}
        trainer = train_or_resume(config, dataset, run_dir, extra, progress, log_interval)
        results.append(
            measure_stage(trainer, row, stage, iw_k, test_images, progress, log_interval)
        )
        write_json(path, results[-1])
    return results


def measure_stage(
    trainer: Any,
    row: str,
    stage: int,
    iw_k: int,
    test_images: int | None,
    progress: bool = False,
    log_interval: int = 0,
) -> dict[str, Any]:
    """What the paper reports, at the end of one stage: test NLL (IW, ``iw_k`` samples), the
    bound trained on (test and train), active units, and the time spent."""
    last = trainer.history[-1]
    index, x = test_subset(trainer.test_x, test_images, trainer.backend.xp)
    shown = None
    if progress or log_interval:
        shown = Progress(
            len(index), f"{row} stage {stage}: IW NLL (k = {iw_k})", progress, log_interval
        )
    rng = trainer.backend.rng(derived_seed(trainer.config.seed, IW_EPS, trainer.epoch))
    start = time.perf_counter()
    log_px = iw_log_likelihood(trainer.model, x, k=iw_k, rng=rng, progress=shown)
    eval_seconds = time.perf_counter() - start
    train_seconds = sum(h["seconds"] for h in trainer.history)
    return {
        "row": row,
        "objective": trainer.config.objective,
        "k": trainer.config.k,
        "stage": stage,
        "epoch": trainer.epoch,
        "lr": last["lr"],
        "test_iw_nll": float(-log_px.mean()),
        "test_iw_nll_se": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
        "iw_k": iw_k,
        "test_images": len(index),
        "test_bound": last["test_loss"],  # the negative bound trained on, with its own K
        "train_bound": last["train_loss"],
        "test_neg_elbo": last["test_neg_elbo"],
        "active_units": last["active_units"],
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / trainer.epoch,
        "projected_full_hours": train_seconds / trainer.epoch * FULL_EPOCHS / 3600,
        "eval_seconds": eval_seconds,
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def collect(runs_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every measured stage under ``runs_dir``, by row."""
    found = {}
    for row in ROWS:
        paths = sorted(
            (Path(runs_dir) / f"burda_{row}").glob("stage_*.json"),
            key=lambda p: int(p.stem.split("_")[1]),
        )
        if paths:
            found[row] = [_read_json(p) for p in paths]
    return found


def markdown_table(found: dict[str, list[dict[str, Any]]]) -> str:
    """The table of docs/10-importance-weighting.md: every measured stage of every row, beside
    the paper's figures."""
    lines = [
        "| row | stage (epochs) | test NLL (IW estimate) | -bound trained on (test) | active units "
        "| paper NLL (3,280 epochs) | train time | projected full run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, stages in found.items():
        objective, k = ROWS[row]
        for s in stages:
            subset = f" (k={s['iw_k']}" + (
                ")" if s["test_images"] == 10000 else f", {s['test_images']} images)"
            )
            lines.append(
                f"| {objective.upper()} k={k} | {s['stage']} ({s['epoch']}) "
                f"| {s['test_iw_nll']:.2f} ± {s['test_iw_nll_se']:.2f}{subset} "
                f"| {s['test_bound']:.2f} | {s['active_units']} | {PAPER_NLL[row]:.2f} "
                f"| {_hours(s['train_seconds'])} "
                f"| {s['projected_full_hours']:.1f} h |"
            )
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"
