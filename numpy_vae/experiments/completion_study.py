"""MNIST quadrant completion (Sohn et al. 2015), minimal: train the baseline network and the CVAE
of :mod:`numpy_vae.completion` on one split, then report each model's negative conditional
log-likelihood on test examples (nats per example): the baseline's exact, the CVAE's negative
ELBO and its importance-sampled estimate.

The pixels are binarized at 0.5 (``x > 0.5``), so that ``p(hidden | visible)`` is a probability
of a binary image and the figures are log-probabilities. This is a sanity check of the models
and the estimator, not the paper's protocol (no early stopping on a validation split, no
baseline guess fed to the prior network, few epochs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numpy_vae.completion import (
    CompletionBaseline,
    CompletionCVAE,
    CompletionModel,
    iw_conditional_log_likelihood,
    quadrant_split,
)
from numpy_vae.optim import Adam
from numpy_vae.training.data import binarize, load_mnist, scale_images


def quadrant_data(images_uint8: np.ndarray, n_given: int) -> tuple[np.ndarray, np.ndarray]:
    """``visible`` and ``hidden`` float32 parts of MNIST images binarized at 0.5."""
    images = binarize(scale_images(images_uint8), "threshold")
    return quadrant_split(images, n_given)


def train(
    model: CompletionModel,
    visible: np.ndarray,
    hidden: np.ndarray,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Adam on shuffled minibatches; the mean training loss of each epoch (nats per example)."""
    adam = Adam(list(model.params.values()), list(model.grads.values()), lr=lr)
    rng = np.random.default_rng(seed)
    curve = []
    for _ in range(epochs):
        order, total = rng.permutation(len(visible)), 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            total += float(model.loss(visible[rows], hidden[rows], validate=False).loss)
            adam.step()
        curve.append(total / len(order))
    return curve


def evaluate(
    baseline: CompletionBaseline,
    cvae: CompletionCVAE,
    visible: np.ndarray,
    hidden: np.ndarray,
    S: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Per-example means: the baseline's exact negative CLL, the CVAE's negative ELBO (one
    draw of z per example) and its importance-sampled negative CLL with ``S`` samples."""
    n = len(visible)
    eps = np.random.default_rng(seed).standard_normal((n, cvae.latent_dim))  # not cvae.rng's
    neg_elbo = float(cvae.loss(visible, hidden, eps, grad=False).neg_elbo) / n
    iw = iw_conditional_log_likelihood(cvae, visible, hidden, S, np.random.default_rng(seed + 1))
    return {
        "baseline_neg_cll": -float(baseline.conditional_log_likelihood(visible, hidden).mean()),
        "cvae_neg_elbo": neg_elbo,
        f"cvae_neg_cll_iw{S}": -float(iw.mean()),
    }


def sanity_run(
    n_given: int = 2,
    epochs: int = 5,
    widths: tuple[int, ...] = (256,),
    latent_dim: int = 20,
    n_test: int = 1000,
    S: int = 100,
    seed: int = 0,
    data_dir: Any = None,
) -> dict[str, Any]:
    """Train both models on the full MNIST training set for ``epochs`` and evaluate on the
    first ``n_test`` test images. Returns the figures and the training curves."""
    mnist = load_mnist(data_dir, verbose=False)
    visible, hidden = quadrant_data(mnist.train_images, n_given)
    test_visible, test_hidden = quadrant_data(mnist.test_images[:n_test], n_given)
    dims = (visible.shape[1], hidden.shape[1])
    baseline = CompletionBaseline(*dims, widths, seed=seed)
    cvae = CompletionCVAE(*dims, widths, latent_dim, seed=seed)
    curves = {
        "baseline": train(baseline, visible, hidden, epochs, seed=seed),
        "cvae": train(cvae, visible, hidden, epochs, seed=seed),
    }
    figures = evaluate(baseline, cvae, test_visible, test_hidden, S, seed)
    return {"n_given": n_given, "epochs": epochs, **figures, "curves": curves}
