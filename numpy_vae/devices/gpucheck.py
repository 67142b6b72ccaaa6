"""Check the GPU backend against NumPy on a machine with CuPy and a GPU (``scripts/check_gpu.py``).

Four checks, printed as a report:

1. **Gradients on the device.** The finite-difference checks of :mod:`numpy_vae.gradcheck`, in
   float64, for three model variants whose arrays all live on the device (the check perturbs
   them in place and copies each loss value to the host explicitly). The same checks on NumPy
   are printed beside them: the two should be of the same order, about 1e-10.
2. **Parity with NumPy in lockstep.** Both backends start from the same parameters (they are
   drawn on the host, so they are bitwise equal) and take the same steps on the same batches
   with the same noise (drawn on the host and copied to both), in float64. The losses then
   differ only by the rounding of different kernels: a relative difference near 1e-12.
3. **Training drift.** One epoch of a few hundred steps with the same seed on each backend, as
   :class:`~numpy_vae.training.trainer.Trainer` runs it, each with its own random streams: CuPy's
   generator draws other numbers than NumPy's for the same seed, so the shuffles and the noise
   differ. The per-step losses then differ by sampling noise (several nats), while the epoch
   means and the test negative ELBO agree to within about a nat per example.
4. **Step time** of both backends side by side (forward, backward and Adam on one batch of the
   classic 784-400-20 model, float32; the device is synchronised before the clock is read).

On a machine without CuPy or without a GPU the check ends with a one-line "unavailable"
message and exit status 2. ``--device strict`` runs it against the CPU test device instead,
which is how the test suite exercises this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy

from numpy_vae.backend import Backend
from numpy_vae.fast import FastAdam, FastVAE
from numpy_vae.gradcheck import check_gradients
from numpy_vae.model import VAE
from numpy_vae.training.data import Dataset
from numpy_vae.training.trainer import TrainConfig, Trainer

# Small models for the gradient checks: (label, VAE keyword arguments).
VARIANTS = (
    ("ReLU, Bernoulli", {"hidden_dims": (6,), "latent_dim": 3}),
    (
        "2 x tanh, Gaussian, beta 0.5",
        {
            "hidden_dims": (6, 5),
            "latent_dim": 2,
            "activation": "tanh",
            "likelihood": "gaussian",
            "gaussian_sigma": 0.5,
            "beta": 0.5,
        },
    ),
    (
        "conditional, leaky ReLU, free bits",
        {
            "hidden_dims": (6,),
            "latent_dim": 2,
            "n_classes": 3,
            "activation": "leaky_relu",
            "free_bits": 0.05,
        },
    ),  # fmt: skip
)
GRAD_TOLERANCE = 1e-7
LOCKSTEP_TOLERANCE = 1e-6


def synthetic_dataset(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """MNIST-shaped uint8 images: a blob whose height encodes the digit label, plus noise.

    Enough for a VAE to learn something, and no download. Shapes (N, 784) like MNIST.
    """
    rng = numpy.random.default_rng(seed)
    yy, xx = numpy.mgrid[:28, :28]
    templates = numpy.stack(
        [numpy.exp(-((yy - 5 - 2 * d) ** 2 + (xx - 14) ** 2) / 8).ravel() for d in range(10)]
    )

    def split(n: int) -> tuple[numpy.ndarray, numpy.ndarray]:
        labels = rng.integers(0, 10, n)
        images = numpy.empty((n, 784), dtype=numpy.uint8)
        for start in range(0, n, 4096):
            blobs = templates[labels[start : start + 4096]]
            noisy = blobs + 0.3 * rng.random(blobs.shape, dtype=numpy.float32) - 0.15
            images[start : start + 4096] = (255 * numpy.clip(noisy, 0, 1)).astype(numpy.uint8)
        return images, labels.astype(numpy.int64)

    train_images, train_labels = split(n_train)
    test_images, test_labels = split(n_test)
    return Dataset(train_images, train_labels, test_images, test_labels)


def gradient_errors(backend: Backend, seed: int = 0, max_entries: int = 12) -> dict[str, float]:
    """Largest relative gradient error of each of :data:`VARIANTS`, the model on ``backend``.

    ``backend`` should be float64. Inputs and noise are drawn on the host and copied to the
    device, so every backend checks the same function at the same point.
    """
    errors = {}
    for label, kwargs in VARIANTS:
        model = VAE(input_dim=7, backend=backend, seed=seed, **kwargs)
        rng = numpy.random.default_rng(seed)
        x = backend.asarray(rng.random((4, 7)))
        eps = backend.asarray(rng.standard_normal((4, model.latent_dim)))
        y = backend.xp.asarray(rng.integers(0, model.n_classes, 4)) if model.n_classes else None
        model.loss(x, y, eps=eps, validate=False)

        def loss(model: VAE = model, x: Any = x, y: Any = y, eps: Any = eps) -> Any:
            return model.loss(x, y, eps=eps, grad=False, validate=False).loss

        per_array = check_gradients(
            loss, model.params, model.grads, max_entries=max_entries, seed=seed
        )
        errors[label] = max(per_array.values())
    return errors


def lockstep(
    backend: Backend, batches: Sequence[numpy.ndarray], noise: Sequence[numpy.ndarray], seed: int
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Initial flat parameters (in the standard layout, which is every backend's) and the
    per-step losses of Adam steps on given host batches."""
    model = FastVAE(784, hidden_dims=(400,), latent_dim=20, backend=backend, seed=seed)
    initial = model.flat.to_standard(backend.to_host(model.flat.data))
    optimizer = FastAdam([model.flat.data], [model.flat.grad])
    losses = []
    for x, eps in zip(batches, noise, strict=True):
        losses.append(model.loss(backend.asarray(x), eps=backend.asarray(eps), validate=False).loss)
        optimizer.step()
    return initial, backend.to_host(backend.xp.stack(losses))


def train_epoch_losses(config: TrainConfig, data: Dataset) -> tuple[dict[str, Any], numpy.ndarray]:
    """One epoch of :class:`Trainer`: its metrics and the loss of every step per example.

    The per-step losses are kept on the device and copied to the host once, at the end.
    """
    trainer = Trainer(config, data)
    losses: list[Any] = []
    loss = trainer.model.loss

    def recording_loss(*args: Any, **kwargs: Any) -> Any:
        parts = loss(*args, **kwargs)
        if kwargs.get("grad", True):
            losses.append(parts.loss)
        return parts

    trainer.model.loss = recording_loss  # type: ignore[method-assign]
    metrics = trainer.train_epoch()
    n = data.train_images.shape[0]
    sizes = numpy.diff(numpy.append(numpy.arange(0, n, config.batch_size), n))
    return metrics, trainer.backend.to_host(trainer.backend.xp.stack(losses)) / sizes


def step_seconds(backend: Backend, batch_size: int, steps: int, seed: int = 0) -> float:
    """Seconds per training step (forward, backward, Adam) of the 784-400-20 model."""
    model = FastVAE(784, hidden_dims=(400,), latent_dim=20, backend=backend, seed=seed)
    optimizer = FastAdam([model.flat.data], [model.flat.grad])
    rng = backend.rng(seed)
    x = (rng.random((batch_size, 784), dtype=model.dtype) < 0.3).astype(model.dtype)
    eps = rng.standard_normal((batch_size, 20), dtype=model.dtype)
    for _ in range(3):  # warm-up: CuPy compiles its kernels on first use
        model.loss(x, eps=eps, validate=False)
        optimizer.step()
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        model.loss(x, eps=eps, validate=False)
        optimizer.step()
    backend.synchronize()
    return (time.perf_counter() - start) / steps
