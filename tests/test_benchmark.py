"""The benchmark's own logic: the matrix products it times as the floor, its data, its report.

No timing is asserted anywhere: these tests only check that the benchmark measures the right
thing and reports it completely.
"""

import json
import math
import time

import numpy as np
import pytest

from numpy_vae import VAE
from numpy_vae.experiments.benchmark import (
    PHASES,
    GemmFloor,
    ModelSpec,
    NumpyTraining,
    epoch_flops,
    format_report,
    format_sweep,
    gemm_shapes,
    run,
    run_memory,
    synthetic_images,
)


def test_gemm_floor_has_exactly_the_products_of_a_training_step():
    model = VAE()  # 784-400-20
    assert gemm_shapes(model, 128) == [
        ("forward", 128, 400, 784),  # encoder.0
        ("forward", 128, 40, 400),  # head: mu and logvar in one product
        ("forward", 128, 400, 20),  # decoder.0
        ("forward", 128, 784, 400),  # decoder.2
        ("d_weight", 784, 400, 128),
        ("d_input", 128, 400, 784),
        ("d_weight", 400, 20, 128),
        ("d_input", 128, 20, 400),
        ("d_weight", 40, 400, 128),
        ("d_input", 128, 400, 40),
        ("d_weight", 400, 784, 128),  # no d_input: the data need no gradient
    ]
    # 468 full batches and one of 60000 - 468 * 128 = 96, each 2 M N K per product.
    per_example = 2 * (3 * 400 * 784 + 3 * 40 * 400 + 3 * 400 * 20 + 2 * 784 * 400)
    assert epoch_flops(model, 60_000, 128) == 60_000 * per_example


def test_gemm_floor_runs_every_batch_including_the_last_partial_one():
    model = VAE(hidden_dims=(8,), latent_dim=2)
    floor = GemmFloor(model, n=300, batch_size=128)
    calls = []
    original = np.matmul

    def counting(a, b, out):
        # The batch is the rows of a forward or input-gradient product and the contracted
        # dimension of a weight-gradient product (no width of this model is 128 or 44).
        calls.append(a.shape[0] if a.shape[0] in (128, 44) else a.shape[1])
        return original(a, b, out=out)

    try:
        np.matmul = counting
        floor.epoch()
    finally:
        np.matmul = original
    per_step = len(gemm_shapes(model, 1))
    assert len(calls) == 3 * per_step  # batches of 128, 128 and 44
    assert calls.count(44) == per_step


def test_synthetic_images_look_like_mnist():
    images = synthetic_images(2000, seed=1)
    assert images.dtype == np.uint8 and images.shape == (2000, 784)
    lit = (images > 0).mean()
    assert 0.1 < lit < 0.35  # MNIST: 19% of pixels are lit
    assert (images == 255).mean() > 0.01  # strokes saturate
    np.testing.assert_array_equal(images, synthetic_images(2000, seed=1))


def test_instrumented_epoch_trains_like_the_plain_one():
    images = synthetic_images(300)
    spec = ModelSpec(batch_size=64, hidden_dims=(8,), latent_dim=2)
    plain, instrumented = NumpyTraining(spec, images), NumpyTraining(spec, images)
    plain.epoch()
    before = time.perf_counter()
    phases = instrumented.instrumented_epoch()
    elapsed = time.perf_counter() - before
    # Same shuffles, noise and steps: the same parameters afterwards.
    np.testing.assert_array_equal(plain.model.flat.data, instrumented.model.flat.data)
    assert instrumented.trainer.epoch == plain.trainer.epoch == 1
    assert instrumented.trainer.step == plain.trainer.step == 5
    # Every phase, the loop's bookkeeping too, did some work (no speed is asserted), and the
    # epoch's total lies within the call that measured it.
    assert set(phases) == {*PHASES, "loop", "total"}
    for name in (*PHASES, "loop"):
        assert math.isfinite(phases[name]) and 0 < phases[name] < phases["total"], name
    assert phases["total"] <= elapsed


class ChargingClock:
    """A clock that stands still except when a charged call runs: then it advances by that
    call's charge, so each phase of an instrumented epoch has a known duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def charge(self, owner, name, seconds, monkeypatch):
        original = getattr(owner, name)

        def charged(*args, **kwargs):
            self.now += seconds
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, charged)


def test_each_phase_is_charged_with_the_time_of_its_own_work_in_every_step(monkeypatch):
    """With a clock that moves only while the batch's inputs are made (1000 s), the forward pass
    (1 s), the backward pass (10 s) and Adam's step (100 s), each phase holds exactly its own
    charge times the 5 steps: no phase takes another's work, none counts one step only, the loop
    is left nothing and the total is the sum."""
    training = NumpyTraining(ModelSpec(batch_size=64, hidden_dims=(8,), latent_dim=2),
                             synthetic_images(300))  # fmt: skip
    clock = ChargingClock()
    objective = training.model.objective
    clock.charge(training.trainer, "batch_inputs", 1000.0, monkeypatch)
    clock.charge(objective, "forward", 1.0, monkeypatch)
    clock.charge(objective, "backward", 10.0, monkeypatch)
    clock.charge(training.trainer.optimizer, "step", 100.0, monkeypatch)
    monkeypatch.setattr(time, "perf_counter", clock)
    phases = training.instrumented_epoch()
    assert training.trainer.step == 5
    assert phases == {"data": 5000.0, "forward": 5.0, "backward": 50.0, "optimizer": 500.0,
                      "loop": 0.0, "total": 5555.0}  # fmt: skip


def test_report_is_complete_and_serialisable(tmp_path):
    specs = [ModelSpec(batch_size=64, hidden_dims=(8,), latent_dim=2)]
    report = run(specs, n=300, repeats=2, torch=False, memory_epochs=0, log=lambda s: None)
    json.loads(json.dumps(report))
    (result,) = report["results"]
    assert len(result["numpy_epochs_s"]) == len(result["gemm_floor_epochs_s"]) == 2
    assert result["numpy_over_floor"] > 0 and result["torch_epoch_s"] is None
    assert set(result["phases_s"]) == {"data", "forward", "backward", "optimizer", "loop", "total"}
    text = format_report(report)
    assert "784-8-2 batch 64" in text and "optimizer" in text
    assert report["kernels"]["numba"] and 0 <= report["kernels"]["ready_s"] < 120
    assert "kernels: numba" in text
    assert format_sweep(report).startswith("| batch | hidden |")


def test_rounds_alternate_and_every_round_counts():
    """Two rounds: each library's epochs of both rounds make its median, each round's medians
    are reported, and the instrumented pass runs once."""
    specs = [ModelSpec(batch_size=64, hidden_dims=(8,), latent_dim=2)]
    order = []
    report = run(specs, n=300, repeats=2, torch=False, memory_epochs=0, log=order.append,
                 rounds=2)  # fmt: skip
    (result,) = report["results"]
    assert len(result["numpy_epochs_s"]) == len(result["gemm_floor_epochs_s"]) == 4
    assert [sorted(r) for r in result["rounds"]] == [["gemm_floor", "numpy"]] * 2
    assert result["rounds"][1]["numpy"] == pytest.approx(
        float(np.median(result["numpy_epochs_s"][2:]))
    )
    assert order == [
        "round 1/2, numpy: 784-8-2 batch 64 ...",
        "round 2/2, numpy: 784-8-2 batch 64 ...",
    ]
    text = format_report(report)
    assert "2 alternating round(s)" in text and "round 2: numpy" in text


def test_peak_memory_is_measured_in_a_fresh_process():
    spec = ModelSpec(batch_size=64, hidden_dims=(8,), latent_dim=2)
    out = run_memory(spec, mnist=False, n=300, epochs=1)
    assert 10 < out["rss_after_imports_mib"] <= out["peak_rss_mib"] < 1000
    assert len(out["seconds"]) == 1


# Float32 agreement of the timed PyTorch step with numpy-vae (relative: the loss's, and each
# gradient array's max|a - b| / max(|a|, |b|)). Only the order of rounding differs; measured over
# five seeds: loss <= 2.2e-7 for both benchmarks, gradients <= 6e-7 for the ELBO and <= 5.4e-5
# for IWAE, whose softmax weights inherit log w's rounding (|log w| ~ 550, times float32's 6e-8:
# 3e-5). A wrong model, a wrong loss or a missing term gives errors of order one.
TIMED_LOSS_BOUND = 1e-5
TIMED_GRAD_BOUND = {"epoch": 1e-5, "iwae": 1e-3}


@pytest.mark.parametrize("peer", ["epoch", "iwae"])
def test_the_timed_pytorch_step_is_the_numpy_model(peer):
    """Both benchmarks time PyTorch through the twin's ``train_step``, built as they build it
    (the epoch's 784-16-3 ELBO model, the ``--iwae`` Burda model at K = 3). From numpy-vae's
    weights, on a tiny batch with the same noise, that step's loss and gradients are
    numpy-vae's to float32 rounding: the benchmark cannot time a different model."""
    torch = pytest.importorskip("torch")
    from numpy_vae import get_backend
    from numpy_vae.checks.torch_twin import load_params, train_step, twin_grads
    from numpy_vae.experiments import iwae_speed
    from numpy_vae.experiments.benchmark import TorchTraining
    from numpy_vae.gradcheck import relative_error

    rng = np.random.default_rng(0)
    x = (rng.random((8, 784)) < 0.2).astype(np.float32)
    if peer == "epoch":
        spec = ModelSpec(batch_size=8, hidden_dims=(16,), latent_dim=3)
        training = TorchTraining(spec, torch.from_numpy(x))
        twin, optimizer, config = training.twin, training.optimizer, spec.model_config()
    else:
        twin, optimizer = iwae_speed.torch_model(3)
        config = iwae_speed.burda_config(3)
    model = VAE(784, config=config, backend=get_backend("numpy", "float32"), seed=0)
    load_params(twin, model.params)
    eps = rng.standard_normal(model.noise_shape(len(x))).astype(np.float32)

    ours = float(model.loss(x, eps=eps).loss)
    theirs = train_step(twin, optimizer, torch.from_numpy(x), eps=torch.from_numpy(eps))
    assert abs(theirs.loss.item() - ours) <= TIMED_LOSS_BOUND * abs(ours)
    their_grads = twin_grads(twin)
    for name, grad in model.grads.items():
        assert relative_error(grad, their_grads[name]) <= TIMED_GRAD_BOUND[peer], name


def test_the_jax_peer_trains_and_is_reported():
    """Where JAX is installed (it is not a dependency): the jitted step runs, and the report
    gives its epoch time and ratio."""
    pytest.importorskip("jax")
    from numpy_vae.experiments.benchmark import ModelSpec, format_report, run

    spec = ModelSpec(batch_size=64, hidden_dims=(32,), latent_dim=4)
    report = run([spec], n=640, repeats=1, torch=False, memory_epochs=0, phases=False,
                 log=lambda s: None, jax=True)  # fmt: skip
    result = report["results"][0]
    assert result["jax_epoch_s"] > 0 and result["numpy_over_jax"] > 0
    assert "numpy-vae / jax" in format_report(report)


def test_the_iwae_benchmark_reports_each_k_and_the_evaluation_floor():
    """A tiny run of ``benchmark.py --iwae``: every K timed on both sides, ratios consistent,
    the evaluation beside its floor (figures, not asserted speeds)."""
    from numpy_vae.experiments import iwae_speed
    from numpy_vae.experiments.benchmark import torch_available

    torch = torch_available()
    report = iwae_speed.run([1, 3], rounds=1, steps=2, torch=torch, eval_images=1, eval_k=30)
    assert [r["k"] for r in report["steps"]] == [1, 3]
    for r in report["steps"]:
        assert r["numpy_ms"] > 0
        if torch:
            assert r["ratio"] == pytest.approx(r["numpy_ms"] / r["torch_ms"])
            assert r["torch_flush_ratio"] == pytest.approx(r["numpy_ms"] / r["torch_flush_ms"])
    e = report["evaluation"]
    assert e["seconds"] > 0 and e["gemm_floor_seconds"] > 0
    assert e["ratio_to_floor"] == pytest.approx(e["seconds"] / e["gemm_floor_seconds"])
    text = iwae_speed.format_report(report)
    assert "IWAE step at batch 20" in text and "GEMM floor" in text
