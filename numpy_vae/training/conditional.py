"""The class-conditional VAE's figures.

A conditional run (``n_classes`` 10) draws three figures besides the others of
:func:`numpy_vae.training.runs.write_figures`:

- ``class_samples.png``: row d holds draws of p(x | z, y = d), z ~ N(0, I);
- ``class_samples_t0.5.png``: the same rows at temperature 0.5, z = 0.5 eps with the same eps,
  and a first column z = 0 (the prior's mode);
- ``analogies.png``: style analogies; test images encoded with their own labels (posterior
  means), each mean decoded with every label (:func:`style_analogies`).

How much of the label z carries is measured in :mod:`numpy_vae.experiments.conditional`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

from numpy_vae.training import plots

#: The temperature of ``class_samples_t0.5.png``: z = TEMPERATURE * eps, eps ~ N(0, I).
TEMPERATURE = 0.5
PER_CLASS = 10
CONDITIONAL_FIGURES = ("class_samples.png", "class_samples_t0.5.png", "analogies.png")


def class_sample_latents(seed: int, latent_dim: int, temperature: float = 1.0) -> numpy.ndarray:
    """(10 * PER_CLASS, latent_dim) host latents ``temperature * eps``, row ``d * PER_CLASS + i``
    for label d: the same ``eps`` (drawn from ``seed``) at every temperature."""
    eps = numpy.random.default_rng(seed).standard_normal((10 * PER_CLASS, latent_dim))
    return temperature * eps


def class_samples(model: Any, seed: int, temperature: float = 1.0) -> Any:
    """Decoder means of :func:`class_sample_latents`, labels 0..9 in blocks of PER_CLASS rows.

    Below temperature 1 each block starts with one more row, z = 0: the decoder's mean at the
    prior's mode. Returns (10 * PER_CLASS, D) or (10 * (PER_CLASS + 1), D), on the model's
    backend.
    """
    xp = model.xp
    z = class_sample_latents(seed, model.latent_dim, temperature).reshape(10, PER_CLASS, -1)
    if temperature != 1.0:
        z = numpy.concatenate([numpy.zeros((10, 1, model.latent_dim)), z], axis=1)
    per_class = z.shape[1]
    y = xp.repeat(xp.arange(10), per_class)
    return model.decode(model.backend.asarray(z.reshape(10 * per_class, -1)), y)


def analogy_rows(labels: numpy.ndarray, n: int = 10) -> numpy.ndarray:
    """Indices of the test images an analogy figure shows: the first of each label present, in
    label order, then the next images in order until there are ``n`` (or none are left)."""
    labels = numpy.asarray(labels)
    first = [int(numpy.flatnonzero(labels == k)[0]) for k in numpy.unique(labels)]
    taken = set(first)
    rest = [i for i in range(len(labels)) if i not in taken]
    return numpy.array((first + rest)[:n], dtype=numpy.int64)


def style_analogies(model: Any, x: Any, y: Any) -> Any:
    """(n, n_classes, D): row i, column k is the decoder's mean for label k at the posterior
    mean of ``x[i]`` encoded with its own label ``y[i]``; on the model's backend."""
    xp, c = model.xp, model.n_classes
    mu, _ = model.encode(x, y)
    z = xp.repeat(mu, c, axis=0)
    labels = xp.tile(xp.arange(c), x.shape[0])
    return model.decode(z, labels).reshape(x.shape[0], c, -1)


def write_conditional_figures(
    trainer: Any, run_dir: Path, shown: Callable[[Any], numpy.ndarray]
) -> list[Path]:
    """Draw class_samples.png, class_samples_t0.5.png and analogies.png into ``run_dir``."""
    model, backend, cfg = trainer.model, trainer.backend, trainer.config
    word = plots.class_word(int(trainer.test_x.shape[1]))
    written = []
    for temperature, name in ((1.0, "class_samples.png"), (TEMPERATURE, "class_samples_t0.5.png")):
        images = shown(class_samples(model, cfg.seed, temperature))
        plots.plot_class_samples(images, len(images) // 10, run_dir / name, word, temperature)
        written.append(run_dir / name)
    labels = backend.to_host(trainer.test_labels)
    index = analogy_rows(labels)
    x = trainer.test_x[backend.xp.asarray(index)]
    decoded = shown(style_analogies(model, x, backend.xp.asarray(labels[index])))
    rows = numpy.concatenate([shown(x)[:, None, :], decoded], axis=1)
    plots.plot_analogies(rows, labels[index], run_dir / "analogies.png", word)
    written.append(run_dir / "analogies.png")
    return written
