"""Speed of the Burda et al. (2016) model: the training step at batch 20 for K = 1, 5, 50
against PyTorch, and the k = 5000 test evaluation against its matrix-multiply floor.

Every measurement runs in a fresh interpreter with the BLAS thread count set before NumPy or
PyTorch loads (one thread by default: at batch 20 two single-threaded runs side by side use two
cores better than one two-threaded run). NumPy and PyTorch alternate round by round, so that a
change in the machine's load falls on both; the figures are medians over rounds.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from numpy_vae.config import ModelConfig

BATCH = 20
HIDDEN = (200, 200)
LATENT = 50
PIXELS = 784
ADAM = {"lr": 1e-3, "eps": 1e-4}  # the same Adam settings on both sides


def burda_config(k: int) -> ModelConfig:
    """The Burda et al. (2016) model, 784-200-200-50 with tanh units, trained on the IWAE bound
    with ``k`` samples (K = 1 is the VAE with a sampled KL)."""
    return ModelConfig(
        hidden_dims=HIDDEN, latent_dim=LATENT, activation="tanh", objective="iwae", k=k
    )


def _images(n: int, seed: int) -> np.ndarray:
    """Binary stand-ins for MNIST digits (speed does not depend on the pixels' values)."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, PIXELS)) < 0.13).astype(np.float32)


def numpy_steps(ks: list[int], steps: int, threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Seconds per training step (FastVAE + FastAdam, float32) of the IWAE objective at each K
    (K = 1 is the VAE with a sampled KL), with Adam's update in ``threads`` threads (as
    PyTorch's, which follows ``torch.set_num_threads``)."""
    from numpy_vae.fast import FastAdam, FastVAE

    x_all = _images(BATCH * 50, seed)
    rng = np.random.default_rng(seed)
    out = {}
    for k in ks:
        model = FastVAE(PIXELS, config=burda_config(k), seed=seed)
        opt = FastAdam([model.flat.data], [model.flat.grad], **ADAM, threads=threads)
        eps = rng.standard_normal((50, *model.noise_shape(BATCH)), dtype=np.float32)

        def step(i: int, model: Any = model, opt: Any = opt, eps: Any = eps) -> None:
            j = i % 50
            model.loss(x_all[j * BATCH : (j + 1) * BATCH], eps=eps[j], validate=False)
            opt.step()

        out[str(k)] = _seconds_per_step(step, steps)
    return out


def _seconds_per_step(step: Any, steps: int) -> float:
    """Mean seconds of ``step(i)`` over ``steps`` calls, after ten untimed ones (buffers
    allocated, caches filled)."""
    for i in range(10):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return (time.perf_counter() - start) / steps


def torch_model(k: int, dtype: str = "float32") -> tuple[Any, Any]:
    """The PyTorch side of the comparison: the twin of :mod:`numpy_vae.checks.torch_twin` for
    :func:`burda_config` and ``torch.optim.Adam`` over it. Weights are PyTorch's own
    initialization (seed with ``torch.manual_seed`` first)."""
    import torch

    from numpy_vae.checks.torch_twin import TorchVAE, twin_adam

    twin = TorchVAE(PIXELS, burda_config(k), dtype=getattr(torch, dtype))
    return twin, twin_adam(twin, **ADAM)


def torch_steps(
    ks: list[int], steps: int, seed: int = 0, flush_denormal: bool = False
) -> dict[str, float]:
    """Seconds per step of the same training step in PyTorch: :func:`torch_model`'s twin, the
    step of :func:`numpy_vae.checks.torch_twin.train_step` (autograd of
    ``-sum_b logsumexp_k log w_bk`` by ``torch.logsumexp``, ``binary_cross_entropy_with_logits``,
    ``torch.optim.Adam``), float32, noise drawn beforehand as for numpy-vae.

    ``flush_denormal``: with ``torch.set_flush_denormal(True)`` (the CPU treats subnormal
    numbers as 0). The plain step's gradient rows of negligible weight become subnormal, as
    numpy-vae's did before :func:`numpy_vae.fast.objectives.flush_negligible_weights`, and x86
    arithmetic on them is many times slower; this run shows what PyTorch takes without them.
    The setting is the calling thread's (the CPU's MXCSR register), so it covers a one-thread
    run; PyTorch's worker threads, with more, may not have it. On a CPU without the feature
    nothing is timed and the result is ``{"unsupported": True}``, so that no unflushed run is
    reported as flushed.
    """
    import torch

    from numpy_vae.checks.torch_twin import train_step

    if not torch.set_flush_denormal(flush_denormal) and flush_denormal:
        return {"unsupported": True}
    torch.manual_seed(seed)
    x_all = torch.from_numpy(_images(BATCH * 50, seed))
    out = {}
    for k in ks:
        twin, opt = torch_model(k)
        eps_all = torch.randn(50, *twin.noise_shape(BATCH))

        def step(i: int, twin: Any = twin, opt: Any = opt, eps_all: Any = eps_all) -> None:
            j = i % 50
            train_step(twin, opt, x_all[j * BATCH : (j + 1) * BATCH], eps=eps_all[j])

        out[str(k)] = _seconds_per_step(step, steps)
    return out


def evaluation(images: int, k: int, seed: int = 0) -> dict[str, float]:
    """Seconds of the IW estimate (``iw_log_likelihood``, the fast model) on ``images`` test
    images with ``k`` samples each, and of its matrix-multiply floor: the decoder's three
    products for the same ``images * k`` samples, in the estimate's own chunks of rows."""
    from numpy_vae.fast import FastVAE
    from numpy_vae.training.evaluate import iw_log_likelihood

    model = FastVAE(PIXELS, hidden_dims=HIDDEN, latent_dim=LATENT, activation="tanh", seed=seed)
    x = _images(images, seed + 1)
    rng = np.random.default_rng(seed)
    iw_log_likelihood(model, x[:2], k=k, rng=rng)  # warm-up
    start = time.perf_counter()
    iw_log_likelihood(model, x, k=k, rng=rng)
    seconds = time.perf_counter() - start

    rows = 8192  # iw_log_likelihood's max_rows
    layers = [layer for layer in model.decoder.layers if hasattr(layer, "weight")]
    h = [rng.standard_normal((rows, layer.in_features), dtype=np.float32) for layer in layers]
    weights = [layer.weight for layer in layers]
    for a, w in zip(h, weights, strict=True):  # warm-up
        a @ w.T
    passes = max(1, math.ceil(images * k / rows))
    start = time.perf_counter()
    for _ in range(passes):
        for a, w in zip(h, weights, strict=True):
            a @ w.T
    floor = (time.perf_counter() - start) * images * k / (passes * rows)
    return {"images": images, "k": k, "seconds": seconds, "gemm_floor_seconds": floor}


def _in_subprocess(call: str, args: dict[str, Any], threads: int, timeout: float = 3600) -> Any:
    """``call(**args)`` of this module in a fresh interpreter with ``threads`` BLAS threads
    (PyTorch is loaded only for its own run, and told the thread count there)."""
    from numpy_vae.experiments.benchmark import _subprocess

    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    prelude = f"import torch; torch.set_num_threads({threads})\n" if call == "torch_steps" else ""
    return _subprocess(
        call,
        args,
        timeout,
        module=__name__,
        env=dict.fromkeys(names, str(threads)),
        prelude=prelude,
    )


def run(
    ks: list[int],
    rounds: int = 3,
    steps: int = 200,
    threads: int = 1,
    torch: bool = True,
    eval_images: int = 20,
    eval_k: int = 5000,
    log: Any = None,
) -> dict[str, Any]:
    """The whole report: step times per K (both libraries, alternating), then the evaluation."""
    log = log or (lambda s: None)
    numpy_runs, torch_runs, flush_runs = [], [], []
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}: numpy-vae")
        args = {"ks": ks, "steps": steps}
        numpy_runs.append(_in_subprocess("numpy_steps", {**args, "threads": threads}, threads))
        if torch:
            log(f"round {r + 1}/{rounds}: PyTorch")
            torch_runs.append(_in_subprocess("torch_steps", args, threads))
            log(f"round {r + 1}/{rounds}: PyTorch, subnormals flushed")
            flush_args = {**args, "flush_denormal": True}
            flushed = _in_subprocess("torch_steps", flush_args, threads)
            if not flushed.get("unsupported"):
                flush_runs.append(flushed)
    rows = []
    for k in ks:
        ours = float(np.median([run[str(k)] for run in numpy_runs]))
        row = {"k": k, "numpy_ms": 1e3 * ours}
        for name, runs in (("torch", torch_runs), ("torch_flush", flush_runs)):
            theirs = float(np.median([run[str(k)] for run in runs])) if runs else None
            row[f"{name}_ms"] = None if theirs is None else 1e3 * theirs
            row[f"{name}_ratio"] = None if theirs is None else ours / theirs
            row[f"{name}_rounds_ms"] = [1e3 * run[str(k)] for run in runs]
        row["numpy_rounds_ms"] = [1e3 * run[str(k)] for run in numpy_runs]
        row["ratio"] = row.pop("torch_ratio")
        rows.append(row)
    report: dict[str, Any] = {"batch": BATCH, "threads": threads, "steps": rows}
    if eval_images:
        log(f"evaluation: {eval_images} images, k = {eval_k}")
        e = _in_subprocess("evaluation", {"images": eval_images, "k": eval_k}, threads)
        scale = 10000 / eval_images
        e["projected_test_set_seconds"] = e["seconds"] * scale
        e["projected_floor_seconds"] = e["gemm_floor_seconds"] * scale
        e["ratio_to_floor"] = e["seconds"] / e["gemm_floor_seconds"]
        report["evaluation"] = e
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Burda model 784-200-200-50 (tanh), IWAE step at batch {report['batch']}, "
        f"{report['threads']} thread(s), median over rounds",
        f"{'K':>4} {'numpy-vae ms':>13} {'PyTorch ms':>11} {'ratio':>6} "
        f"{'PyTorch, subnormals flushed':>28} {'ratio':>6}",
    ]

    def figure(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in report["steps"]:
        lines.append(
            f"{r['k']:>4} {r['numpy_ms']:>13.2f} {figure(r['torch_ms'], 2):>11} "
            f"{figure(r['ratio'], 2):>6} {figure(r.get('torch_flush_ms'), 2):>28} "
            f"{figure(r.get('torch_flush_ratio'), 2):>6}"
        )
    e = report.get("evaluation")
    if e:
        lines.append(
            f"IW evaluation, k = {e['k']}: {e['seconds']:.2f} s for {e['images']} images "
            f"(GEMM floor {e['gemm_floor_seconds']:.2f} s, ratio {e['ratio_to_floor']:.2f}); "
            f"the 10,000 test images: {e['projected_test_set_seconds'] / 60:.1f} min "
            f"(floor {e['projected_floor_seconds'] / 60:.1f} min)"
        )
    return "\n".join(lines)
