"""A run records the data it was trained on, and an evaluation what it evaluated (issue 24).

Every program that reopens a run (``--resume``, ``evaluate.py``, a study's resume) uses the
run's own record of its data instead of whatever the command line happens to default to, and
``summarize_runs.py`` tells a current evaluation from a stale one. MNIST itself is never read:
``load_mnist`` is replaced by a synthetic stand-in, so that a program that falls back to MNIST
is caught (and no test downloads anything).
"""

import json

import numpy as np
import pytest

from numpy_vae.cli import common as cli_common
from numpy_vae.cli import evaluate_main, train_main
from numpy_vae.cli.gradient_variance import main as gradient_variance_main
from numpy_vae.experiments.variants import format_study_table, summarize_runs
from numpy_vae.training.data import KEYS, MNIST, Dataset
from numpy_vae.training.runs import train_or_resume
from numpy_vae.training.trainer import TrainConfig
from tests.test_train import small_args, synthetic_arrays


@pytest.fixture
def fake_mnist(monkeypatch, tmp_path):
    """Replace MNIST by other synthetic digits; returns the list of calls to load it."""
    calls = []

    def load_mnist(data_dir=None, **kwargs):
        calls.append(data_dir)
        return MNIST(**synthetic_arrays(seed=7), source="cache")

    monkeypatch.setattr(cli_common, "load_mnist", load_mnist)
    monkeypatch.setenv("NUMPY_VAE_DATA", str(tmp_path / "mnist-cache"))
    return calls


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "inv.npz"
    np.savez(path, **synthetic_arrays())
    return path


def narrow_file(path, width=16, seed=0):
    """A data file whose images are ``width`` pixels wide, 4 x 4 (not MNIST's 784)."""
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        train_images=rng.integers(0, 256, (200, width)).astype(np.uint8),
        test_images=rng.integers(0, 256, (50, width)).astype(np.uint8),
    )
    return path


def config_of(run):
    return json.loads((run / "config.json").read_text())


def last_metrics(run):
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


# -- item 1: evaluate.py evaluates on the run's own data ---------------------------------------


def test_evaluate_uses_the_recorded_data_file_not_mnist(data_file, tmp_path, fake_mnist):
    assert train_main(small_args(data_file, tmp_path, "invrun2", "--epochs", "1")) == 0
    run = tmp_path / "invrun2"
    assert evaluate_main([str(run), "--iw-samples", "5", "--no-progress"]) == 0
    assert fake_mnist == []  # MNIST was never loaded
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["data"] == str(data_file)
    assert evaluation["test_neg_elbo"] == pytest.approx(last_metrics(run)["test_neg_elbo"], 1e-6)


def test_evaluate_a_narrow_run_without_data_file(tmp_path, fake_mnist):
    data = narrow_file(tmp_path / "narrow.npz")
    assert train_main(small_args(data, tmp_path, "narrow", "--epochs", "1")) == 0
    assert evaluate_main([str(tmp_path / "narrow"), "--iw-samples", "5", "--no-progress"]) == 0
    assert fake_mnist == []


def test_evaluate_refuses_other_data_naming_what_changed(data_file, tmp_path, usage_error):
    assert train_main(small_args(data_file, tmp_path, "run", "--epochs", "1")) == 0
    other = tmp_path / "other.npz"
    np.savez(other, **synthetic_arrays(seed=3))
    err = usage_error(evaluate_main, [str(tmp_path / "run"), "--data-file", str(other)])
    assert str(other) in err and str(data_file) in err and "sha256" in err
    assert not (tmp_path / "run" / "evaluation.json").exists()


def test_a_missing_recorded_file_is_one_line(data_file, tmp_path, usage_error, fake_mnist):
    assert train_main(small_args(data_file, tmp_path, "run", "--epochs", "1")) == 0
    data_file.rename(tmp_path / "moved.npz")
    err = usage_error(evaluate_main, [str(tmp_path / "run"), "--iw-samples", "0"])
    assert str(data_file) in err and "--data-file" in err
    err = usage_error(train_main, ["--resume", str(tmp_path / "run"), "--epochs", "2"])
    assert str(data_file) in err and "--data-file" in err
    assert fake_mnist == []
    # The same file under its new name is accepted: its arrays have the recorded hash.
    moved = ["--data-file", str(tmp_path / "moved.npz")]
    assert evaluate_main([str(tmp_path / "run"), "--iw-samples", "0", *moved]) == 0


# -- item 2: --resume keeps the run's data and its record --------------------------------------


def test_resume_without_data_file_trains_on_the_recorded_file(data_file, tmp_path, fake_mnist):
    assert train_main(small_args(data_file, tmp_path, "invrun", "--epochs", "1")) == 0
    run = tmp_path / "invrun"
    before = config_of(run)
    assert before["data"] == str(data_file)
    assert train_main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert fake_mnist == []  # epoch 2 was trained on the file, not on MNIST
    after = config_of(run)
    assert after["data"] == before["data"]  # and the record of epoch 1's data is kept
    assert after["epochs"] == 2 and last_metrics(run)["epoch"] == 2
    record = before["dataset"]
    assert after["dataset"] == record
    assert record["path"] == str(data_file.resolve()) and len(record["sha256"]) == 64
    assert "uint8" in record["pixels"]


def test_resume_with_other_data_is_refused(data_file, tmp_path, usage_error):
    assert train_main(small_args(data_file, tmp_path, "run", "--epochs", "1")) == 0
    run = tmp_path / "run"
    other = tmp_path / "other.npz"
    np.savez(other, **synthetic_arrays(seed=3))
    before = (run / "checkpoint.npz").read_bytes(), config_of(run)
    argv = ["--resume", str(run), "--epochs", "2", "--data-file", str(other)]
    err = usage_error(train_main, argv)
    assert str(other) in err and str(data_file) in err and "sha256" in err
    assert ((run / "checkpoint.npz").read_bytes(), config_of(run)) == before
    # The same arrays under another name are the same data.
    same = tmp_path / "copy.npz"
    same.write_bytes(data_file.read_bytes())
    assert train_main(["--resume", str(run), "--epochs", "2", "--data-file", str(same)]) == 0
    assert config_of(run)["dataset"] == before[1]["dataset"]


def test_an_mnist_run_resumes_and_evaluates_on_mnist(tmp_path, fake_mnist, usage_error):
    args = small_args("x", tmp_path, "m", "--epochs", "1")[2:]  # no --data-file
    assert train_main(args) == 0
    run = tmp_path / "m"
    record = config_of(run)["dataset"]
    assert record["source"] == "MNIST (cache)" and record["path"] is None
    assert train_main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert evaluate_main([str(run), "--iw-samples", "0"]) == 0
    assert len(fake_mnist) == 3 and config_of(run)["dataset"] == record
    data = tmp_path / "inv.npz"
    np.savez(data, **synthetic_arrays())
    err = usage_error(evaluate_main, [str(run), "--data-file", str(data)])
    assert "MNIST" in err and str(data) in err


def test_old_runs_without_a_hash_keep_working(data_file, tmp_path, fake_mnist, usage_error):
    """A run written before the record: MNIST if it says so, else --data-file is required."""
    for name, data in (("old-mnist", None), ("old-file", data_file)):
        args = small_args(data_file, tmp_path, name, "--epochs", "1")
        assert train_main(args[2:] if data is None else args) == 0
        config = config_of(tmp_path / name)
        del config["dataset"]
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    assert train_main(["--resume", str(tmp_path / "old-mnist"), "--epochs", "2"]) == 0
    assert config_of(tmp_path / "old-mnist")["data"] == "MNIST (cache)"
    err = usage_error(train_main, ["--resume", str(tmp_path / "old-file"), "--epochs", "2"])
    assert "--data-file" in err and str(data_file) in err
    argv = ["--resume", str(tmp_path / "old-file"), "--epochs", "2", "--data-file", str(data_file)]
    assert train_main(argv) == 0
    assert config_of(tmp_path / "old-file")["data"] == str(data_file)


def test_a_study_resume_refuses_other_data(tmp_path):
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64, epochs=1)
    run = tmp_path / "row"
    first = Dataset(*(synthetic_arrays()[k] for k in KEYS))
    train_or_resume(config, first, run, {"data": "MNIST"})
    record = config_of(run)["dataset"]
    other = Dataset(*(synthetic_arrays(seed=4)[k] for k in KEYS))
    config.epochs = 2
    with pytest.raises(ValueError, match="sha256"):
        train_or_resume(config, other, run, {"data": "MNIST"})
    assert last_metrics(run)["epoch"] == 1
    train_or_resume(config, first, run, {"data": "MNIST"})
    assert last_metrics(run)["epoch"] == 2 and config_of(run)["dataset"] == record


def test_a_study_resume_refuses_another_configuration(tmp_path):
    """A study's row folder holds one configuration: another --hidden (say) is refused in one
    line, before anything is written, instead of failing on the checkpoint's shapes."""
    from numpy_vae.training.runs import ConfigMismatch

    config = TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64, epochs=1)
    run = tmp_path / "row"
    data = Dataset(*(synthetic_arrays()[k] for k in KEYS))
    train_or_resume(config, data, run, {"data": "MNIST"})
    before = (run / "config.json").read_text()
    wider = TrainConfig(hidden_dims=(16,), latent_dim=2, batch_size=64, epochs=2)
    with pytest.raises(ConfigMismatch, match=r"hidden_dims \[8\] \(asked: \[16\]\)"):
        train_or_resume(wider, data, run, {"data": "MNIST"})
    assert last_metrics(run)["epoch"] == 1 and (run / "config.json").read_text() == before
    config.epochs = 2  # more epochs of the same configuration continue
    train_or_resume(config, data, run, {"data": "MNIST"})
    assert last_metrics(run)["epoch"] == 2


# -- item 3: summarize_runs.py marks a stale evaluation ----------------------------------------


def test_summary_marks_an_evaluation_of_an_earlier_epoch_stale(data_file, tmp_path):
    assert train_main(small_args(data_file, tmp_path, "beta4", "--epochs", "1")) == 0
    run = tmp_path / "beta4"
    assert evaluate_main([str(run), "--iw-samples", "5", "--no-progress"]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    (row,) = summarize_runs([run])
    assert row["test_iw_nll"] == evaluation["test_iw_nll"]  # current: shown
    assert "stale" not in format_study_table([row])

    assert train_main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    (row,) = summarize_runs([run])
    assert row["epochs"] == 2 and row["test_iw_nll"] is None  # epoch 1's figure is not shown
    assert row["test_neg_elbo"] == last_metrics(run)["test_neg_elbo"]  # the current figures
    assert "(stale: epoch 1)" in format_study_table([row])
    assert row["stale_evaluation"] == "epoch 1"
    # What the evaluation recorded that it evaluated.
    assert evaluation["epoch"] == 1 and evaluation["iw_samples"] == 5
    assert evaluation["test_images"] == 100 and len(evaluation["checkpoint_sha256"]) == 64
    assert evaluation["data_sha256"] == config_of(run)["dataset"]["sha256"]


def test_summary_marks_an_evaluation_of_another_checkpoint_stale(data_file, tmp_path):
    """The same epoch, but the run was trained again from the start with another seed."""
    assert train_main(small_args(data_file, tmp_path, "r", "--epochs", "1")) == 0
    run = tmp_path / "r"
    assert evaluate_main([str(run), "--iw-samples", "5", "--no-progress"]) == 0
    kept = (run / "evaluation.json").read_bytes()
    (run / "checkpoint.npz").unlink()
    assert train_main(small_args(data_file, tmp_path, "r", "--epochs", "1", "--seed", "1")) == 0
    (run / "evaluation.json").write_bytes(kept)
    (row,) = summarize_runs([run])
    assert row["test_iw_nll"] is None
    assert row["stale_evaluation"] == "another checkpoint of epoch 1"
    assert "(stale: another checkpoint of epoch 1)" in format_study_table([row])


# -- issue 24, item 9: a subset of the test set, and every evaluation kept ---------------------


def evaluations_of(run):
    return [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]


def without_timing(evaluation):
    return {k: v for k, v in evaluation.items() if k != "seconds"}


def test_evaluate_a_subset_drawn_once(data_file, tmp_path):
    from numpy_vae.training.evaluate import test_subset
    from numpy_vae.training.runs import evaluate_run
    from numpy_vae.training.trainer import EVAL_EPS, Trainer, derived_seed, evaluate_elbo

    assert train_main(small_args(data_file, tmp_path, "sub", "--epochs", "1")) == 0
    run = tmp_path / "sub"
    argv = [str(run), "--test-images", "30", "--iw-samples", "3", "--no-progress"]
    assert evaluate_main(argv) == 0
    first = json.loads((run / "evaluation.json").read_text())
    assert evaluate_main(argv) == 0
    second = json.loads((run / "evaluation.json").read_text())
    assert first["test_images"] == second["test_images"] == 30
    assert without_timing(first) == without_timing(second)  # the same 30 images, the same noise
    assert first["test_neg_elbo"] != pytest.approx(last_metrics(run)["test_neg_elbo"], 1e-6)

    # The 30 images are test_subset's random draw (seed 0), the studies' own, not the first 30.
    from numpy_vae.training.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoint.npz")
    trainer = Trainer(TrainConfig.from_json(state["config"]), Dataset(**synthetic_arrays()))
    trainer.load_state_dict(state)
    index, x = test_subset(trainer.test_x, 30, np)
    assert len(index) == 30 and not np.array_equal(index, np.arange(30))
    rng = trainer.backend.rng(derived_seed(trainer.config.seed, EVAL_EPS, trainer.epoch))
    expected = evaluate_elbo(trainer.model, x, None, rng, trainer.config.eval_batch_size)
    assert first["test_neg_elbo"] == pytest.approx(expected["neg_elbo"], 1e-9)
    assert evaluate_run(trainer, 0, test_images=30)["test_neg_elbo"] == first["test_neg_elbo"]
    # All of them (the default, or N = the test set's size) is the evaluation as before.
    whole = evaluate_run(trainer, 0, test_images=100)
    assert without_timing(whole) == without_timing(evaluate_run(trainer, 0))
    assert whole["test_images"] == 100


def test_more_test_images_than_the_test_set_is_refused(data_file, tmp_path, usage_error):
    assert train_main(small_args(data_file, tmp_path, "big", "--epochs", "1")) == 0
    run = tmp_path / "big"
    err = usage_error(evaluate_main, [str(run), "--test-images", "101", "--iw-samples", "0"])
    assert "--test-images 101" in err and "100" in err
    assert not (run / "evaluation.json").exists() and not (run / "evaluations.jsonl").exists()
    usage_error(evaluate_main, [str(run), "--test-images", "0"])


def test_every_evaluation_is_kept(data_file, tmp_path):
    assert train_main(small_args(data_file, tmp_path, "keep", "--epochs", "1")) == 0
    run = tmp_path / "keep"
    assert evaluate_main([str(run), "--iw-samples", "2", "--no-progress"]) == 0
    argv = [str(run), "--iw-samples", "4", "--test-images", "20", "--no-progress"]
    assert evaluate_main(argv) == 0
    kept = evaluations_of(run)
    assert [(e["iw_samples"], e["test_images"]) for e in kept] == [(2, 100), (4, 20)]
    assert json.loads((run / "evaluation.json").read_text()) == kept[1]  # the latest
    (row,) = summarize_runs([run])  # summarize_runs reads the latest, as before
    assert row["iw_samples"] == 4 and row["test_iw_nll"] == kept[1]["test_iw_nll"]


def test_a_failed_evaluation_write_leaves_both_files_whole(data_file, tmp_path, monkeypatch):
    """Both files are replaced atomically: a write that fails at its end (a full disk, say)
    leaves evaluations.jsonl and evaluation.json as they were, and no temporary file."""
    assert train_main(small_args(data_file, tmp_path, "atomic", "--epochs", "1")) == 0
    run = tmp_path / "atomic"
    assert evaluate_main([str(run), "--iw-samples", "2", "--no-progress"]) == 0
    before = {name: (run / name).read_bytes() for name in ("evaluation.json", "evaluations.jsonl")}

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    assert evaluate_main([str(run), "--iw-samples", "4", "--no-progress"]) == 2
    monkeypatch.undo()
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not list(run.glob(".*.part"))


def test_an_evaluation_written_without_the_history_is_kept_too(data_file, tmp_path):
    """evaluation.json written alone (by train.py --iw-samples, or before evaluations.jsonl
    existed) goes into the history before the next evaluation replaces it."""
    assert train_main(small_args(data_file, tmp_path, "old", "--epochs", "1")) == 0
    run = tmp_path / "old"
    assert evaluate_main([str(run), "--iw-samples", "2", "--no-progress"]) == 0
    (run / "evaluations.jsonl").unlink()  # as an evaluation from before this change left it
    older = json.loads((run / "evaluation.json").read_text())
    assert evaluate_main([str(run), "--iw-samples", "3", "--no-progress"]) == 0
    assert evaluate_main([str(run), "--iw-samples", "4", "--no-progress"]) == 0
    kept = evaluations_of(run)
    assert kept[0] == older and [e["iw_samples"] for e in kept] == [2, 3, 4]


# -- gradient_variance.py --run studies the run on its own data --------------------------------


@pytest.fixture
def narrow_run(tmp_path, fake_mnist, monkeypatch):
    """A run trained on a 64-pixel data file; MNIST loaded anywhere (the command line or the
    studies' own loader) is recorded in ``fake_mnist`` and is 784 pixels wide."""
    import numpy_vae.training.data as data_module

    def load_mnist(data_dir=None, **kwargs):
        fake_mnist.append(data_dir)
        return MNIST(**synthetic_arrays(seed=7), source="cache")

    monkeypatch.setattr(data_module, "load_mnist", load_mnist)
    data = narrow_file(tmp_path / "narrow64.npz", width=64)
    assert train_main(small_args(data, tmp_path, "narrow64", "--epochs", "1")) == 0
    return tmp_path / "narrow64", data


def test_gradient_variance_studies_a_run_on_its_own_data(narrow_run, tmp_path, fake_mnist, capsys):
    run, data = narrow_run
    capsys.readouterr()
    common = ["--run", str(run), "--data-dir", str(tmp_path), "--no-progress"]
    argv = [*common, "--repeats", "20", "--sample-counts", "1,10,100", "--plot",
            str(tmp_path / "v.png"), "--json", str(tmp_path / "v.json")]  # fmt: skip
    assert gradient_variance_main(argv) == 0
    case = json.loads((tmp_path / "v.json").read_text())["decoder"]["case"]
    assert f"test image 0 of {data}" in case
    argv = [*common, "--snr", "--sample-counts", "1,4,16", "--gaussian-draws", "300", "--draws",
            "5", "--batch-size", "3", "--max-params", "50", "--estimators", "reparam,dreg",
            "--plot", str(tmp_path / "snr.png")]  # fmt: skip
    assert gradient_variance_main(argv) == 0
    out = capsys.readouterr().out
    assert f"the first 3 test images of {data}" in out
    assert fake_mnist == []  # MNIST was never loaded


def test_gradient_variance_refuses_a_run_whose_data_is_missing(
    narrow_run, tmp_path, usage_error, capsys
):
    run, data = narrow_run
    data.rename(tmp_path / "moved.npz")
    for extra in ([], ["--snr"]):
        err = usage_error(gradient_variance_main, ["--run", str(run), "--plot",
                                                   str(tmp_path / "p.png"), *extra])  # fmt: skip
        assert str(data) in err and "--data-file" in err
    moved = tmp_path / "moved.npz"
    argv = ["--run", str(run), "--data-file", str(moved), "--sample-counts", "1,10,100",
            "--repeats", "20", "--plot", str(tmp_path / "p.png"), "--no-progress"]  # fmt: skip
    assert gradient_variance_main(argv) == 0  # the copy is used
    assert f"test image 0 of {moved}" in capsys.readouterr().out
    for extra, message in ((["--snr", "--batch-size", "51"], "--batch-size 51"),
                           (["--image", "50"], "--image must lie in [0, 50)")):  # fmt: skip
        err = usage_error(gradient_variance_main, [*argv[:4], *extra])
        assert message in err and str(moved) in err
    err = usage_error(gradient_variance_main, ["--data-file", str(moved)])  # without --run
    assert "--data-file needs --run" in err
