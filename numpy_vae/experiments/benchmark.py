"""How fast is a training epoch, against PyTorch and against the matrix-multiply floor?

For one model configuration, :func:`benchmark_model` measures in the same run:

``numpy``
    A full training epoch (shuffle, per-batch ``uint8 -> float32`` conversion, forward,
    backward, Adam), un-instrumented: the only clock reads are at the start and end of the epoch.
``phases``
    A separate epoch with a clock read around each phase of every step (data, forward, backward,
    optimizer), so that the instrumentation cannot distort the epoch time above.
``gemm_floor``
    Exactly the matrix products that one epoch computes, with the same shapes, layouts and BLAS
    calls, and nothing else: forward ``x W^T`` of every Linear layer, backward ``dW = dy^T x`` of
    every layer and ``dx = dy W`` of every layer but the first (whose input gradient is never
    needed). No implementation of this model can do its matrix products faster with this BLAS.
``torch``
    The same model in PyTorch: the float32 twin of :mod:`numpy_vae.checks.torch_twin`
    (``nn.Linear``, ``F.binary_cross_entropy_with_logits`` summed, closed-form KL,
    ``torch.optim.Adam``; the model the parity tests compare with numpy-vae), with the same
    images already in memory as a float32 tensor, batched by indexing with a fresh permutation
    each epoch, and ``torch.set_num_threads`` equal to NumPy's BLAS thread count. It runs in a
    subprocess, so that PyTorch's thread pool and memory never touch the NumPy measurements.
``jax`` (``--jax``, where JAX is installed)
    The same model, loss and Adam as one jitted step (:mod:`numpy_vae.experiments.jax_twin`),
    also in a subprocess.
``peak_rss``
    The peak resident memory (``ru_maxrss``) of a fresh subprocess that trains the model for
    ten epochs, so that nothing else this benchmark allocates is counted.

Each timing is repeated and the median reported; every measurement is preceded by one untimed
warm-up epoch. The data are synthetic MNIST-like ``uint8`` images by default (no download) or real
MNIST (:func:`numpy_vae.training.data.load_mnist`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpy_vae.config import ModelConfig
from numpy_vae.fast.parallel import default_threads
from numpy_vae.layers import Linear, Sequential
from numpy_vae.model import VAE

IMAGE_SIZE = 784
N_TRAIN = 60_000
TEST_IMAGES = 1000
PHASES = ("data", "forward", "backward", "optimizer")


@dataclass(frozen=True)
class ModelSpec:
    """The benchmarked configuration; the defaults are the classic PyTorch MNIST example."""

    batch_size: int = 128
    hidden_dims: tuple[int, ...] = (400,)
    latent_dim: int = 20
    lr: float = 1e-3

    @property
    def name(self) -> str:
        widths = "-".join(str(w) for w in (IMAGE_SIZE, *self.hidden_dims, self.latent_dim))
        return f"{widths} batch {self.batch_size}"

    def model_config(self) -> ModelConfig:
        """The model's hyperparameters: the default model at these widths."""
        return ModelConfig(hidden_dims=self.hidden_dims, latent_dim=self.latent_dim)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def synthetic_images(n: int = N_TRAIN, seed: int = 0) -> np.ndarray:
    """MNIST-like ``uint8`` images (n, 784): dark background, a few bright smooth strokes.

    Each image is a random positive mix of 32 Gaussian blobs placed in the central 20x20 pixels,
    passed through a ramp so that about a fifth of the pixels are lit and many of those saturate
    at 255 (MNIST: 19% lit, mean 33). Speed does not depend on the pixel values; realism only
    keeps the losses and the Adam trajectory typical. Generated in chunks, so the float
    temporaries stay small (the peak-memory figure must not count them).
    """
    rng = np.random.default_rng(seed)
    grid = np.arange(28, dtype=np.float32)
    centres = rng.uniform(4, 24, size=(32, 2)).astype(np.float32)
    widths = rng.uniform(1.2, 2.5, size=32).astype(np.float32)
    dy = (grid[None, :, None] - centres[:, 0, None, None]) ** 2
    dx = (grid[None, None, :] - centres[:, 1, None, None]) ** 2
    blobs = np.exp(-(dy + dx) / (2 * widths[:, None, None] ** 2)).reshape(32, IMAGE_SIZE)
    images = np.empty((n, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, 5000):
        stop = min(n, start + 5000)
        weights = rng.random((stop - start, 32), dtype=np.float32)
        weights *= rng.random((stop - start, 32), dtype=np.float32) < 0.25
        values = (weights @ blobs - 0.35) * 900.0
        np.clip(values, 0, 255, out=values)
        images[start:stop] = values
    return images


def load_images(
    mnist: bool, n: int, seed: int = 0, data_dir: str | None = None
) -> tuple[np.ndarray, str]:
    """The training images (n, 784) uint8 and a description of where they came from."""
    if mnist:
        from numpy_vae.training.data import load_mnist

        images = load_mnist(data_dir, verbose=False).train_images
        if n > len(images):
            raise ValueError(f"MNIST has {len(images)} training images, asked for {n}")
        return images[:n], "MNIST"
    return synthetic_images(n, seed), "synthetic MNIST-like"


# --------------------------------------------------------------------------------------------
# The NumPy training epoch
# --------------------------------------------------------------------------------------------


class NumpyTraining:
    """The real training loop (:meth:`numpy_vae.training.trainer.Trainer.train_epoch`) on given
    images.

    The epoch time is the trainer's own clock (its ``seconds`` metric), which covers the loop
    over batches and not the test-set evaluation that follows each epoch. The test set is a
    small fixed one (its evaluation is not timed; it only has to exist).
    """

    def __init__(self, spec: ModelSpec, images: np.ndarray, seed: int = 0) -> None:
        from numpy_vae.training.trainer import Dataset, TrainConfig, Trainer

        self.spec = spec
        config = TrainConfig(
            batch_size=spec.batch_size,
            lr=spec.lr,
            seed=seed,
            hidden_dims=spec.hidden_dims,
            latent_dim=spec.latent_dim,
        )
        test = images[:TEST_IMAGES]
        data = Dataset(
            train_images=images,
            train_labels=np.zeros(len(images), dtype=np.int64),
            test_images=test,
            test_labels=np.zeros(len(test), dtype=np.int64),
        )
        self.trainer = Trainer(config, data)
        self.model = self.trainer.model

    def epoch(self) -> float:
        """Train one epoch with :meth:`Trainer.train_epoch`; return its seconds."""
        return self.trainer.train_epoch()["seconds"]

    def instrumented_epoch(self) -> dict[str, float]:
        """The steps of :meth:`Trainer.train_epoch`, with the clock read between phases.

        ``data``: shuffle, gather and scale the batch, draw the reparameterization noise;
        ``forward`` and ``backward``: the two halves of ``model.loss``; ``optimizer``: Adam.
        Returns the seconds spent in each phase and in the whole epoch (``total``).
        """
        from numpy_vae.training.trainer import BINARIZE, EPS, SHUFFLE, kl_weight

        trainer, model, optimizer = self.trainer, self.model, self.trainer.optimizer
        cfg, xp = trainer.config, trainer.backend.xp
        clock = time.perf_counter
        phases = dict.fromkeys(PHASES, 0.0)
        start = t0 = clock()
        epoch = trainer.epoch + 1
        shuffle_rng, binarize_rng, eps_rng = (
            trainer._rng(stream, epoch) for stream in (SHUFFLE, BINARIZE, EPS)
        )
        n = trainer.train_images.shape[0]
        order = shuffle_rng.permutation(n)
        totals = xp.zeros(3, dtype=np.float64)
        for begin in range(0, n, cfg.batch_size):
            index = order[begin : begin + cfg.batch_size]
            x = trainer.batch_inputs(index, binarize_rng)
            eps = eps_rng.standard_normal((x.shape[0], cfg.latent_dim), dtype=model.dtype)
            weight = kl_weight(cfg, trainer.step, trainer.steps_per_epoch)
            t1 = clock()
            parts = model.objective.forward(model, x, eps=eps, kl_weight=weight, validate=False)
            t2 = clock()
            model.objective.backward(model)
            t3 = clock()
            optimizer.step()
            t4 = clock()
            trainer.step += 1
            totals += xp.stack([parts.loss, parts.recon, parts.kl])
            phases["data"] += t1 - t0
            phases["forward"] += t2 - t1
            phases["backward"] += t3 - t2
            phases["optimizer"] += t4 - t3
            t0 = clock()
        trainer.epoch = epoch
        phases["total"] = clock() - start
        # Everything else: the loop itself and the running totals (the KL weight is in "data").
        phases["loop"] = phases["total"] - sum(phases[k] for k in PHASES)
        return phases


# --------------------------------------------------------------------------------------------
# The matrix-multiply floor
# --------------------------------------------------------------------------------------------


def linear_layers(model: VAE) -> list[Linear]:
    """The model's Linear layers in forward order (encoder, head, decoder)."""
    layers: list[Linear] = []
    for part in (model.encoder, model.head, model.decoder):
        parts = part.layers if isinstance(part, Sequential) else [part]
        layers += [layer for layer in parts if isinstance(layer, Linear)]
    return layers


def gemm_shapes(model: VAE, batch: int) -> list[tuple[str, int, int, int]]:
    """Every matrix product of one training step as ``(what, M, N, K)``, in order.

    Forward ``y = x W^T`` is (B, out, in); backward ``dW = dy^T x`` is (out, in, B) and
    ``dx = dy W`` is (B, in, out) for every layer but the first, whose input is the data.
    """
    layers = linear_layers(model)
    shapes = [("forward", batch, lay.out_features, lay.in_features) for lay in layers]
    for i in range(len(layers) - 1, -1, -1):
        lay = layers[i]
        shapes.append(("d_weight", lay.out_features, lay.in_features, batch))
        if i > 0:
            shapes.append(("d_input", batch, lay.in_features, lay.out_features))
    return shapes


def epoch_flops(model: VAE, n: int, batch_size: int) -> int:
    """Floating-point operations (2 M N K per product) of one epoch's matrix products."""
    total = 0
    for begin in range(0, n, batch_size):
        b = min(batch_size, n - begin)
        total += sum(2 * m * nn * k for _, m, nn, k in gemm_shapes(model, b))
    return total


class GemmFloor:
    """Operands for exactly the products of one epoch, laid out as the model lays them out.

    Weights are (out, in), C-ordered or, where the model stores one transposed
    (:meth:`numpy_vae.fast.FastVAE.transposed_weights`), Fortran-ordered like it, with its
    gradient; activations and gradients are C-ordered (B, features), every product writes into
    a preallocated ``out=``: the same BLAS calls as the model's layers make.
    """

    def __init__(self, model: VAE, n: int, batch_size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        dtype = model.dtype
        self.n, self.batch_size = n, batch_size

        def rand(*shape: int) -> np.ndarray:
            return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)

        self.layers = []
        for lay in linear_layers(model):
            fan_in, fan_out = lay.in_features, lay.out_features
            order = "C" if lay.weight.flags.c_contiguous else "F"
            self.layers.append(
                {
                    "w": np.asarray(rand(fan_out, fan_in), order=order),
                    "x": rand(batch_size, fan_in),
                    "y": rand(batch_size, fan_out),
                    "dy": rand(batch_size, fan_out),
                    "dw": np.asarray(rand(fan_out, fan_in), order=order),
                    "dx": rand(batch_size, fan_in),
                }
            )

    def epoch(self) -> float:
        """Compute one epoch's products; return the seconds."""
        matmul, layers = np.matmul, self.layers
        start = time.perf_counter()
        for begin in range(0, self.n, self.batch_size):
            b = min(self.batch_size, self.n - begin)
            for lay in layers:
                matmul(lay["x"][:b], lay["w"].T, out=lay["y"][:b])
            for i in range(len(layers) - 1, -1, -1):
                lay = layers[i]
                matmul(lay["dy"][:b].T, lay["x"][:b], out=lay["dw"])
                if i > 0:
                    matmul(lay["dy"][:b], lay["w"], out=lay["dx"][:b])
        return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# PyTorch, in a subprocess
# --------------------------------------------------------------------------------------------


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class TorchTraining:
    """The same model, loss and optimizer in PyTorch; images already in memory as float32.

    The model is :class:`numpy_vae.checks.torch_twin.TorchVAE` in float32, with PyTorch's own
    initialization, and each step is :func:`numpy_vae.checks.torch_twin.train_step`: the twin
    the parity tests hold to numpy-vae, so the benchmark cannot time a different model. Batches
    are gathered by indexing the float32 tensor with a fresh permutation (the fastest way to
    batch in-memory data in PyTorch; a ``DataLoader`` over a ``TensorDataset`` fetches and
    collates example by example, which would only make PyTorch slower).
    """

    def __init__(self, spec: ModelSpec, data: Any, seed: int = 0) -> None:
        import torch

        from numpy_vae.checks.torch_twin import TorchVAE, twin_adam

        torch.manual_seed(seed)
        self.spec, self.data = spec, data
        self.twin = TorchVAE(IMAGE_SIZE, spec.model_config(), dtype=torch.float32)
        self.optimizer = twin_adam(self.twin, lr=spec.lr)

    def epoch(self) -> float:
        """Train one epoch; return the seconds."""
        import torch

        from numpy_vae.checks.torch_twin import train_step

        data, size, twin, optimizer = self.data, self.spec.batch_size, self.twin, self.optimizer
        n = len(data)
        start = time.perf_counter()
        order = torch.randperm(n)
        for begin in range(0, n, size):
            train_step(twin, optimizer, data[order[begin : begin + size]])
        return time.perf_counter() - start


def torch_epochs(
    specs: Sequence[ModelSpec], mnist: bool, n: int, repeats: int, threads: int, seed: int = 0
) -> list[list[float]]:
    """Seconds of ``repeats`` PyTorch epochs of each spec (in this process; see
    :func:`run_torch` for the subprocess)."""
    import torch

    torch.set_num_threads(threads)
    images, _ = load_images(mnist, n, seed)
    data = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)  # float32, k / 255
    del images
    seconds = []
    for spec in specs:
        training = TorchTraining(spec, data, seed)
        training.epoch()  # warm-up
        seconds.append([training.epoch() for _ in range(repeats)])
    return seconds


def _subprocess(
    call: str,
    args: dict[str, Any],
    timeout: float,
    module: str = "numpy_vae.experiments.benchmark",
    env: dict[str, str] | None = None,
    prelude: str = "",
) -> Any:
    """Run ``<module>.<call>(**args)`` in a fresh interpreter (after the lines ``prelude``, with
    ``env`` added to the environment); return its JSON."""
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    code = (
        "import importlib, json, sys\n"
        + prelude
        + f"out = importlib.import_module({module!r}).{call}(**json.loads(sys.argv[1]))\n"
        + "print('@@RESULT@@' + json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess {call} failed:\n{proc.stderr[-3000:]}")
    line = [s for s in proc.stdout.splitlines() if s.startswith("@@RESULT@@")][-1]
    return json.loads(line[len("@@RESULT@@") :])


def run_torch(
    specs: Sequence[ModelSpec], mnist: bool, n: int, repeats: int, threads: int, seed: int = 0
) -> list[dict[str, Any]]:
    """:func:`torch_epochs` in a subprocess."""
    args = {
        "specs": [asdict(s) for s in specs],
        "mnist": mnist,
        "n": n,
        "repeats": repeats,
        "threads": threads,
        "seed": seed,
    }
    return _subprocess("_torch_worker", args, timeout=3600)


def _torch_worker(specs: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    import torch

    results = torch_epochs([_spec(s) for s in specs], **kwargs)
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "runs": results}


# --------------------------------------------------------------------------------------------
# JAX, in a subprocess (optional: ``--jax``; JAX is not a dependency)
# --------------------------------------------------------------------------------------------


def jax_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None


def jax_epochs(
    specs: Sequence[ModelSpec], mnist: bool, n: int, repeats: int, seed: int = 0
) -> list[list[float]]:
    """Seconds of ``repeats`` JAX epochs of each spec, after a warm-up epoch that compiles."""
    import jax.numpy as jnp

    from numpy_vae.experiments.jax_twin import JaxTraining

    images, _ = load_images(mnist, n, seed)
    data = jnp.asarray(images, dtype=jnp.float32) / 255
    del images
    seconds = []
    for spec in specs:
        training = JaxTraining(
            IMAGE_SIZE, spec.model_config(), data, spec.batch_size, spec.lr, seed
        )
        training.epoch()  # warm-up: compiles the step for both batch sizes
        seconds.append([training.epoch() for _ in range(repeats)])
    return seconds


def run_jax(
    specs: Sequence[ModelSpec], mnist: bool, n: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """:func:`jax_epochs` in a subprocess."""
    args = {"specs": [asdict(s) for s in specs], "mnist": mnist, "n": n, "repeats": repeats}
    return _subprocess("_jax_worker", {**args, "seed": seed}, timeout=3600)


def _jax_worker(specs: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    import jax

    results = jax_epochs([_spec(s) for s in specs], **kwargs)
    return {"version": jax.__version__, "devices": [str(d) for d in jax.devices()], "runs": results}


# --------------------------------------------------------------------------------------------
# Peak memory, in a subprocess
# --------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _memory_worker(
    spec: dict[str, Any], mnist: bool, n: int, epochs: int, seed: int = 0
) -> dict[str, Any]:
    before = peak_rss_mib()
    images, _ = load_images(mnist, n, seed)
    training = NumpyTraining(_spec(spec), images, seed)
    seconds = [training.epoch() for _ in range(epochs)]
    return {"peak_rss_mib": peak_rss_mib(), "rss_after_imports_mib": before, "seconds": seconds}


def run_memory(spec: ModelSpec, mnist: bool, n: int, epochs: int, seed: int = 0) -> dict:
    """Train ``epochs`` epochs in a fresh subprocess and report its peak resident memory."""
    args = {"spec": asdict(spec), "mnist": mnist, "n": n, "epochs": epochs, "seed": seed}
    return _subprocess("_memory_worker", args, timeout=3600)


def _spec(d: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**{**d, "hidden_dims": tuple(d["hidden_dims"])})


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def blas_info() -> dict[str, Any]:
    """Which BLAS NumPy calls and with how many threads (threadpoolctl if installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threads = None
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                threads = int(os.environ[var])
                break
        return {
            "library": "unknown (pip install threadpoolctl)",
            "threads": threads or os.cpu_count(),
        }
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    # NumPy's own first: SciPy (loaded by the data or plotting code) brings a second OpenBLAS,
    # which NumPy never calls.
    pools.sort(key=lambda pool: "numpy" not in str(pool.get("filepath", "")))
    if not pools:
        return {"library": "unknown", "threads": os.cpu_count()}
    pool = pools[0]
    return {
        "library": f"{pool.get('internal_api')} {pool.get('version')}",
        "architecture": pool.get("architecture"),
        "threads": pool.get("num_threads"),
    }


def cpu_snapshot() -> dict[str, float] | None:
    """CPU-seconds spent so far by the whole machine and by this process and its children."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None  # not Linux
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return {
        "machine": (user + nice + system + irq + softirq) / tick,
        "steal": steal / tick,
        "own": own,
        "wall": time.perf_counter(),
    }


def contention(before: dict | None, after: dict | None) -> dict[str, float] | None:
    """How much CPU other processes took while the benchmark ran (they make timings noisy)."""
    if before is None or after is None:
        return None
    wall = after["wall"] - before["wall"]
    other = (after["machine"] - before["machine"]) - (after["own"] - before["own"])
    return {
        "wall_s": wall,
        "other_cpu_s": max(0.0, other),
        "other_share": max(0.0, other) / max(wall, 1e-9),
        "steal_s": after["steal"] - before["steal"],
    }


@dataclass
class Result:
    """Medians (seconds per epoch) and everything behind them."""

    spec: ModelSpec
    n: int
    numpy_seconds: list[float]
    floor_seconds: list[float]
    phases: dict[str, float]
    flops: int
    torch_seconds: list[float] | None = None
    peak_rss_mib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def numpy(self) -> float:
        return statistics.median(self.numpy_seconds)

    @property
    def floor(self) -> float:
        return statistics.median(self.floor_seconds)

    @property
    def torch(self) -> float | None:
        return statistics.median(self.torch_seconds) if self.torch_seconds else None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": asdict(self.spec),
            "n_images": self.n,
            "numpy_epoch_s": self.numpy,
            "torch_epoch_s": self.torch,
            "gemm_floor_s": self.floor,
            "numpy_over_torch": None if self.torch is None else self.numpy / self.torch,
            "numpy_over_floor": self.numpy / self.floor,
            "images_per_s": self.n / self.numpy,
            "gemm_gflops_per_s": self.flops / self.floor / 1e9,
            "phases_s": self.phases,
            "peak_rss_mib": self.peak_rss_mib,
            "numpy_epochs_s": self.numpy_seconds,
            "torch_epochs_s": self.torch_seconds,
            "gemm_floor_epochs_s": self.floor_seconds,
            **self.extra,
        }


def benchmark_numpy(
    spec: ModelSpec, images: np.ndarray, repeats: int, seed: int = 0, phases: bool = True
) -> Result:
    """NumPy epochs, the instrumented pass and the GEMM floor of one configuration."""
    training = NumpyTraining(spec, images, seed)
    training.epoch()  # warm-up: page faults, BLAS threads, buffers
    numpy_seconds = [training.epoch() for _ in range(repeats)]
    phase_runs = [training.instrumented_epoch() for _ in range(repeats if phases else 0)]
    median_phases = (
        {k: statistics.median(p[k] for p in phase_runs) for k in phase_runs[0]}
        if phase_runs
        else {}
    )
    floor = GemmFloor(training.model, len(images), spec.batch_size, seed)
    floor.epoch()  # warm-up
    floor_seconds = [floor.epoch() for _ in range(repeats)]
    return Result(
        spec=spec,
        n=len(images),
        numpy_seconds=numpy_seconds,
        floor_seconds=floor_seconds,
        phases=median_phases,
        flops=epoch_flops(training.model, len(images), spec.batch_size),
    )


def run(
    specs: Sequence[ModelSpec],
    mnist: bool = False,
    n: int = N_TRAIN,
    repeats: int = 3,
    torch: bool = True,
    memory_epochs: int = 10,
    seed: int = 0,
    phases: bool = True,
    log: Callable[[str], None] = print,
    jax: bool = False,
    rounds: int = 1,
) -> dict[str, Any]:
    """Benchmark every spec; return the JSON-ready report (``jax``: also time a jitted JAX
    step of the same model, where JAX is installed).

    ``rounds`` rounds, the libraries alternating within each (numpy-vae and its GEMM floor,
    then PyTorch, then JAX, each from a fresh model and a warm-up epoch): a machine whose
    speed drifts during the run then slows every library alike, where one library after the
    other would charge the drift to the last. Each library's ``repeats`` epochs of every round
    count towards its median; the instrumented epochs run in the first round only.
    """
    from numpy_vae.fast import kernels

    kernel_seconds = kernels.compile_seconds()  # first: nothing has called a kernel yet
    images, source = load_images(mnist, n, seed)
    blas = blas_info()
    cpu_before = cpu_snapshot()
    results: list[Result] = []
    torch_meta: dict[str, Any] = {}
    jax_meta: dict[str, Any] = {}
    per_round: list[list[dict[str, float]]] = [[] for _ in specs]
    for r in range(rounds):
        for i, spec in enumerate(specs):
            log(f"round {r + 1}/{rounds}, numpy: {spec.name} ...")
            result = benchmark_numpy(spec, images, repeats, seed, phases and r == 0)
            if r == 0:
                results.append(result)
            else:  # this round's epochs join the first round's
                results[i].numpy_seconds += result.numpy_seconds
                results[i].floor_seconds += result.floor_seconds
            per_round[i].append({"numpy": result.numpy, "gemm_floor": result.floor})
        if torch and torch_available():
            log(f"round {r + 1}/{rounds}, torch (subprocess) ...")
            out = run_torch(specs, mnist, n, repeats, blas["threads"] or 1, seed)
            torch_meta = {"version": out["version"], "threads": out["threads"]}
            for i, (result, seconds) in enumerate(zip(results, out["runs"], strict=True)):
                result.torch_seconds = (result.torch_seconds or []) + seconds
                per_round[i][r]["torch"] = statistics.median(seconds)
        if jax and jax_available():
            log(f"round {r + 1}/{rounds}, jax (subprocess) ...")
            out = run_jax(specs, mnist, n, repeats, seed)
            jax_meta = {"version": out["version"], "devices": out["devices"]}
            for i, (result, seconds) in enumerate(zip(results, out["runs"], strict=True)):
                result.extra["jax_epochs_s"] = result.extra.get("jax_epochs_s", []) + seconds
                per_round[i][r]["jax"] = statistics.median(seconds)
    for result, rounds_of_spec in zip(results, per_round, strict=True):
        result.extra["rounds"] = rounds_of_spec
        if "jax_epochs_s" in result.extra:
            jax_median = statistics.median(result.extra["jax_epochs_s"])
            result.extra.update(jax_epoch_s=jax_median, numpy_over_jax=result.numpy / jax_median)
    if memory_epochs:
        for result in results:
            log(f"peak memory of {memory_epochs} epochs (subprocess): {result.spec.name} ...")
            mem = run_memory(result.spec, mnist, n, memory_epochs, seed)
            result.peak_rss_mib = mem["peak_rss_mib"]
            result.extra["memory_run"] = mem
    return {
        "contention": contention(cpu_before, cpu_snapshot()),
        "data": source,
        "n_images": n,
        "repeats": repeats,
        "rounds": rounds,
        "dtype": "float32",
        "blas": {**blas, "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT")},
        "elementwise_threads": default_threads(),
        "kernels": {
            "numba": kernels.numba.__version__ if kernels.COMPILED else None,
            "ready_s": kernel_seconds,
        },
        "torch": torch_meta or None,
        "jax": jax_meta or None,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_epochs": memory_epochs,
        "results": [r.to_json() for r in results],
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    blas = report["blas"]
    torch_meta = report["torch"]
    lines = [
        f"data: {report['n_images']} {report['data']} images (uint8, k/255 per batch), float32,"
        f" median of {report['repeats']} epochs x {report.get('rounds', 1)} alternating round(s)",
        f"BLAS: {blas['library']} {blas.get('architecture') or ''}, {blas['threads']} threads "
        f"({_spin(blas.get('OPENBLAS_THREAD_TIMEOUT'))}), Adam in "
        f"{report['elementwise_threads']} thread(s);"
        + (
            f" torch {torch_meta['version']}, {torch_meta['threads']} threads"
            if torch_meta
            else " torch not run"
        ),
    ]
    kernels = report.get("kernels")
    if kernels:
        lines.append(
            f"kernels: numba {kernels['numba']}, compiled or loaded from its cache in "
            f"{kernels['ready_s']:.2f} s (before the timed epochs)"
            if kernels["numba"]
            else "kernels: numba not importable, the kernels ran as plain Python"
        )
    busy = report["contention"]
    if busy:
        lines.append(
            f"other processes used {busy['other_cpu_s']:.1f} CPU-s during the "
            f"{busy['wall_s']:.0f} s run ({busy['other_share']:.0%} of one core); "
            f"steal {busy['steal_s']:.1f} s"
        )
        steal_share = busy["steal_s"] / max(busy["wall_s"] * (report["cpu_count"] or 1), 1e-9)
        if busy["other_share"] > 0.05 or steal_share > 0.02:
            lines.append(
                "WARNING: the machine was not quiet (other processes, or the hypervisor taking "
                "CPU time: steal); these times are unreliable"
            )
    lines.append("")
    header = (
        f"{'model':<26}{'numpy s':>9}{'torch s':>9}{'GEMM s':>9}"
        f"{'np/torch':>10}{'np/GEMM':>9}{'img/s':>9}{'GFLOP/s':>9}{'peak MiB':>10}"
    )
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        spec = _spec(r["spec"])
        torch_s = r["torch_epoch_s"]
        lines.append(
            f"{spec.name:<26}{r['numpy_epoch_s']:>9.3f}"
            f"{_fmt(torch_s, '.3f'):>9}{r['gemm_floor_s']:>9.3f}"
            f"{_fmt(r['numpy_over_torch'], '.2f'):>10}{r['numpy_over_floor']:>9.2f}"
            f"{r['images_per_s']:>9.0f}{r['gemm_gflops_per_s']:>9.0f}"
            f"{_fmt(r['peak_rss_mib'], '.0f'):>10}"
        )
    if report.get("jax"):
        lines.append("")
        lines.append(f"jax {report['jax']['version']} ({', '.join(report['jax']['devices'])}), "
                     "one jitted step per batch:")  # fmt: skip
        for r in report["results"]:
            lines.append(
                f"  {spec_name(r):<24}jax {r['jax_epoch_s']:.3f} s per epoch, "
                f"numpy-vae / jax {r['numpy_over_jax']:.2f}"
            )
    for r in report["results"]:
        rounds = r.get("rounds") or []
        if len(rounds) > 1:
            lines.append("")
            lines.append(f"each round's medians, {spec_name(r)} (s per epoch):")
            for i, one in enumerate(rounds, start=1):
                lines.append(f"  round {i}: " + ", ".join(f"{k} {v:.3f}" for k, v in one.items()))
    for r in report["results"]:
        p = r["phases_s"]
        if not p:
            continue
        lines.append("")
        lines.append(f"phases of one instrumented epoch, {spec_name(r)} (median of runs):")
        total = p["total"]
        for key in (*PHASES, "loop"):
            lines.append(f"  {key:<10}{p[key]:>8.3f} s  {100 * p[key] / total:5.1f}%")
        lines.append(f"  {'total':<10}{total:>8.3f} s")
    return "\n".join(lines)


def _spin(timeout: str | None) -> str:
    """How OpenBLAS's idle threads wait, for the report."""
    if not timeout:
        return "idle threads spinning: OPENBLAS_THREAD_TIMEOUT unset"
    return f"OPENBLAS_THREAD_TIMEOUT={timeout}"


def spec_name(r: dict[str, Any]) -> str:
    return _spec(r["spec"]).name


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


SWEEP_BATCH_SIZES = (32, 64, 128, 256, 512, 1024)
SWEEP_WIDTHS = (100, 200, 400, 800, 1600)


def sweep_specs() -> list[ModelSpec]:
    """Batch sizes at the default width, then widths at the default batch size."""
    specs = [ModelSpec(batch_size=b) for b in SWEEP_BATCH_SIZES]
    return specs + [ModelSpec(hidden_dims=(w,)) for w in SWEEP_WIDTHS if (w,) != (400,)]


def format_sweep(report: dict[str, Any]) -> str:
    """The sweep as a markdown table (for docs/11-speed.md)."""
    lines = [
        "| batch | hidden | NumPy s/epoch | PyTorch s/epoch | GEMM floor s | NumPy / PyTorch "
        "| NumPy / floor | images/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        spec = _spec(r["spec"])
        lines.append(
            f"| {spec.batch_size} | {'-'.join(map(str, spec.hidden_dims))} "
            f"| {r['numpy_epoch_s']:.2f} | {_fmt(r['torch_epoch_s'], '.2f')} "
            f"| {r['gemm_floor_s']:.2f} | {_fmt(r['numpy_over_torch'], '.2f')} "
            f"| {r['numpy_over_floor']:.2f} | {r['images_per_s']:,.0f} |"
        )
    return "\n".join(lines)
