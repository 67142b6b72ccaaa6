"""Burda, Grosse & Salakhutdinov (2016), Table 1, one stochastic layer on MNIST: the study.

Each row of the paper's table is a run of the ``burda2016`` protocol
(:data:`numpy_vae.training.trainer.BURDA2016`) with one objective and K. The schedule is eight
stages of 3^i epochs (i = 0..7, 3,280 epochs); :func:`run_row` trains a row stage by stage and,
at each stage's end, measures what the paper reports: the test negative log-likelihood by the
importance-weighted estimate with k = 5000, the bound the row trains on (on the test set, with
its own K), and the active units. Every stage's figures go to ``RUN/stage_<i>.json`` (written
whole or not at all); a row stopped anywhere continues from its last checkpoint and skips the
stages it has measured, so the study can be run a piece at a time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from numpy_vae.training.atomic import write_json
from numpy_vae.training.evaluate import iw_log_likelihood, test_subset
from numpy_vae.training.progress import Progress
from numpy_vae.training.runs import CHECKPOINT, train_run
from numpy_vae.training.trainer import (
    BURDA2016,
    IW_EPS,
    Dataset,
    TrainConfig,
    derived_seed,
    stage_ends,
)

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
        trainer = train_run(
            config,
            dataset,
            run_dir,
            resume=(run_dir / CHECKPOINT).is_file(),
            progress=progress,
            log_interval=log_interval,
            extra_config={"data": "MNIST", "study": "burda2016", "row": row},
        )
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
    """The README's table: every measured stage of every row, beside the paper's figures."""
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
