"""Training on the multi-sample bounds, the Burda et al. 2016 protocol, and its study script."""

import json
import math

import numpy as np
import pytest
from test_train import read_metrics, small_args, synthetic_arrays

from numpy_vae.cli import train_main
from numpy_vae.cli.burda_study import main as study_main
from numpy_vae.experiments.burda import (
    BURDA2016,
    initialize,
    learning_rate,
    markdown_table,
    run_row,
    stage_ends,
)
from numpy_vae.training import presets
from numpy_vae.training.checkpoint import load_checkpoint
from numpy_vae.training.data import Dataset
from numpy_vae.training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, **synthetic_arrays(200, 60))
    return path


def tiny_data():
    return Dataset(**synthetic_arrays(200, 60))


def test_the_schedule_is_the_papers():
    assert stage_ends() == [1, 4, 13, 40, 121, 364, 1093, 3280]
    rates = {epoch: learning_rate(1e-3, epoch) for epoch in (1, 2, 4, 5, 13, 14, 1094, 3280)}
    expected = {1: 0, 2: 1, 4: 1, 5: 2, 13: 2, 14: 3, 1094: 7, 3280: 7}
    for epoch, stage in expected.items():
        assert rates[epoch] == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-15)
    # The official code's rounded rates differ from these by 1.6% at most (stage 5).
    for i in range(8):
        assert 1e-4 * round(10 ** (1 - i / 7), 1) == pytest.approx(1e-3 * 10 ** (-i / 7), 1.7e-2)
    assert presets.lr_schedule("constant")(1e-3, 500) == 1e-3
    # The names of a configuration resolve to the preset's functions (registered on import).
    assert presets.lr_schedule("burda2016") is learning_rate
    assert presets.initializer("burda2016") is initialize


def test_the_trainer_follows_its_schedule_epoch_by_epoch():
    """Each epoch's Adam rate is the schedule's; a schedule planted one stage late is seen."""
    small = {"hidden_dims": (8,), "latent_dim": 2, "batch_size": 100, "epochs": 5}
    config = TrainConfig(**{**BURDA2016, **small})
    trainer = Trainer(config, tiny_data())
    rates = [trainer.train_epoch()["lr"] for _ in range(5)]
    assert rates == [learning_rate(1e-3, epoch) for epoch in range(1, 6)]
    late = Trainer(config, tiny_data(), lr_schedule=lambda lr, epoch: learning_rate(lr, epoch - 1))
    late_rates = [late.train_epoch()["lr"] for _ in range(5)]
    assert late_rates != rates and late_rates[1] == rates[0]


def test_a_schedule_whose_module_is_not_loaded_is_a_clear_error(monkeypatch):
    """Training cannot import the experiments ring; a name only a preset defines says where."""
    monkeypatch.delitem(presets._SCHEDULES, "burda2016")
    with pytest.raises(ValueError, match=r"lr_schedule 'burda2016' is defined by "
                       r"numpy_vae\.experiments\.burda, which is not loaded"):  # fmt: skip
        Trainer(TrainConfig(lr_schedule="burda2016"), tiny_data())
    monkeypatch.delitem(presets._INITIALIZERS, "burda2016")
    with pytest.raises(ValueError, match="pass the Trainer initializer="):
        Trainer(TrainConfig(init="burda2016"), tiny_data())
    with pytest.raises(ValueError, match="not a name configurations know"):
        presets.register("cosine", lr_schedule=learning_rate)
    # Given to the trainer as callables, they need no registration.
    trainer = Trainer(
        TrainConfig(init="burda2016", lr_schedule="burda2016", hidden_dims=(8,), latent_dim=2),
        tiny_data(),
        lr_schedule=learning_rate,
        initializer=initialize,
    )
    assert not trainer.model.params["encoder.0.bias"].any()  # Burda's zero biases


def test_burda_initialization_and_adam_settings():
    data = tiny_data()
    config = TrainConfig(**{**BURDA2016, "hidden_dims": (12, 10), "latent_dim": 3})
    trainer = Trainer(config, data)
    params = trainer.model.params
    for name, p in params.items():
        if name.endswith(".bias") and name != "decoder.4.bias":
            assert not p.any(), name
    w = params["encoder.0.weight"]  # Glorot for (784, 12): U(-a, a), a = sqrt(6 / 796)
    a = math.sqrt(6 / (784 + 12))
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.95 * a
    head = params["head.weight"]  # mu rows Glorot for (10, 3), logvar rows twice that
    a = math.sqrt(6 / (10 + 3))
    assert np.abs(head[:3]).max() <= a and np.abs(head[3:]).max() <= 2 * a
    assert np.abs(head[3:]).max() > a
    mean = np.clip(data.train_images.astype(np.float64).mean(axis=0) / 255, 1e-3, 0.999)
    np.testing.assert_allclose(params["decoder.4.bias"], np.log(mean / (1 - mean)), rtol=1e-6)
    assert trainer.optimizer.eps == 1e-4
    assert trainer.optimizer.betas == (0.9, 0.999)  # the paper's (the official code's differ)


def test_an_iwae_run_trains_resumes_exactly_and_reports_its_bound(data_file, tmp_path):
    flags = ("--objective", "iwae", "--k", "4", "--estimator", "dreg", "--binarize", "dynamic")
    assert train_main(small_args(data_file, tmp_path, "straight", "--epochs", "3", *flags)) == 0
    assert train_main(small_args(data_file, tmp_path, "split", "--epochs", "1", *flags)) == 0
    resume = ["--resume", str(tmp_path / "split"), "--epochs", "3", "--no-progress"]
    assert train_main([*resume, "--data-file", str(data_file)]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    for name in a["params"]:
        np.testing.assert_array_equal(a["params"][name], b["params"][name])
    metrics = read_metrics(tmp_path / "straight")
    assert metrics == read_metrics(tmp_path / "split")
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    # The negative IWAE bound lies below the negative ELBO on the same data (both on test).
    assert all(m["test_loss"] < m["test_neg_elbo"] for m in metrics)
    stored = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert (stored["objective"], stored["k"], stored["estimator"]) == ("iwae", 4, "dreg")


def test_protocol_flag_sets_the_preset_and_given_flags_win(data_file, tmp_path):
    args = small_args(data_file, tmp_path, "p", "--protocol", "burda2016", "--epochs", "1")
    args += ["--objective", "vae"]
    assert train_main(args) == 0
    stored = json.loads((tmp_path / "p" / "config.json").read_text())
    # --hidden 16, --latent-dim 2 and --batch-size 64 (small_args) beat the preset's values.
    assert stored["hidden_dims"] == [16] and stored["latent_dim"] == 2
    assert stored["batch_size"] == 64
    for key in ("activation", "binarize", "adam_eps", "init", "lr_schedule"):
        assert stored[key] == BURDA2016[key], key
    resume = ["--resume", str(tmp_path / "p"), "--protocol", "burda2016"]
    assert train_main([*resume, "--data-file", str(data_file)]) == 2  # the stored config rules
    resume = ["--resume", str(tmp_path / "p"), "--epochs", "2", "--no-progress"]
    assert train_main([*resume, "--data-file", str(data_file)]) == 0  # stage 1: the second rate
    assert [m["lr"] for m in read_metrics(tmp_path / "p")] == [1e-3, 1e-3 * 10 ** (-1 / 7)]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--k", "5"], "k > 1 needs a multi-sample objective"),
        (["--objective", "iwae", "--k", "5", "--kl-warmup", "2"], "kl_warmup weights the elbo"),
        (["--objective", "vae", "--estimator", "stl"], "estimator 'stl' is an encoder gradient"),
        (["--objective", "iwae", "--beta", "2"], "beta and free_bits act on the analytic KL"),
        (["--adam-eps", "0"], "--adam-eps: must be a finite number > 0"),
    ],
)
def test_bad_objective_flags_are_one_line(data_file, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:  # argparse exits; the others return 2
        raise SystemExit(train_main(small_args(data_file, tmp_path, "bad", *extra)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_the_study_measures_each_stage_once_and_resumes(tmp_path, monkeypatch):
    import numpy_vae.experiments.burda as burda

    small = {**BURDA2016, "hidden_dims": (8,), "latent_dim": 2, "batch_size": 50}
    monkeypatch.setattr(burda, "BURDA2016", small)
    data = tiny_data()
    first = run_row("iwae_k5", data, tmp_path, stages=2, iw_k=7, test_images=20)
    assert [s["epoch"] for s in first] == [1, 4]
    run = tmp_path / "burda_iwae_k5"
    assert sorted(p.name for p in run.glob("stage_*.json")) == ["stage_0.json", "stage_1.json"]
    assert all(s["test_images"] == 20 and s["iw_k"] == 7 for s in first)
    assert first[1]["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert all(math.isfinite(s["test_iw_nll"]) and s["test_iw_nll_se"] > 0 for s in first)
    again = run_row("iwae_k5", data, tmp_path, stages=2, iw_k=7, test_images=20)
    assert again == first  # read back, nothing retrained
    assert len(read_metrics(run)) == 4
    table = markdown_table({"iwae_k5": first})
    assert "IWAE k=5" in table and "85.54" in table and "20 images" in table
    monkeypatch.setattr("sys.argv", ["burda_study.py"])
    assert study_main(["--table", "--runs-dir", str(tmp_path)]) == 0
    assert study_main(["--rows", "nope", "--runs-dir", str(tmp_path)]) == 2
