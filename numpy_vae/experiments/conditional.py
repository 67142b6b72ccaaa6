"""How much of the label a conditional VAE's z carries, and what its figures show.

A study's measurements of :mod:`numpy_vae.training.conditional`'s figures
(docs/09-beta-and-conditional.md): classifiers of the digit fitted on posterior means
(:func:`label_in_z`), the distance from a code to the codes the decoder saw with its label
(:func:`nearest_code_distance`), and an image classifier's reading of class samples and style
analogies (:func:`samples_read_as_label`, :func:`analogies_read_as`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from numpy_vae.training.conditional import style_analogies


def nearest_class_mean_accuracy(
    mu_train: numpy.ndarray, y_train: numpy.ndarray, mu_test: numpy.ndarray, y_test: numpy.ndarray
) -> float:
    """The fraction of test rows whose nearest class mean (Euclidean, class means of the train
    rows) has their label; host arrays, ``mu`` (N, L)."""
    classes = numpy.unique(y_train)
    means = numpy.stack([mu_train[y_train == k].mean(axis=0) for k in classes])
    distance = ((mu_test[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    return float((classes[distance.argmin(axis=1)] == y_test).mean())


def softmax_regression(
    x: numpy.ndarray, y: numpy.ndarray, steps: int = 300, lr: float = 0.5, l2: float = 1e-4
) -> Callable[[numpy.ndarray], numpy.ndarray]:
    """A linear classifier of host rows ``x`` (N, F) into labels 0..9: softmax regression on
    standardized features, full-batch gradient descent. Returns ``predict(rows) -> labels``."""
    x = numpy.asarray(x, dtype=numpy.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / std
    w, b = numpy.zeros((x.shape[1], 10)), numpy.zeros(10)
    target = numpy.eye(10)[numpy.asarray(y)]
    for _ in range(steps):
        logits = xs @ w + b
        p = numpy.exp(logits - logits.max(axis=1, keepdims=True))
        g = (p / p.sum(axis=1, keepdims=True) - target) / len(x)  # d(mean cross-entropy)/d logits
        w -= lr * (xs.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    return lambda rows: ((numpy.asarray(rows, dtype=numpy.float64) - mean) / std @ w + b).argmax(1)


def label_in_z(
    model: Any, train: tuple[Any, Any], test: tuple[Any, Any], batch: int = 1000, seed: int = 1
) -> dict[str, float]:
    """What the posterior means of ``(x, y)`` pairs (each on the model's backend; a conditional
    model encodes each image with its own label) say about the label and about the prior.

    Returns the accuracy on ``test`` of a nearest-class-mean classifier and of softmax
    regression fitted on ``train``; the share of the means' variance that lies between the class
    means; the posterior variance averaged over the training images and the dimensions; and
    the median distance from a code to the nearest training mean of its label, for the test
    images' means (``nearest_code_test``) and for 2,000 draws z = T eps of the ten labels
    (``nearest_code_T1``, ``nearest_code_T0.5``, ``nearest_code_T0``).
    """
    mu, labels, variance = [], [], []
    for x, y in (train, test):
        given = y if model.n_classes else None
        parts = []
        for s in range(0, x.shape[0], batch):
            stats = model.encode(x[s : s + batch], None if given is None else given[s : s + batch])
            parts.append(model.backend.to_host(stats[0]))
            variance.append(float(numpy.exp(model.backend.to_host(stats[1])).mean()))
        mu.append(numpy.concatenate(parts).astype(numpy.float64))
        labels.append(numpy.asarray(model.backend.to_host(y)))
    between = numpy.stack([mu[0][labels[0] == k].mean(axis=0) for k in range(10)]).var(axis=0)
    n_train = -(-train[0].shape[0] // batch)
    result = {
        "nearest_class_mean": nearest_class_mean_accuracy(mu[0], labels[0], mu[1], labels[1]),
        "softmax_regression": float(
            (softmax_regression(mu[0], labels[0])(mu[1]) == labels[1]).mean()
        ),
        "between_class_share": float(between.sum() / mu[0].var(axis=0).sum()),
        "posterior_variance": float(numpy.mean(variance[:n_train])),
        "nearest_code_test": nearest_code_distance(mu[0], labels[0], mu[1], labels[1]),
    }
    eps = numpy.random.default_rng(seed).standard_normal((2000, mu[0].shape[1]))
    drawn = numpy.repeat(numpy.arange(10), 200)
    for t in (1.0, 0.5, 0.0):
        key = f"nearest_code_T{t:g}"
        result[key] = nearest_code_distance(mu[0], labels[0], t * eps, drawn)
    return result


def nearest_code_distance(
    codes: numpy.ndarray, code_labels: numpy.ndarray, z: numpy.ndarray, labels: numpy.ndarray
) -> float:
    """The median, over the rows of ``z`` (host, (N, L)), of the Euclidean distance to the
    nearest row of ``codes`` with the same label."""
    distance = numpy.empty(len(z))
    for k in numpy.unique(labels):
        ref, rows = codes[code_labels == k], labels == k
        q = z[rows]
        d2 = (q**2).sum(axis=1)[:, None] + (ref**2).sum(axis=1)[None, :] - 2 * q @ ref.T
        distance[rows] = numpy.sqrt(numpy.maximum(d2.min(axis=1), 0.0))
    return float(numpy.median(distance))


def samples_read_as_label(
    model: Any,
    classify: Callable[[numpy.ndarray], numpy.ndarray],
    temperatures: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0),
    per_class: int = 500,
    seed: int = 1,
) -> dict[float, float]:
    """For each temperature T, the fraction of decoded class samples, z = T * eps with the same
    eps at every T, that ``classify`` (an image classifier) reads as the label they were
    decoded with."""
    eps = numpy.random.default_rng(seed).standard_normal((10 * per_class, model.latent_dim))
    labels = numpy.repeat(numpy.arange(10), per_class)
    y = model.xp.asarray(labels)
    read = {}
    for t in temperatures:
        images = model.backend.to_host(model.decode(model.backend.asarray(t * eps), y))
        read[t] = float((classify(images) == labels).mean())
    return read


def analogies_read_as(
    model: Any, classify: Callable[[numpy.ndarray], numpy.ndarray], x: Any, y: Any
) -> dict[str, float]:
    """Style analogies of the images ``x`` (labels ``y``) decoded with every other label: the
    fraction that ``classify`` reads as the label decoded with, and as the image's own label."""
    own = numpy.asarray(model.backend.to_host(y))
    decoded = model.backend.to_host(style_analogies(model, x, y))
    n, c = decoded.shape[:2]
    read = classify(decoded.reshape(n * c, -1)).reshape(n, c)
    other = numpy.arange(c)[None, :] != own[:, None]
    return {
        "decoded_label": float((read == numpy.arange(c)[None, :])[other].mean()),
        "own_label": float((read == own[:, None])[other].mean()),
    }
