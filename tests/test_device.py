"""The package on a device that is not the host, proven without a GPU.

The "strict" backend (numpy_vae.devices.strict) is a CPU stand-in with CuPy's manners: its
arrays refuse implicit conversion to NumPy and mixing with NumPy arrays, its generator has
CuPy's API, and every transfer is counted. The first tests prove that the stand-in bites; the
rest run the real code on it (gradients, training, sampling, evaluation, figures, checkpoints,
the command line) and bound the transfers of a training step: zero.
"""

import importlib.util
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from test_train import synthetic_arrays

from numpy_vae import VAE, BackendUnavailable, get_backend
from numpy_vae import backend as backend_module
from numpy_vae.cli import evaluate_main, train_main
from numpy_vae.cli.check_gpu import main as check_gpu_main
from numpy_vae.devices import gpucheck as devicecheck
from numpy_vae.devices import strict as strict_backend
from numpy_vae.devices.strict import DeviceArray, count_transfers
from numpy_vae.fast import FastAdam, FastVAE
from numpy_vae.training.checkpoint import load_checkpoint, save_checkpoint
from numpy_vae.training.evaluate import active_units, iw_log_likelihood, posterior_means
from numpy_vae.training.runs import CHECKPOINT, write_figures
from numpy_vae.training.trainer import Dataset, TrainConfig, Trainer, evaluate_elbo

ROOT = Path(__file__).resolve().parents[1]
STRICT = get_backend("strict", "float32")
STRICT64 = get_backend("strict", "float64")
F64 = get_backend("numpy", "float64")
TINY = {"hidden_dims": (8,), "latent_dim": 2, "batch_size": 32, "eval_batch_size": 16}
HAVE_CUPY = importlib.util.find_spec("cupy") is not None

# Every method of cupy.random.Generator (CuPy 13/14, cupy/random/_generator_api.pyx). The
# stand-in's generator may have no other; so production code cannot call one CuPy lacks.
CUPY_GENERATOR_METHODS = {
    "beta", "binomial", "chisquare", "dirichlet", "exponential", "f", "gamma", "geometric",
    "hypergeometric", "integers", "logseries", "poisson", "power", "random",
    "standard_exponential", "standard_gamma", "standard_normal", "uniform",
}  # fmt: skip


def tiny_data(n_train=96, n_test=24):
    return Dataset(**synthetic_arrays(n_train, n_test))


def train_counting(trainer):
    """Train one epoch; return its metrics, the transfers of each step, and all transfers.

    A step's transfers are those between the end of one optimizer step and the end of the
    next: the batch, the noise, the loss, the backward pass and the update.
    """
    marks = []
    step = trainer.optimizer.step
    with count_transfers() as transfers:

        def counting_step():
            step()
            marks.append(transfers.to_host + transfers.to_device)

        trainer.optimizer.step = counting_step
        try:
            metrics = trainer.train_epoch()
        finally:
            del trainer.optimizer.step
    return metrics, np.diff([0, *marks]), transfers


# ---------------------------------------------------------------------------- the stand-in bites
def test_device_arrays_refuse_implicit_host_conversion_and_mixing():
    a = STRICT.asarray(np.arange(6.0).reshape(2, 3))
    host = np.ones(3, dtype=np.float32)
    leaks = [
        lambda: np.asarray(a),  # what CuPy refuses: "Implicit conversion to a NumPy array"
        lambda: np.array([a[0, 0], a[0, 1]]),
        lambda: a + host,  # mixing with a host array, either side
        lambda: host * a,
        lambda: a + np.zeros(()),  # 0-d host arrays too
        lambda: np.concatenate([a, a]),  # NumPy functions do not silently dispatch
        lambda: np.clip(a, 0, 1),
        lambda: scipy.special.expit(a),  # special functions come from backend.special
        lambda: a[np.array([0])],  # host index arrays
        lambda: a.__setitem__(0, host),  # host values assigned into the device
        lambda: np.testing.assert_allclose(a, a),
        lambda: pickle.dumps(a),
    ]
    for leak in leaks:
        with pytest.raises(TypeError):
            leak()
    # Python and NumPy scalars mix as in CuPy; results and reductions stay on the device.
    b = 2.0 * a + np.float32(1) - a.sum()
    assert isinstance(b, DeviceArray) and isinstance(a.sum(), DeviceArray) and a.sum().ndim == 0
    assert isinstance(STRICT.special.expit(a), DeviceArray)
    assert isinstance(np.exp(a), DeviceArray)  # a NumPy ufunc runs on the device, as in CuPy


def test_transfers_are_explicit_counted_and_copy():
    host = np.arange(4.0)
    with count_transfers() as t:
        a = STRICT64.asarray(host)
        back = STRICT64.to_host(a)
        total = a.sum()
        scalars = [float(total), total.item(), f"{total:.1f}", bool(total > 0), int(a[1])]
    assert (t.to_device, t.to_host) == (1, 6), t.report()
    assert scalars == [6.0, 6.0, "6.0", True, 1]
    host[0] = 99.0  # the device copy does not alias the host data, nor the other way round
    back[1] = 99.0
    np.testing.assert_array_equal(STRICT64.to_host(a), [0.0, 1.0, 2.0, 3.0])
    with count_transfers() as t:
        b = a * 2 + STRICT64.xp.zeros(4)  # on the device: nothing crosses
        STRICT64.xp.asarray(b)  # already there
    assert (t.to_device, t.to_host) == (0, 0)


def test_generator_has_cupys_api_and_nothing_more():
    rng = STRICT.rng(5)
    public = {name for name in dir(rng) if not name.startswith("_")}
    assert public <= CUPY_GENERATOR_METHODS, public - CUPY_GENERATOR_METHODS
    for missing in ("permutation", "shuffle", "choice"):  # NumPy has them, CuPy does not
        assert not hasattr(rng, missing)
    with count_transfers() as t:
        eps = rng.standard_normal((3, 2), dtype=np.float32)
        u = rng.random(4, dtype=np.float32)
        out = STRICT.xp.empty((3, 2), dtype=np.float32)
        assert rng.standard_normal((3, 2), dtype=np.float32, out=out) is out
    assert (t.to_host, t.to_device) == (0, 0)  # drawn on the device
    assert isinstance(eps, DeviceArray) and eps.dtype == np.float32 and u.dtype == np.float32
    with pytest.raises(TypeError):  # CuPy wants a device array of exactly the dtype
        rng.standard_normal((3, 2), dtype=np.float32, out=np.empty((3, 2), np.float32))
    with pytest.raises(TypeError):  # CuPy's generator state cannot be serialised
        pickle.dumps(rng)
    # Same seed, same draws; another stream than NumPy's for that seed.
    again = STRICT.to_host(STRICT.rng(5).standard_normal((3, 2), dtype=np.float32))
    np.testing.assert_array_equal(STRICT.to_host(eps), again)
    assert not np.allclose(again, np.random.default_rng(5).standard_normal((3, 2)))
    order = STRICT.to_host(STRICT.permutation(STRICT.rng(1), 50))  # argsort of uniform keys
    assert sorted(order) == list(range(50)) and list(order) != list(range(50))


def test_the_stand_in_catches_leaks_the_package_had():
    """Three leaks this branch removed, put back: each fails or is counted on the stand-in."""
    mu = STRICT.asarray(np.random.default_rng(0).standard_normal((50, 3)))
    with pytest.raises(TypeError):  # the old active_units: numpy.asarray(mu.var(...))
        np.asarray(mu.var(axis=0, dtype=np.float64))
    assert active_units(mu)[0] == 3  # the fixed one computes on the device, copies 3 numbers
    with pytest.raises(AttributeError):  # the old shuffle: a NumPy-only generator method
        STRICT.rng(0).permutation(10)
    # A training step that reads its loss on the host (float() per step) is counted.
    trainer = Trainer(TrainConfig(backend="strict", **TINY), tiny_data())
    loss = trainer.model.loss

    def leaky_loss(*args, **kwargs):
        parts = loss(*args, **kwargs)
        float(parts.loss)  # e.g. a loss printed every step
        return parts

    trainer.model.loss = leaky_loss
    _, per_step, _ = train_counting(trainer)
    assert list(per_step) == [1, 1, 1]


# ---------------------------------------------------------------------------- the core on it
def test_gradient_checks_on_the_device_float64():
    errors = devicecheck.gradient_errors(STRICT64, max_entries=8)
    host = devicecheck.gradient_errors(F64, max_entries=8)
    assert set(errors) == {label for label, _ in devicecheck.VARIANTS}
    for label, error in errors.items():
        assert error < 1e-7, (label, error)
        assert error == pytest.approx(host[label], rel=1e-6, abs=1e-13)


@pytest.mark.parametrize("kwargs", [{}, {"n_classes": 3, "free_bits": 0.2, "beta": 2.0}])
def test_device_step_equals_host_step_without_transfers(kwargs):
    """Same numbers on the device as on the host (the stand-in computes with NumPy), and a
    whole step, loss + backward + Adam, moves nothing across. The gradient and the updated
    parameters are bitwise the host's; the loss within roundoff of it, because the host's
    Bernoulli value takes the logarithms of products in a compiled pass
    (:func:`numpy_vae.fast.kernels.bernoulli_row_sums`) and the device a logarithm per pixel."""
    rng = np.random.default_rng(0)
    x, eps = rng.random((5, 7)), rng.standard_normal((5, 2))
    y = rng.integers(0, 3, 5) if kwargs else None
    results = []
    for backend in (F64, STRICT64):
        model = FastVAE(7, hidden_dims=(6,), latent_dim=2, backend=backend, seed=3, **kwargs)
        adam = FastAdam([model.flat.data], [model.flat.grad])
        xd, epsd = backend.asarray(x), backend.asarray(eps)
        yd = None if y is None else backend.xp.asarray(y)
        with count_transfers() as t:
            parts = model.loss(xd, yd, eps=epsd, kl_weight=0.5, validate=False)
            adam.step()
        assert (t.to_host, t.to_device) == (0, 0), t.report()
        # (in the standard layout: the host stores its first weight transposed, the device not)
        flat = model.flat
        vectors = [flat.to_standard(backend.to_host(a)) for a in (flat.grad, flat.data)]
        results.append([backend.to_host(parts.loss), *vectors])
    (host_loss, *host_arrays), (device_loss, *device_arrays) = results
    np.testing.assert_allclose(host_loss, device_loss, rtol=1e-14)
    for host_value, device_value in zip(host_arrays, device_arrays, strict=True):
        np.testing.assert_array_equal(host_value, device_value)


def test_sampling_and_inference_on_the_device():
    model = VAE(7, hidden_dims=(6,), latent_dim=2, n_classes=3, backend=STRICT, seed=0)
    y = STRICT.xp.asarray(np.array([0, 1, 2, 0]))
    with count_transfers() as t:
        samples = model.sample(4, y)
    assert isinstance(samples, DeviceArray) and samples.shape == (4, 7)
    assert t.to_device == 0 and t.to_host <= 2  # decode validates z and y: a few scalars
    x = STRICT.asarray(np.random.default_rng(0).random((4, 7)))
    with count_transfers() as t:
        mu, logvar = model.encode(x, y, validate=False)
        recon = model.decode(mu, y)
    assert isinstance(recon, DeviceArray) and isinstance(logvar, DeviceArray)
    # The boundary accepts host data and moves it explicitly.
    parts = model.loss(np.random.default_rng(1).random((4, 7)), np.array([0, 1, 2, 1]))
    assert np.isfinite(STRICT.to_host(parts.loss))


# ---------------------------------------------------------------------------- training on it
@pytest.mark.parametrize(
    "extra",
    [
        {"binarize": "dynamic"},
        {"n_classes": 10, "kl_warmup": 1.0, "free_bits": 0.1},
        {"likelihood": "gaussian", "gaussian_sigma": 0.3, "binarize": "threshold"},
        {"reference": True},  # the specification trains on a device too
        {"reference": True, "n_classes": 10, "free_bits": 0.1},
    ],
)
def test_training_step_moves_nothing_and_epoch_a_few_scalars(extra):
    trainer = Trainer(TrainConfig(backend="strict", **TINY, **extra), tiny_data())
    metrics, per_step, transfers = train_counting(trainer)
    assert list(per_step) == [0, 0, 0], transfers.report()
    # The data went to the device once, in the constructor: an epoch sends nothing there.
    assert transfers.to_device == 0, transfers.report()
    # Epoch end: train totals, test totals with KL per dimension, the test inputs' validation
    # before the posterior means (and the labels', for a conditional model), the active units'
    # variances.
    assert transfers.to_host == 4 + trainer.config.conditional, transfers.report()
    assert all(np.isfinite(metrics[k]) for k in ("train_loss", "test_neg_elbo", "test_kl"))
    assert len(metrics["test_kl_per_dim"]) == 2 and metrics["active_units"] in (0, 1, 2)


def test_progress_bar_reads_at_most_one_scalar_per_redraw(capsys):
    trainer = Trainer(TrainConfig(backend="strict", **TINY), tiny_data(), progress=True)
    _, per_step, transfers = train_counting(trainer)
    redraws = capsys.readouterr().err.count("loss ")
    bar_reads = sum(1 for event in transfers.events if event[3].endswith("in <lambda>"))
    assert max(per_step) <= 1 and bar_reads == redraws >= 1, transfers.report()


def test_device_run_starts_from_the_host_run_parameters():
    """Initial weights are drawn on the host, so every backend starts from the same ones; the
    device's own random streams then make the runs differ, by sampling noise only."""
    data = tiny_data(192, 48)
    host = Trainer(TrainConfig(**TINY), data)
    device = Trainer(TrainConfig(backend="strict", **TINY), data)
    np.testing.assert_array_equal(  # (the host stores its first weight transposed)
        host.model.flat.to_standard(host.model.flat.data), STRICT.to_host(device.model.flat.data)
    )
    a, b = host.train_epoch(), device.train_epoch()
    assert a["train_loss"] != b["train_loss"]
    assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * a["train_loss"]


# ---------------------------------------------------------------------------- evaluation, files
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A conditional model with a 2-D latent trained for two epochs on the device, and a run
    folder holding its checkpoint."""
    run_dir = tmp_path_factory.mktemp("device_run")
    trainer = Trainer(TrainConfig(backend="strict", n_classes=10, epochs=2, **TINY), tiny_data())
    trainer.train_epoch()
    trainer.train_epoch()
    save_checkpoint(run_dir / CHECKPOINT, trainer.state_dict())
    return trainer, run_dir


def test_evaluation_on_the_device(trained):
    trainer, _ = trained
    model, x, y = trainer.model, trainer.test_x, trainer.test_labels
    with count_transfers() as t:
        result = evaluate_elbo(model, x, y, STRICT.rng(0), batch_size=10)
    assert t.to_host == 1 and np.isfinite(result["neg_elbo"])  # one transfer for everything
    assert isinstance(result["kl_per_dim"], np.ndarray)
    with count_transfers() as t:
        log_px = iw_log_likelihood(model, x, y, k=20, rng=STRICT.rng(1), max_rows=64)
    assert isinstance(log_px, np.ndarray) and log_px.shape == (24,) and np.isfinite(log_px).all()
    assert t.to_host == 3, t.report()  # validating x and y once, the estimates once
    assert -log_px.mean() < result["neg_elbo"] + 5  # IW bound ~ tighter than the ELBO
    with count_transfers() as t:
        mu = posterior_means(model, x, y, batch=10)
        count, variance = active_units(mu)
    assert isinstance(mu, DeviceArray) and mu.shape == (24, 2)
    assert t.to_host == 3 and variance.shape == (2,), t.report()  # x, y validated; 2 variances


def test_figures_from_the_device(trained, tmp_path):
    trainer, _ = trained
    paths = write_figures(trainer, tmp_path)
    names = {p.name for p in paths}
    assert {"samples.png", "interpolation.png", "class_samples.png", "manifold.png"} <= names
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG")


def test_checkpoints_cross_between_backends(trained, tmp_path):
    device_trainer, run_dir = trained
    state = load_checkpoint(run_dir / CHECKPOINT)  # written from the device: host arrays
    assert all(isinstance(v, np.ndarray) for v in state["params"].values())
    config = TrainConfig.from_json({**state["config"], "backend": "numpy"})
    host_trainer = Trainer(config, tiny_data())
    host_trainer.load_state_dict(state)
    for name, p in device_trainer.model.params.items():
        np.testing.assert_array_equal(host_trainer.model.params[name], STRICT.to_host(p))
    np.testing.assert_array_equal(  # (the host stores its first weight transposed)
        host_trainer.model.flat.to_standard(host_trainer.optimizer.m[0]),
        STRICT.to_host(device_trainer.optimizer.m[0]),
    )
    # And back: a host checkpoint loads into the device.
    host_trainer.model.flat.data += 0.5
    save_checkpoint(tmp_path / "host.npz", host_trainer.state_dict())
    fresh = Trainer(TrainConfig.from_json(state["config"]), tiny_data())
    fresh.load_state_dict(load_checkpoint(tmp_path / "host.npz"))
    np.testing.assert_array_equal(
        STRICT.to_host(fresh.model.flat.data),
        host_trainer.model.flat.to_standard(host_trainer.model.flat.data),
    )
    assert fresh.epoch == 2 and fresh.optimizer.step_count == host_trainer.optimizer.step_count


def test_resumed_device_run_equals_uninterrupted(tmp_path):
    """The device generator cannot be saved; generators derived from (seed, stream, epoch)
    make a resumed run draw what the uninterrupted one drew, on the device too."""
    config = TrainConfig(backend="strict", binarize="dynamic", kl_warmup=2, epochs=3, **TINY)
    data = tiny_data()
    straight = Trainer(config, data)
    for _ in range(3):
        straight.train_epoch()
    first = Trainer(config, data)
    first.train_epoch()
    save_checkpoint(tmp_path / CHECKPOINT, first.state_dict())
    resumed = Trainer(config, data)  # a fresh process, as far as the generators know
    resumed.load_state_dict(load_checkpoint(tmp_path / CHECKPOINT))
    resumed.train_epoch()
    resumed.train_epoch()
    np.testing.assert_array_equal(
        STRICT.to_host(straight.model.flat.data), STRICT.to_host(resumed.model.flat.data)
    )
    np.testing.assert_array_equal(
        STRICT.to_host(straight.optimizer.v[0]), STRICT.to_host(resumed.optimizer.v[0])
    )
    drop = ("seconds", "images_per_second")
    assert [{k: v for k, v in m.items() if k not in drop} for m in straight.history] == [
        {k: v for k, v in m.items() if k not in drop} for m in resumed.history
    ]


def test_cli_evaluates_a_device_run_on_the_host(trained, tmp_path, capsys):
    _, run_dir = trained
    data_file = tmp_path / "tiny.npz"
    np.savez(data_file, **synthetic_arrays(96, 24))
    assert evaluate_main([str(run_dir), "--data-file", str(data_file), "--iw-samples", "5",
                          "--backend", "numpy"]) == 0  # fmt: skip
    assert "IW NLL" in capsys.readouterr().out


# ---------------------------------------------------------------------------- CuPy's absence
def test_cupy_missing_is_one_line_from_api_and_cli(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if not installed, wherever this runs
    monkeypatch.setattr(backend_module, "_CUPY", None)
    with pytest.raises(
        BackendUnavailable, match=r"CuPy is not installed; pip install cupy-cuda12x"
    ):
        VAE(backend="cupy")
    with pytest.raises(BackendUnavailable):
        Trainer(TrainConfig(backend="cupy"), tiny_data())
    assert train_main(["--backend", "cupy", "--runs-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nvidia-smi" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing created, no data loaded


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_check_gpu_script_without_cupy_is_one_unavailable_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_gpu.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's package
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "unavailable" in result.stderr
    assert "Traceback" not in result.stderr


def fake_cupy(monkeypatch, device_count=1):
    """Install a CuPy-shaped module whose arrays are the stand-in's: the code path of the real
    "cupy" backend then runs on the CPU device."""
    cupy = types.ModuleType("cupy")
    cupy.__dict__.update({k: v for k, v in vars(strict_backend.xp).items() if k != "__name__"})
    cupy.__version__ = "0.0-stand-in"
    cupy.asnumpy = strict_backend.to_host

    def get_device_count():
        if device_count is None:
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return device_count

    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=get_device_count,
            getDeviceProperties=lambda i: {"name": b"Stand-in GPU", "multiProcessorCount": 2},
        ),
        Device=lambda: types.SimpleNamespace(id=0),
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
    )
    cupyx, cupyx_scipy = types.ModuleType("cupyx"), types.ModuleType("cupyx.scipy")
    special = types.ModuleType("cupyx.scipy.special")
    special.__dict__.update(
        {k: v for k, v in vars(strict_backend.special).items() if k != "__name__"}
    )
    cupyx.scipy, cupyx_scipy.special = cupyx_scipy, special
    for name, module in (("cupy", cupy), ("cupyx", cupyx), ("cupyx.scipy", cupyx_scipy),
                         ("cupyx.scipy.special", special)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backend_module, "_CUPY", None)


@pytest.mark.parametrize("count,message", [(0, "reports 0 devices"), (None, "cudaErrorNoDevice")])
def test_no_gpu_is_one_line(monkeypatch, count, message):
    fake_cupy(monkeypatch, device_count=count)
    with pytest.raises(BackendUnavailable) as info:
        get_backend("cupy")
    text = str(info.value)
    assert "no usable GPU is visible" in text and message in text and "nvidia-smi" in text
    assert "\n" not in text


def test_the_cupy_backend_code_path_on_a_cupy_shaped_stand_in(monkeypatch, capsys):
    """get_backend("cupy") and everything behind it (the device generator, the argsort
    permutation, synchronize, to_host via cupy.asnumpy, check_gpu's report) with CuPy's API."""
    fake_cupy(monkeypatch)
    backend = get_backend("cupy")
    assert backend.name == "cupy" and "Stand-in GPU" in backend.describe()
    trainer = Trainer(TrainConfig(backend="cupy", **TINY), tiny_data())
    _, per_step, transfers = train_counting(trainer)
    assert list(per_step) == [0, 0, 0] and transfers.to_host == 4, transfers.report()
    # Six steps, so a loose drift tolerance: the early losses still fall fast.
    argv = "--steps 6 --batch-size 16 --lockstep-steps 2 --timing-steps 1 --tolerance 20".split()
    assert check_gpu_main(argv) == 0
    out = capsys.readouterr().out
    assert "cupy 0.0-stand-in on GPU 0: Stand-in GPU" in out and "all checks passed" in out
    assert "initial parameters equal" in out and out.count(" ok") == 5
