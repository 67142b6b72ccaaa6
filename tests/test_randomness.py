"""The trainer's randomness: every epoch's shuffle, dynamic binarization and reparameterization
noise come from generators seeded by ``(seed, stream, epoch)`` (:func:`derived_seed`).

Each property is a check (a plain function that asserts) run twice: on the real trainer, where it
passes, and with the bug it guards against planted (``Trainer._rng`` handing out one stream's
generator of epoch 1 in every epoch), where it must fail. A mutation audit found that two such
bugs, a binarization drawn from a fixed seed and the same shuffle every epoch, survived every
other test; a fixed binarization silently turns ``--binarize dynamic`` and the Burda preset into
a statically binarized data set.
"""

from typing import NamedTuple

import numpy as np
import pytest

from numpy_vae.experiments.burda import BURDA2016  # also registers the burda2016 presets
from numpy_vae.training.data import Dataset
from numpy_vae.training.trainer import BINARIZE, EPS, SHUFFLE, TrainConfig, Trainer, derived_seed

N, SEED = 50, 3
CONFIGS = {
    # 16 + 16 + 16 + 2 images per epoch, one z per image.
    "elbo": {"hidden_dims": (8,), "latent_dim": 2, "batch_size": 16, "binarize": "dynamic"},
    # The Burda et al. (2016) preset at toy widths: 20 + 20 + 10 images, K = 3 z per image.
    "burda2016": {**BURDA2016, "hidden_dims": (8, 8), "latent_dim": 2, "epochs": 2,
                  "objective": "iwae", "k": 3},
}  # fmt: skip


class Step(NamedTuple):
    """One training step as the model saw it: the batch's rows, its inputs and its noise."""

    index: np.ndarray
    x: np.ndarray
    eps: np.ndarray


def tiny_data(grey: int | None = None) -> Dataset:
    """Random grey levels 1..254 (every pixel of a dynamic binarization is a real coin flip), or
    every training image the same, all pixels ``grey``."""
    rng = np.random.default_rng(0)
    train = rng.integers(1, 255, (N, 784), dtype=np.uint8)
    if grey is not None:
        train[...] = grey
    test = rng.integers(0, 256, (10, 784), dtype=np.uint8)
    return Dataset(train_images=train, train_labels=None, test_images=test, test_labels=None)


def two_epochs(data: Dataset, config: str = "elbo") -> tuple[Trainer, list[list[Step]]]:
    """Train two epochs; return the trainer and, per epoch, its steps in order: the rows the
    trainer drew from ``train_set.batches`` and the ``x`` and ``eps`` that ``model.loss`` got."""
    trainer = Trainer(TrainConfig(seed=SEED, **CONFIGS[config]), data)
    batches, loss = trainer.train_set.batches, trainer.model.loss
    rows: list[np.ndarray] = []
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def recording_batches(order, batch_size, rng):
        for batch in batches(order, batch_size, rng):
            rows.append(np.array(batch.index))
            yield batch

    def recording_loss(x, y=None, *, eps, grad=True, **kwargs):
        if grad:  # a training step, not the test-set evaluation
            seen.append((x.copy(), eps.copy()))  # the batch's x is overwritten by the next
        return loss(x, y, eps=eps, grad=grad, **kwargs)

    trainer.train_set.batches, trainer.model.loss = recording_batches, recording_loss
    epochs = []
    for _ in range(2):
        rows.clear()
        seen.clear()
        trainer.train_epoch()
        assert len(rows) == len(seen) == trainer.steps_per_epoch
        epochs.append([Step(i, x, eps) for i, (x, eps) in zip(rows, seen, strict=True)])
    return trainer, epochs


def stream(stream: int, epoch: int) -> np.random.Generator:
    """The documented generator of one stream of one epoch (the NumPy backend's)."""
    return np.random.default_rng(derived_seed(SEED, stream, epoch))


def plant_fixed_stream(monkeypatch: pytest.MonkeyPatch, planted: int) -> None:
    """The audit's bug: every epoch gets epoch 1's generator of one stream (the others, and epoch
    1 itself, stay right)."""
    original = Trainer._rng

    def fixed(self, stream, epoch):
        return original(self, stream, 1 if stream == planted else epoch)

    monkeypatch.setattr(Trainer, "_rng", fixed)


def fails_when_planted(monkeypatch, planted, check, *args, config="elbo"):
    """``check`` passes on the real trainer and fails with ``planted``'s stream fixed."""
    check(*args, *two_epochs(*args, config))
    with monkeypatch.context() as patch:
        plant_fixed_stream(patch, planted)
        trained = two_epochs(*args, config)
    with pytest.raises(AssertionError):
        check(*args, *trained)


# ------------------------------------------------------------------ the checks
def check_binarization(data: Dataset, trainer: Trainer, epochs: list[list[Step]]) -> None:
    """Every image gets a different draw in epochs 1 and 2, and every batch is the Bernoulli draw
    of the BINARIZE stream of its epoch: ``u < k / 255`` with ``u`` uniform, in float32, drawn in
    batch order."""
    pixels = data.train_images
    drawn = []
    for epoch, steps in enumerate(epochs, 1):
        rng, by_image = stream(BINARIZE, epoch), {}
        for step in steps:
            assert set(np.unique(step.x)) <= {0.0, 1.0}
            p = pixels[step.index].astype(np.float32) / np.float32(255)
            expected = (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)
            np.testing.assert_array_equal(step.x, expected, err_msg=f"epoch {epoch}")
            by_image.update(zip(step.index.tolist(), step.x, strict=True))
        assert sorted(by_image) == list(range(N))
        drawn.append(by_image)
    same = [i for i in range(N) if np.array_equal(drawn[0][i], drawn[1][i])]
    assert not same, f"images {same} got the same binarization in epochs 1 and 2"


def check_identical_images_differ(data: Dataset, trainer: Trainer, epochs: list[list[Step]]):
    """With every training image the same, no order can hide a repeated draw: the inputs of
    epoch 2 are not those of epoch 1 (whatever the streams are)."""
    first, second = (np.concatenate([step.x for step in steps]) for steps in epochs)
    assert first.shape == second.shape == (N, 784)
    rows_equal = (first == second).all(axis=1)
    assert not rows_equal.any(), f"{rows_equal.sum()} inputs of epoch 2 repeat epoch 1's"


def check_shuffle(data: Dataset, trainer: Trainer, epochs: list[list[Step]]) -> None:
    """Each epoch visits every image once, in the permutation that the SHUFFLE stream of the epoch
    draws, and epochs 1 and 2 visit them in different orders."""
    orders = [np.concatenate([step.index for step in steps]) for steps in epochs]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(N))
    assert not np.array_equal(orders[0], orders[1]), "epochs 1 and 2 share one order"
    for epoch, order in enumerate(orders, 1):
        np.testing.assert_array_equal(order, stream(SHUFFLE, epoch).permutation(N))


def check_noise(data: Dataset, trainer: Trainer, epochs: list[list[Step]]) -> None:
    """Each step's ``eps`` is the next standard normal draw of the EPS stream of its epoch."""
    for epoch, steps in enumerate(epochs, 1):
        rng = stream(EPS, epoch)
        for step in steps:
            shape = trainer.model.noise_shape(len(step.index))
            expected = rng.standard_normal(shape, dtype=np.float32)
            np.testing.assert_array_equal(step.eps, expected, err_msg=f"epoch {epoch}")
    assert not np.array_equal(epochs[0][0].eps, epochs[1][0].eps)


# ------------------------------------------------------------------ the tests
@pytest.mark.parametrize("config", CONFIGS)
def test_dynamic_binarization_is_drawn_afresh_each_epoch_from_its_stream(monkeypatch, config):
    fails_when_planted(monkeypatch, BINARIZE, check_binarization, tiny_data(), config=config)


def test_identical_images_are_binarized_differently_in_each_epoch(monkeypatch):
    """The same check without the documented streams: a binarization drawn from a fixed seed
    repeats its draws position by position, which identical images make visible."""
    fails_when_planted(monkeypatch, BINARIZE, check_identical_images_differ, tiny_data(grey=128))


@pytest.mark.parametrize("config", CONFIGS)
def test_each_epoch_has_its_own_shuffle_from_its_stream(monkeypatch, config):
    fails_when_planted(monkeypatch, SHUFFLE, check_shuffle, tiny_data(), config=config)


@pytest.mark.parametrize("config", CONFIGS)
def test_each_step_draws_its_noise_from_the_epoch_stream_in_order(monkeypatch, config):
    fails_when_planted(monkeypatch, EPS, check_noise, tiny_data(), config=config)


def test_the_streams_are_independent_of_each_other():
    """The streams of one epoch, and one stream in two epochs, are seeded differently."""
    seeds = {derived_seed(SEED, s, e) for s in (SHUFFLE, BINARIZE, EPS) for e in (1, 2)}
    assert len(seeds) == 6
