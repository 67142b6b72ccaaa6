"""The beta-VAE claim on dSprites: does beta > 1 disentangle more and reconstruct worse?

Higgins et al. (2017, "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework") weight the KL term by beta and report, on dSprites, more disentangled
representations for beta > 1 at a cost in reconstruction. Each row of this study trains the
same model on the same procedural dSprites (:mod:`numpy_vae.training.dsprites`) at one beta of
:data:`BETAS`, then measures its end (:func:`measure`): the test reconstruction term and KL (nats
per image), the active units, the mutual information gap and the FactorVAE score
(:mod:`numpy_vae.experiments.disentanglement`) of its posterior means. The run folder also has
the usual figures, ``traversal.png`` among them (the most informative latent dimensions varied
one at a time).

The model (:data:`BASE`) is the beta-VAE paper's MLP for dSprites as far as
:class:`~numpy_vae.config.ModelConfig` can say it: encoder 4096-1200-1200-(2 x 10) with ReLU, 10
latent dimensions, Bernoulli pixels. Where it differs: the decoder here mirrors the encoder
(10-1200-1200-4096, ReLU) where the paper's has three hidden layers of 1200 with tanh; the
optimizer is Adam 1e-4 with batches of 64, ``disentanglement_lib``'s setting for its beta-VAE
(the paper names Adagrad 1e-2). The data is a sample of the 737,280 tuples, drawn once (the
whole set as bytes is 3 GB): :func:`study_data`.

A row trains into ``runs/disentanglement_beta<BETA>`` and continues from its checkpoint when
stopped; its measurement is ``RUN/disentanglement.json``, kept while the run and the metric's
settings are the same, so a study run again only trains and measures what is missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from numpy_vae.experiments.disentanglement import (
    compute_mig,
    encoder_representation,
    factor_vae_score,
)
from numpy_vae.training.atomic import write_json
from numpy_vae.training.data import Dataset
from numpy_vae.training.dsprites import DSPRITES, FactorGrid, dsprites_dataset
from numpy_vae.training.plots import save_figure
from numpy_vae.training.runs import train_or_resume
from numpy_vae.training.trainer import TrainConfig

BETAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: What every row shares (see the module's docstring for where it differs from the paper).
BASE: dict[str, Any] = {
    "hidden_dims": (1200, 1200),
    "latent_dim": 10,
    "lr": 1e-4,
    "batch_size": 64,
    "epochs": 30,
    "binarize": "none",  # the images are black and white already
}
RESULT = "disentanglement.json"


class StudyData(NamedTuple):
    """The study's data: the grid its images are drawn on, and the sample it trains on."""

    grid: FactorGrid
    dataset: Dataset
    seed: int


def study_data(
    grid: FactorGrid = DSPRITES, n_train: int = 100_000, n_test: int = 10_000, seed: int = 0
) -> StudyData:
    """``n_train + n_test`` distinct tuples of ``grid``, rendered once
    (:func:`numpy_vae.training.dsprites.dsprites_dataset`; 4 KB an image at 64 x 64)."""
    return StudyData(grid, dsprites_dataset(grid, n_train, n_test, seed)[0], seed)


def run_name(beta: float, seed: int = 0) -> str:
    """``disentanglement_beta4``, ``disentanglement_beta0.5``; ``..._seed<N>`` for another
    seed."""
    name = f"disentanglement_beta{beta:g}"
    return name if seed == 0 else f"{name}_seed{seed}"


def row_config(
    beta: float, epochs: int | None = None, seed: int = 0, **changes: Any
) -> TrainConfig:
    """The configuration of the row at ``beta`` (``epochs`` and ``changes`` override
    :data:`BASE`, e.g. smaller ``hidden_dims`` for a quick run)."""
    config = TrainConfig(**{**BASE, **changes}, beta=beta, seed=seed)
    return config if epochs is None else replace(config, epochs=epochs)


def run_row(
    beta: float,
    data: StudyData,
    runs_dir: Path,
    epochs: int | None = None,
    seed: int = 0,
    metric_points: int = 10_000,
    progress: bool = False,
    log_interval: int = 0,
    **changes: Any,
) -> dict[str, Any]:
    """Train the row at ``beta`` (continuing from its checkpoint) and measure it; the
    measurement is read back from ``RUN/disentanglement.json`` when it is of the same epoch,
    configuration, data and metric settings.

    Raises
    ------
    numpy_vae.training.runs.ConfigMismatch
        The row's folder holds a run of another configuration (say another ``hidden_dims``).
    """
    config = row_config(beta, epochs, seed, **changes)
    run_dir = Path(runs_dir) / run_name(beta, seed)
    path = run_dir / RESULT
    settings = {
        "epoch": config.epochs,
        "grid": asdict(data.grid),
        "metric_points": metric_points,
        "config": json.loads(json.dumps(config.to_json())),  # as stored: tuples as lists
        "data": {
            "seed": data.seed,
            "n_train": len(data.dataset.train_images),
            "n_test": len(data.dataset.test_images),
        },
    }
    if path.is_file():
        done = json.loads(path.read_text())
        if {key: done.get(key) for key in settings} == settings:
            return done
    extra = {
        "data": f"dSprites (procedural), seed {data.seed}",
        "study": "disentanglement",
        "beta": beta,
        "grid": asdict(data.grid),
    }
    trainer = train_or_resume(config, data.dataset, run_dir, extra, progress, log_interval)
    result = {**measure(trainer, data.grid, metric_points), **settings}
    write_json(path, result)
    return result


def measure(trainer: Any, grid: FactorGrid, metric_points: int = 10_000) -> dict[str, Any]:
    """A trained row's figures: the last epoch's test metrics, and MIG and the FactorVAE score
    of the posterior means on ``metric_points`` tuples each (votes: ``metric_points`` to train,
    half as many to evaluate, as ``disentanglement_lib``'s 10,000 and 5,000)."""
    last = trainer.history[-1]
    represent = encoder_representation(trainer.model, grid)
    start = time.perf_counter()
    mig = compute_mig(represent, grid.sample_factors, np.random.default_rng(0), metric_points)
    fvae = factor_vae_score(
        represent,
        grid.sample_factors,
        np.random.default_rng(1),
        n_train=metric_points,
        n_eval=max(1, metric_points // 2),
        n_variance=metric_points,
    )
    return {
        "beta": trainer.config.beta,
        "epoch": trainer.epoch,
        "grid": asdict(grid),
        "metric_points": metric_points,
        "test_neg_elbo": last["test_neg_elbo"],
        "test_recon": last["test_recon"],
        "test_kl": last["test_kl"],
        "active_units": last["active_units"],
        "mig": mig.score,
        "mig_gaps": mig.gaps.tolist(),
        "factor_vae": fvae.score,
        "factor_vae_train": fvae.train_accuracy,
        "factor_vae_active": int(fvae.active.sum()),
        "train_seconds": sum(h["seconds"] for h in trainer.history),
        "metric_seconds": time.perf_counter() - start,
    }


def collect(runs_dir: Path, seed: int = 0) -> list[dict[str, Any]]:
    """Every measured row of ``seed`` under ``runs_dir``, by beta."""
    found = []
    for beta in BETAS:
        path = Path(runs_dir) / run_name(beta, seed) / RESULT
        if path.is_file():
            found.append(json.loads(path.read_text()))
    return found


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A line per measured row: beta against reconstruction and the two metrics."""
    lines = [
        "| beta | reconstruction (nats) | KL (nats) | active units | MIG | FactorVAE score |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['beta']:g} | {r['test_recon']:.2f} | {r['test_kl']:.2f} "
            f"| {r['active_units']} | {r['mig']:.3f} | {r['factor_vae']:.3f} |"
        )
    return "\n".join(lines)


def plot_study(rows: list[dict[str, Any]], path: Path) -> None:
    """Reconstruction (left) and the two metrics (right) against beta, on a log axis."""
    from matplotlib.figure import Figure

    betas = [r["beta"] for r in rows]
    fig = Figure(figsize=(9.0, 3.4), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(betas, [r["test_recon"] for r in rows], "o-")
    left.set_ylabel("test reconstruction -log p(x|z) (nats)")
    right.plot(betas, [r["mig"] for r in rows], "o-", label="MIG")
    right.plot(betas, [r["factor_vae"] for r in rows], "s-", label="FactorVAE score")
    right.set_ylim(0, 1)
    right.legend()
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("beta")
    fig.suptitle("beta-VAE on procedural dSprites")
    save_figure(fig, path)
