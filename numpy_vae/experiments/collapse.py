"""Posterior collapse with an autoregressive decoder, and the remedies: the study.

Every row trains on dynamically binarized MNIST with the same budget (:data:`BASE`: batch 100,
Adam 1e-3, ``epochs`` epochs, 20 latent dimensions, encoder 784-400-40); the rows differ in
the decoder and in the remedy (:data:`ROWS`):

- ``mlp``: today's decoder, the reference point;
- ``made``: the MADE decoder (:mod:`numpy_vae.made`), plain ELBO: does q collapse onto p?
- the three remedies of the math material: KL warm-up, free bits (two allowances), a weaker
  decoder (a MADE with few hidden units); and beta < 1;
- ``made_no_z``: the MADE decoder alone, blind to z, whose ``log p(x)`` is exact.

:func:`run_row` trains a row (resuming from its checkpoint) and measures its end: test
negative ELBO, KL, active units, an importance-weighted estimate of the test NLL
(:func:`numpy_vae.training.evaluate.iw_log_likelihood`) and of the mutual information between
x and z under q (:func:`mutual_information`), written whole to ``RUN/collapse.json``. The
per-epoch KL of each dimension is the run's own ``metrics.jsonl``; :func:`plot_kl_per_dim`
draws it for every row, :func:`plot_samples` draws samples of every row side by side.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy

from numpy_vae.training.atomic import write_json
from numpy_vae.training.data import Dataset
from numpy_vae.training.evaluate import iw_log_likelihood, test_subset
from numpy_vae.training.plots import save_figure
from numpy_vae.training.runs import train_or_resume
from numpy_vae.training.trainer import IW_EPS, TrainConfig, derived_seed

#: What every row shares: the training budget and the encoder.
BASE: dict[str, Any] = {
    "binarize": "dynamic",
    "batch_size": 100,
    "lr": 1e-3,
    "epochs": 20,
    "latent_dim": 20,
    "hidden_dims": (400,),
}
_MADE = {"decoder": "made", "made_hidden": (500,)}
#: The rows: what each changes from :data:`BASE`, and a line saying what it is.
ROWS: dict[str, tuple[dict[str, Any], str]] = {
    "mlp": ({}, "MLP decoder 20-400-784, plain ELBO"),
    "made": (_MADE, "MADE decoder (500 hidden), plain ELBO"),
    "made_warmup": ({**_MADE, "kl_warmup": 10.0}, "MADE, KL warm-up over 10 epochs"),
    "made_fb_0.1": ({**_MADE, "free_bits": 0.1}, "MADE, free bits 0.1 nats per dimension"),
    "made_fb_0.5": ({**_MADE, "free_bits": 0.5}, "MADE, free bits 0.5 nats per dimension"),
    "made_weak": ({**_MADE, "made_hidden": (20,)}, "weaker MADE (20 hidden units), plain ELBO"),
    "made_beta_0.5": ({**_MADE, "beta": 0.5}, "MADE, beta = 0.5"),
    "made_no_z": ({**_MADE, "made_z": False}, "MADE without z (the autoregressive model alone)"),
    # A stronger MADE at beta = 1: wider, and the direct connection.
    "made_wide_direct": (
        {**_MADE, "made_hidden": (1000,), "made_direct": True},
        "MADE 1000 hidden + direct connection, plain ELBO",
    ),
    # Where the MADE does collapse within the budget: KL weight 2. The MLP at the same weight
    # is the comparison that isolates the decoder; the remedies are measured against made_b2.
    "mlp_b2": ({"beta": 2.0}, "MLP decoder, beta = 2"),
    "made_b2": ({**_MADE, "beta": 2.0}, "MADE, beta = 2"),
    "made_b2_warmup": (
        {**_MADE, "beta": 2.0, "kl_warmup": 10.0},
        "MADE, beta = 2, KL warm-up over 10 epochs",
    ),
    "made_b2_fb_0.1": ({**_MADE, "beta": 2.0, "free_bits": 0.1}, "MADE, beta = 2, free bits 0.1"),
    "made_b2_fb_0.5": ({**_MADE, "beta": 2.0, "free_bits": 0.5}, "MADE, beta = 2, free bits 0.5"),
    "made_b2_weak": (
        {**_MADE, "made_hidden": (20,), "beta": 2.0},
        "weaker MADE (20 hidden units), beta = 2",
    ),
    "made_b2_weak_100": (
        {**_MADE, "made_hidden": (100,), "beta": 2.0},
        "weaker MADE (100 hidden units), beta = 2",
    ),
}
RESULT = "collapse.json"
LOG_2PI = math.log(2 * math.pi)


def run_name(row: str, seed: int = 0) -> str:
    """The run folder of a row: ``collapse_<row>``, or ``collapse_<row>_seed<N>`` for another
    seed (the same row repeated, to see what is the setting and what is the draw)."""
    return f"collapse_{row}" if seed == 0 else f"collapse_{row}_seed{seed}"


def row_config(row: str, epochs: int | None = None, seed: int = 0) -> TrainConfig:
    """The configuration of one row (``epochs`` overrides the shared budget)."""
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
    config = TrainConfig(**{**BASE, **ROWS[row][0]}, seed=seed)
    return config if epochs is None else replace(config, epochs=epochs)


def mutual_information(
    mu: numpy.ndarray, logvar: numpy.ndarray, rng: numpy.random.Generator, chunk: int = 250
) -> float:
    """The mutual information between x and z under ``q(z|x) p_data(x)``, estimated on N
    examples: ``mean_i [log q(z_i | x_i) - log q(z_i)]`` with ``z_i ~ q(z | x_i)`` and the
    aggregate posterior ``q(z) = (1/N) sum_n q(z | x_n)``.

    It is ``E_x KL(q(z|x) || p(z)) - KL(q(z) || p(z))`` (Hoffman & Johnson's ELBO surgery): the
    part of the KL that carries information about x. With q(z) replaced by an average over N
    examples the estimate cannot exceed ``log N`` (each ``q(z_i) >= q(z_i | x_i) / N``), so it
    separates "no information" (about 0) from "some", and saturates near ``log N``.
    ``mu``, ``logvar`` (N, L) are host float64 arrays.
    """
    n, latent = mu.shape
    sigma = numpy.exp(0.5 * logvar)
    z = mu + sigma * rng.standard_normal((n, latent))
    log_q_own = _log_normal(z, mu, logvar)  # log q(z_i | x_i)
    log_q_all = numpy.empty(n)
    for start in range(0, n, chunk):
        zi = z[start : start + chunk, None, :]  # (c, 1, L) against every (mu_n, logvar_n)
        log_q = _log_normal(zi, mu[None], logvar[None])  # (c, N)
        peak = log_q.max(axis=1, keepdims=True)
        log_q_all[start : start + chunk] = (
            peak[:, 0] + numpy.log(numpy.exp(log_q - peak).sum(axis=1)) - math.log(n)
        )
    return float((log_q_own - log_q_all).mean())


def _log_normal(z: numpy.ndarray, mu: numpy.ndarray, logvar: numpy.ndarray) -> numpy.ndarray:
    """``log N(z; mu, diag(exp(logvar)))``, summed over the last axis (broadcasting)."""
    diff = z - mu
    return -0.5 * (diff * diff * numpy.exp(-logvar) + logvar + LOG_2PI).sum(axis=-1)


def run_row(
    row: str,
    dataset: Dataset,
    runs_dir: Path,
    epochs: int | None = None,
    iw_k: int = 1000,
    test_images: int = 1000,
    seed: int = 0,
    progress: bool = False,
    log_interval: int = 0,
) -> dict[str, Any]:
    """Train ``row`` (continuing from its checkpoint) and measure it; the measurement is kept
    in ``RUN/collapse.json`` and read back when the run has not trained further since."""
    config = row_config(row, epochs, seed)
    run_dir = Path(runs_dir) / run_name(row, seed)
    path = run_dir / RESULT
    if path.is_file():
        done = json.loads(path.read_text())
        same = (done["epoch"], done["iw_k"], done["test_images"])
        if same == (config.epochs, iw_k, min(test_images, len(dataset.test_images))):
            return done
    extra = {"data": "MNIST", "study": "collapse", "row": row, "seed": seed}
    trainer = train_or_resume(config, dataset, run_dir, extra, progress, log_interval)
    result = measure(trainer, row, iw_k, test_images)
    write_json(path, result)
    return result


def measure(trainer: Any, row: str, iw_k: int, test_images: int) -> dict[str, Any]:
    """A trained row's figures: the last epoch's test metrics, the IW NLL (``iw_k`` samples)
    and the mutual information on ``test_images`` random test images (drawn once, seed 0)."""
    last = trainer.history[-1]
    model, backend = trainer.model, trainer.backend
    index, x = test_subset(trainer.test_x, test_images, backend.xp)
    rng = backend.rng(derived_seed(trainer.config.seed, IW_EPS, trainer.epoch))
    start = time.perf_counter()
    log_px = iw_log_likelihood(model, x, k=iw_k, rng=rng)
    iw_seconds = time.perf_counter() - start
    mu, logvar = (backend.to_host(a).astype(numpy.float64) for a in model.encode(x))
    result = {
        "row": row,
        "description": ROWS[row][1],
        "epoch": trainer.epoch,
        "test_neg_elbo": last["test_neg_elbo"],
        "test_recon": last["test_recon"],
        "test_kl": last["test_kl"],
        "active_units": last["active_units"],
        "test_iw_nll": float(-log_px.mean()),
        "test_iw_nll_se": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
        "iw_k": iw_k,
        "test_images": len(index),
        "mutual_information": mutual_information(mu, logvar, numpy.random.default_rng(1)),
        "mi_ceiling": math.log(len(index)),
        "train_seconds": sum(h["seconds"] for h in trainer.history),
        "iw_seconds": iw_seconds,
    }
    if not trainer.config.made_z:
        # The decoder ignores z, so -log p(x|z), at any z, is the exact -log p(x): on the whole
        # test set (the epoch's reconstruction term) and on the images of the IW estimate.
        z = backend.xp.zeros((x.shape[0], model.latent_dim), dtype=model.dtype)
        exact = backend.to_host(model.log_likelihood(x, model.decoder_output(z, x=x)))
        result["test_exact_nll"] = last["test_recon"]
        result["test_exact_nll_subset"] = float(-exact.astype(numpy.float64).mean())
    return result


def history(runs_dir: Path, row: str, seed: int = 0) -> list[dict[str, Any]]:
    """The per-epoch metrics of a row's run."""
    path = Path(runs_dir) / run_name(row, seed) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(runs_dir: Path, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every measured row of ``seed`` under ``runs_dir``."""
    found = {}
    for row in ROWS:
        path = Path(runs_dir) / run_name(row, seed) / RESULT
        if path.is_file():
            found[row] = json.loads(path.read_text())
    return found


def markdown_table(found: dict[str, dict[str, Any]]) -> str:
    """The table of docs/08-posterior-collapse.md, a line per measured row."""
    lines = [
        "| row | test -ELBO | test NLL (IW) | KL | active units | MI(x; z) | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in found.values():
        nll = f"{r['test_iw_nll']:.2f} ± {r['test_iw_nll_se']:.2f}"
        if "test_exact_nll_subset" in r:
            nll += (
                f" (exact: {r['test_exact_nll_subset']:.2f} on these images, "
                f"{r['test_exact_nll']:.2f} on all)"
            )
        lines.append(
            f"| {r['description']} | {r['test_neg_elbo']:.2f} | {nll} | {r['test_kl']:.2f} "
            f"| {r['active_units']} | {r['mutual_information']:.2f} "
            f"| {r['train_seconds'] / 60:.0f} min |"
        )
    first = next(iter(found.values()))
    k, n = first["iw_k"], first["test_images"]
    lines.append("")
    lines.append(
        f"IW NLL: k = {k} importance samples on {n} random test images (± one standard "
        f"error); MI: the mutual information between x and z under q, estimated on the same "
        f"images (at most log {n} = {math.log(n):.2f} nats). -ELBO and KL: the whole test set, "
        "nats per image."
    )
    return "\n".join(lines)


def plot_kl_per_dim(runs_dir: Path, rows: list[str], path: Path, seed: int = 0) -> None:
    """A panel per row: the test KL of every latent dimension (rows of the image, sorted by
    their final KL) against the epoch, in nats, on one colour scale."""
    from matplotlib.figure import Figure

    kls = {
        row: numpy.array([h["test_kl_per_dim"] for h in history(runs_dir, row, seed)])
        for row in rows
    }
    top = max(float(k.max()) for k in kls.values())
    cols = min(4, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(3.0 * cols + 1.2, 2.3 * nrows), dpi=90, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True, sharey=True)
    image = None
    for i, (ax, row) in enumerate(zip(axes.flat, rows, strict=False)):
        kl = kls[row]
        order = numpy.argsort(-kl[-1])
        image = ax.imshow(
            kl[:, order].T, aspect="auto", cmap="viridis", vmin=0, vmax=top, origin="lower",
            extent=(0.5, len(kl) + 0.5, -0.5, kl.shape[1] - 0.5),
        )  # fmt: skip
        ax.set_title(f"{row}: KL {kl[-1].sum():.1f}", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("dimension (by final KL)", fontsize=8)
        if i >= len(rows) - cols:
            ax.set_xlabel("epoch", fontsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, label="test KL per dimension (nats)", shrink=0.6)
    save_figure(fig, path)


def plot_samples(models: dict[str, Any], path: Path, n: int = 10) -> None:
    """``n`` samples of every row, a row each: the same prior draws of z for every row; the
    MADE rows show the probabilities along a pixel-by-pixel draw (:meth:`VAE.decode`)."""
    from matplotlib.figure import Figure

    z = numpy.random.default_rng(0).standard_normal((n, BASE["latent_dim"]))
    fig = Figure(figsize=(n * 0.9, 1.0 * len(models)), dpi=90, layout="constrained")
    axes = fig.subplots(len(models), 1)
    for ax, (row, model) in zip(numpy.atleast_1d(axes), models.items(), strict=True):
        backend = model.backend
        images = backend.to_host(model.decode(backend.asarray(z)))
        ax.imshow(numpy.hstack(images.reshape(n, 28, 28)), cmap="gray", vmin=0, vmax=1)
        ax.set_title(row, fontsize=8, loc="left")
        ax.axis("off")
    save_figure(fig, path)
