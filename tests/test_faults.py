"""Faults during training: SIGKILL at any moment, Ctrl-C, divergence, an unwritable or full disk.

The promise under test: whatever happens, the run folder holds a consistent last good epoch,
``--resume`` continues from it, and the finished run is bit-identical to one never interrupted.
"""

import errno
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_train import read_metrics, small_args, synthetic_arrays

import numpy_vae.training.checkpoint
import numpy_vae.training.runs
from numpy_vae.cli import train_main
from numpy_vae.model import VAE
from numpy_vae.training.checkpoint import load_checkpoint
from numpy_vae.training.data import Dataset, ImageSplit
from numpy_vae.training.trainer import Diverged, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
# A process that starts with SIGINT ignored (a background job of a non-interactive shell, some
# CI systems) passes that on to its children, and no Ctrl-C reaches either: nothing to test.
needs_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
    reason="this process was started with SIGINT ignored, so no Ctrl-C can reach the run",
)
needs_sigterm = pytest.mark.skipif(
    signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL,
    reason="SIGTERM is ignored or handled in this process, and its children inherit that",
)
EPOCHS = 8

# A child process that trains like scripts/train_mnist.py, but can be made to kill itself with
# SIGKILL at an exact moment of the nth epoch's save: while the checkpoint's bytes are half
# written, after its temporary file is complete but before the rename, or between the
# checkpoint and the metrics file.
CHILD = r"""
import os, signal, sys
import numpy, numpy_vae.training.runs
where, nth = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}

def due():
    calls["n"] += 1
    return calls["n"] == nth

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "checkpoint-bytes":
    savez = numpy.savez
    def half_written(file, **arrays):
        if due():
            file.write(b"PK\x03\x04" + b"\0" * 4096)
            file.flush()
            die()
        savez(file, **arrays)
    numpy.savez = half_written
elif where == "before-rename":
    replace = os.replace
    def replace_or_die(src, dst):
        if str(dst).endswith("checkpoint.npz") and due():
            die()
        replace(src, dst)
    os.replace = replace_or_die
elif where == "between-files":
    write_metrics = numpy_vae.training.runs.write_metrics
    def metrics_or_die(path, history):
        if due():
            die()
        write_metrics(path, history)
    numpy_vae.training.runs.write_metrics = metrics_or_die

from numpy_vae.cli import train_main
sys.exit(train_main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, **synthetic_arrays())
    return path


def child(where, nth, args):
    return [sys.executable, "-c", CHILD, where, str(nth), *args]


def run_args(data_file, runs_dir, name):
    return small_args(data_file, runs_dir, name, "--epochs", str(EPOCHS), "--binarize", "dynamic")


@pytest.fixture(scope="module")
def reference(data_file, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    runs = tmp_path_factory.mktemp("reference")
    assert train_main(run_args(data_file, runs, "straight")) == 0
    return runs / "straight"


def resume_to_the_end(data_file, run_dir):
    """Continue a killed run as a user would: ``--resume RUN`` alone (it keeps the run's own
    number of epochs and, if no epoch was saved yet, starts it again from its config.json)."""
    if not (run_dir / "config.json").exists():  # killed before the run folder was written
        return train_main(run_args(data_file, run_dir.parent, run_dir.name))
    return train_main(["--resume", str(run_dir), "--no-progress", "--data-file", str(data_file)])


def assert_same_run(a_dir, b_dir, epochs=EPOCHS):
    a, b = load_checkpoint(a_dir / "checkpoint.npz"), load_checkpoint(b_dir / "checkpoint.npz")
    assert a["params"].keys() == b["params"].keys()
    for name in a["params"]:
        np.testing.assert_array_equal(a["params"][name], b["params"][name], err_msg=name)
    np.testing.assert_array_equal(a["adam_m"], b["adam_m"])
    np.testing.assert_array_equal(a["adam_v"], b["adam_v"])
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (epochs, b["step"])
    rows = read_metrics(b_dir)
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))  # no duplicate, no gap
    assert rows == read_metrics(a_dir)
    assert not list(b_dir.glob(".*.part")), "a temporary file was left behind"


def assert_consistent_after_kill(run_dir):
    """What a killed run leaves: a loadable checkpoint (or none) and metrics no further on."""
    if not (run_dir / "checkpoint.npz").exists():
        return 0
    epoch = load_checkpoint(run_dir / "checkpoint.npz")["epoch"]
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    assert [r["epoch"] for r in rows] in (list(range(1, epoch + 1)), list(range(1, epoch)))
    return epoch


@pytest.mark.parametrize(
    "where,nth",
    [("checkpoint-bytes", 3), ("before-rename", 1), ("before-rename", 5), ("between-files", 4)],
)
def test_sigkill_during_a_save_loses_at_most_that_epoch(data_file, reference, tmp_path, where, nth):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        child(where, nth, run_args(data_file, tmp_path, "run")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = assert_consistent_after_kill(run_dir)
    # Dying while epoch nth was being saved keeps epoch nth - 1, except after the rename.
    assert saved == (nth if where == "between-files" else nth - 1)
    assert resume_to_the_end(data_file, run_dir) == 0
    assert_same_run(reference, run_dir)


def saved_epochs(run_dir):
    """Epochs in the run's metrics file (written atomically after each checkpoint)."""
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments(tmp_path):
    """Kills at seeded random moments while epochs are trained and saved; each time the run is
    resumed, and killed again, until it finishes.

    The moments are aimed by the run's own progress, not by a clock: each process is let reach
    a random epoch count (read from its metrics file), then killed at a random point of the
    next epoch, whose length is measured as it goes. A loaded machine slows the run and the
    aim alike (an earlier version timed the kills against a separate reference run and failed
    once under load)."""
    arrays = synthetic_arrays(n_train=4000, n_test=500)
    data = tmp_path / "more.npz"
    np.savez(data, **arrays)
    epochs = 16

    def fresh(name):
        return small_args(data, tmp_path, name, "--epochs", str(epochs), "--hidden", "64")

    assert train_main(fresh("reference")) == 0  # what every killed-and-resumed run must equal
    rng = np.random.default_rng(7)
    run_dir = tmp_path / "run"
    saved_after_kills = []
    for _ in range(20):
        done = 0
        if (run_dir / "checkpoint.npz").exists():
            done = load_checkpoint(run_dir / "checkpoint.npz")["epoch"]
        if done >= epochs - 2:  # resume_to_the_end below finishes it
            break
        cmd = fresh("run")
        if (run_dir / "config.json").exists():
            cmd = ["--resume", str(run_dir), "--no-progress", "--data-file", str(data)]
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Let it save a few more epochs (never the last two, so that every kill lands while the
        # run still trains), then aim at a random point of the next one.
        target = min(done + 1 + int(rng.integers(0, 3)), epochs - 2)
        fraction = rng.uniform(0, 1)  # at this point of the next epoch
        seen, seen_at, per_epoch = saved_epochs(run_dir), None, None
        while proc.poll() is None and saved_epochs(run_dir) < target:
            now = saved_epochs(run_dir)
            if now > seen:
                if seen_at is not None:
                    per_epoch = (time.perf_counter() - seen_at) / (now - seen)
                seen, seen_at = now, time.perf_counter()
            time.sleep(0.005)
        if proc.poll() is None:
            time.sleep(fraction * (per_epoch or 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            saved_after_kills.append(assert_consistent_after_kill(run_dir))
    # Bites only if kills landed mid-training: several left a partly trained run behind.
    assert sum(0 < e < epochs for e in saved_after_kills) >= 2, saved_after_kills
    assert resume_to_the_end(data, run_dir) == 0
    assert_same_run(tmp_path / "reference", run_dir, epochs)


@needs_sigint
def test_ctrl_c_in_a_real_process_saves_and_says_how_to_resume(data_file, reference, tmp_path):
    args = [*run_args(data_file, tmp_path, "run"), "--epochs", "400"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert "epoch   1/400" in proc.stdout.readline() + proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"--resume {tmp_path / 'run'}" in err and "Traceback" not in err
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"]
    assert f"holds epoch {saved} of 400: continue with --resume" in err


@needs_sigint
def test_ctrl_c_during_a_save_keeps_that_epoch(data_file, reference, tmp_path, monkeypatch, capsys):
    save = numpy_vae.training.runs.save_checkpoint
    calls = []

    def interrupted_save(path, state):
        calls.append(state["epoch"])
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the save is under way
        save(path, state)

    monkeypatch.setattr(numpy_vae.training.runs, "save_checkpoint", interrupted_save)
    assert train_main(run_args(data_file, tmp_path, "run")) == 130
    assert "holds epoch 3 of 8: continue with --resume" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == 3
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    monkeypatch.undo()
    assert resume_to_the_end(data_file, tmp_path / "run") == 0
    assert_same_run(reference, tmp_path / "run")


def test_ctrl_c_mid_epoch_drops_only_that_epoch(data_file, reference, tmp_path, monkeypatch):
    inputs = ImageSplit.inputs  # every training batch passes here
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 12:  # batch 2 of epoch 3 (5 batches per epoch)
            raise KeyboardInterrupt
        return inputs(self, *args)

    monkeypatch.setattr(ImageSplit, "inputs", interrupted)
    assert train_main(run_args(data_file, tmp_path, "run")) == 130
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == 2
    monkeypatch.undo()
    assert resume_to_the_end(data_file, tmp_path / "run") == 0
    assert_same_run(reference, tmp_path / "run")


def test_ctrl_c_while_drawing_figures_then_resume_finishes_them(data_file, tmp_path, monkeypatch,
                                                              capsys):  # fmt: skip
    def interrupted(trainer, run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(numpy_vae.training.runs, "write_figures", interrupted)
    assert train_main(run_args(data_file, tmp_path, "run")) == 130
    assert f"all {EPOCHS} epochs are saved" in capsys.readouterr().err
    assert not (tmp_path / "run" / "samples.png").exists()
    monkeypatch.undo()
    assert resume_to_the_end(data_file, tmp_path / "run") == 0
    assert "finishing its figures" in capsys.readouterr().out
    assert (tmp_path / "run" / "samples.png").exists()


# ------------------------------------------------------------------------------ divergence
def poison_step(monkeypatch, steps, what="loss"):
    """Make the model's loss (or one gradient entry) NaN at the given global training steps."""
    loss = VAE.loss
    count = {"n": 0}

    def poisoned(self, *args, **kwargs):
        parts = loss(self, *args, **kwargs)
        if kwargs.get("grad", True):
            count["n"] += 1
            if count["n"] in steps:
                if what == "loss":
                    parts.recon = parts.loss = np.float32(np.nan)
                else:
                    self.grads["decoder.0.weight"][3, 1] = np.inf
        return parts

    monkeypatch.setattr(VAE, "loss", poisoned)


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_divergence_stops_naming_the_step_and_keeps_the_checkpoint(
    data_file, tmp_path, monkeypatch, capsys, what
):
    run_dir = tmp_path / "run"
    poison_step(monkeypatch, {13}, what)  # epoch 3, batch 3
    real_save = numpy_vae.training.runs.save_checkpoint
    saved_bytes = {}

    def save_and_remember(path, state):
        real_save(path, state)
        saved_bytes[state["epoch"]] = Path(path).read_bytes()

    monkeypatch.setattr(numpy_vae.training.runs, "save_checkpoint", save_and_remember)
    assert train_main(run_args(data_file, tmp_path, "run")) == 1
    err = capsys.readouterr().err.strip()
    assert "training diverged at step 13 (epoch 3, batch 3 of 5)" in err
    assert ("recon = nan" if what == "loss" else "non-finite gradient of decoder.0.weight") in err
    assert "start a new run with a smaller --lr (this one has 0.001)" in err and "\n" not in err
    assert f"--resume {run_dir} --skip-nonfinite --epochs {EPOCHS}" in err
    assert f"epoch 2, untouched in {run_dir / 'checkpoint.npz'}" in err
    assert sorted(saved_bytes) == [1, 2]
    assert (run_dir / "checkpoint.npz").read_bytes() == saved_bytes[2]
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]


def test_a_huge_learning_rate_diverges_with_a_clear_message(data_file, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = train_main(small_args(data_file, tmp_path, "run", "--epochs", "3", "--lr", "10"))
    err = capsys.readouterr().err.strip()
    assert code == 1 and "training diverged at step" in err and "(this one has 10)" in err, err
    assert "\n" not in err and not caught, [str(w.message) for w in caught]  # only that line


def test_skip_nonfinite_skips_and_counts(data_file, tmp_path, monkeypatch):
    poison_step(monkeypatch, {2, 3, 11}, "gradient")
    args = [*run_args(data_file, tmp_path, "run"), "--epochs", "3", "--skip-nonfinite"]
    assert train_main(args) == 0
    rows = read_metrics(tmp_path / "run")
    assert [r["skipped_batches"] for r in rows] == [2, 0, 1]
    assert rows[-1]["kl_weight"] == 1.0
    assert [r["step"] for r in rows] == [3, 8, 12]  # optimizer steps actually taken
    assert all(np.isfinite(r["train_loss"]) for r in rows)


def tiny_dataset(n_train):
    arrays = synthetic_arrays(n_train=n_train, n_test=64)
    return Dataset(*(arrays[k] for k in ("train_images", "train_labels", "test_images",
                                         "test_labels")))  # fmt: skip


def test_divergence_on_a_device_is_found_at_the_end_of_the_epoch(monkeypatch):
    """On a device the per-step values are read once per epoch; the step named is still exact."""
    data = tiny_dataset(n_train=256)
    poison_step(monkeypatch, {3}, "gradient")
    trainer = Trainer(TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64, backend="strict"),
                      data)  # fmt: skip
    with pytest.raises(Diverged, match=r"step 3 \(epoch 1, batch 3 of 4\)"):
        trainer.train_epoch()
    assert trainer.epoch == 0 and trainer.history == []


def test_logvar_beyond_float32_range_is_caught():
    """exp(logvar) overflows float32 for logvar > 88.7: the KL is infinite and training stops."""
    data = tiny_dataset(n_train=128)
    trainer = Trainer(TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64), data)
    trainer.model.params["head.bias"][2:] = 100.0  # logvar ~ 100
    with pytest.raises(Diverged, match=r"step 1 .*kl = inf"):
        trainer.train_epoch()


def test_skipped_batches_do_not_stretch_the_kl_warmup(data_file, tmp_path, monkeypatch):
    """The warm-up follows the batch's place in training, not the optimizer's step count."""
    weights = []
    loss = VAE.loss

    def recording(self, *args, **kwargs):
        if kwargs.get("grad", True):
            weights.append(kwargs["kl_weight"])
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(VAE, "loss", recording)
    poison_step(monkeypatch, {2, 3}, "gradient")
    args = [*run_args(data_file, tmp_path, "run"), "--epochs", "2", "--kl-warmup", "1"]
    assert train_main([*args, "--skip-nonfinite"]) == 0
    assert weights == [i / 5 for i in range(5)] + [1.0] * 5


def test_a_diverged_model_is_not_told_to_skip_batches(data_file, tmp_path, monkeypatch, capsys):
    """A non-finite test ELBO means the parameters went bad: skipping batches cannot help."""
    evaluate = Trainer.evaluate

    def broken(self, epoch=None):
        return {**evaluate(self, epoch), "neg_elbo": float("inf")}

    monkeypatch.setattr(Trainer, "evaluate", broken)
    assert train_main(run_args(data_file, tmp_path, "run")) == 1
    err = capsys.readouterr().err
    assert "epoch 1: the test negative ELBO is inf" in err and "Last good checkpoint: none" in err
    assert "--skip-nonfinite" not in err and "smaller --lr" in err


# ------------------------------------------------------------------------- disk and folder
def test_an_unwritable_run_folder_fails_before_training(data_file, tmp_path, monkeypatch, capsys):
    def refuse(path, write, mode="wb"):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(numpy_vae.training.runs, "write_atomic", refuse)
    assert train_main(run_args(data_file, tmp_path, "run")) == 2
    err = capsys.readouterr().err
    assert "cannot write to the run folder" in err and "--runs-dir" in err
    assert "epoch" not in err and not (tmp_path / "run" / "checkpoint.npz").exists()


def test_a_full_disk_is_detected_before_training(data_file, tmp_path, monkeypatch, capsys):
    usage = numpy_vae.training.runs.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        numpy_vae.training.runs.shutil, "disk_usage", lambda path: usage._replace(free=100_000)
    )
    assert train_main(run_args(data_file, tmp_path, "run")) == 2
    assert "only 0.1 MiB free" in capsys.readouterr().err


def test_disk_full_during_a_save_never_corrupts_the_last_checkpoint(
    data_file, tmp_path, monkeypatch, capsys
):
    savez = numpy_vae.training.checkpoint.numpy.savez
    calls = []

    def fills_the_disk(file, **arrays):
        calls.append(1)
        if len(calls) == 3:
            file.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        savez(file, **arrays)

    monkeypatch.setattr(numpy_vae.training.checkpoint.numpy, "savez", fills_the_disk)
    assert train_main(run_args(data_file, tmp_path, "run")) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot save epoch 3" in err and "No space left on device" in err and "\n" not in err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == 2
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    assert not list((tmp_path / "run").glob(".*.part"))


def test_a_failed_metrics_write_says_the_epoch_is_saved(data_file, tmp_path, monkeypatch, capsys):
    write_metrics = numpy_vae.training.runs.write_metrics
    calls = []

    def fails_third(path, history):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_metrics(path, history)

    monkeypatch.setattr(numpy_vae.training.runs, "write_metrics", fails_third)
    assert train_main(run_args(data_file, tmp_path, "run")) == 2
    err = capsys.readouterr().err
    assert "epoch 3 is saved" in err and "--resume" in err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == 3
    monkeypatch.undo()
    assert train_main(["--resume", str(tmp_path / "run"), "--epochs", "3", "--no-progress",
                       "--data-file", str(data_file)]) == 0  # fmt: skip
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def start_script(args, **env):
    """``scripts/train_mnist.py`` in a child process whose output goes to pipes, with Python's
    own buffering (no PYTHONUNBUFFERED): what a log file or ``| tee`` sees."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environment, **env},
    )


def test_a_piped_run_shows_each_epoch_line_as_it_ends(data_file, tmp_path):
    """Block-buffered output keeps lines back until its 8 KiB buffer fills (about 60 epoch
    lines) or the process exits; the first epoch's line must be readable while the run is
    still in its first epochs (checked: it fails with the flushing removed)."""
    proc = start_script([*run_args(data_file, tmp_path, "run"), "--epochs", "400"])
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        saved = len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        assert "epoch   1/400" in "".join(lines)
        # A few epochs may end while the line travels; a buffer's worth (~60) may not.
        assert saved <= 20, f"the first epoch's line came only after {saved} epochs"
    finally:
        proc.kill()
        proc.communicate(timeout=60)


@needs_sigterm
def test_sigterm_saves_says_how_to_resume_and_the_run_resumes(data_file, reference, tmp_path):
    proc = start_script([*run_args(data_file, tmp_path, "run"), "--epochs", "400"])
    assert "epoch   1/400" in proc.stdout.readline() + proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM)" in err
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"]
    assert saved >= 1 and f"holds epoch {saved} of 400: continue with --resume" in err
    # The run goes on from there.
    more = ["--resume", str(tmp_path / "run"), "--epochs", str(saved + 1), "--no-progress"]
    assert train_main([*more, "--data-file", str(data_file)]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == saved + 1


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/tmp/x", ""])
def test_a_run_name_is_one_folder_name(data_file, tmp_path, capsys, name):
    runs = tmp_path / "runs"
    runs.mkdir()
    assert train_main(small_args(data_file, runs, name, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name must be one folder name" in err
    assert not any(tmp_path.rglob("*.json")) and not any(tmp_path.rglob("*.npz"))


@pytest.mark.parametrize("skip", [False, True])
def test_the_fast_path_takes_its_gradient_check_from_adams_pass(monkeypatch, skip):
    """Without skipping, the fast path reads the gradient's health from FastAdam's own pass
    (no pass of g . g before the update) and still stops at a poisoned step; skipping needs
    the verdict first, so it takes the norm."""
    calls = []
    norm = Trainer._squared_gradient_norm

    def counted(self):
        calls.append(1)
        return norm(self)

    monkeypatch.setattr(Trainer, "_squared_gradient_norm", counted)
    poison_step(monkeypatch, {3}, "gradient")
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64, skip_nonfinite=skip)
    trainer = Trainer(config, tiny_dataset(n_train=256))
    if skip:
        trainer.train_epoch()
        assert len(calls) == 4 and trainer.history[-1]["skipped_batches"] == 1
    else:
        with pytest.raises(Diverged, match=r"step 3 \(epoch 1, batch 3 of 4\).*decoder.0.weight"):
            trainer.train_epoch()
        assert calls == []
