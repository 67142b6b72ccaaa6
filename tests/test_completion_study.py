"""The completion study end to end on synthetic 8 x 8 images: train, measure, resume, read back,
table, figures, and the one-line refusals of its command line."""

import json

import numpy as np
import pytest

from numpy_vae.experiments.completion_study import (
    BASE,
    PYRO,
    collect,
    load_row,
    markdown_table,
    row_config,
    run_name,
    run_row,
    study_data,
)
from numpy_vae.training.runs import ConfigMismatch

QUICK = {"widths": (16,), "latent_dim": 3, "batch_size": 32}


def images(rng, n):
    """Binary 8 x 8 strokes: a bar on the left, and on the right a bar or nothing (the right
    half has two plausible completions of the same left half)."""
    x = np.zeros((n, 8, 8), np.uint8)
    x[:, 1:7, 1:3] = 255
    x[rng.random(n) < 0.5, 1:7, 5:7] = 255
    noise = rng.random((n, 8, 8)) < 0.03
    return np.where(noise, 255 - x, x).reshape(n, 64).astype(np.uint8)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return study_data(images(rng, 200), images(rng, 60), "synthetic strokes")


@pytest.fixture()
def npz(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "strokes.npz"
    np.savez(path, train_images=images(rng, 200), test_images=images(rng, 40))
    return path


def test_the_rows_share_pyros_sizes_and_differ_in_model_and_quadrants(data):
    assert BASE["widths"] == (500, 500) and BASE["latent_dim"] == 200 and BASE["lr"] == 1e-3
    assert PYRO[2] == (61.9, 51.0)
    cvae, baseline = row_config("cvae", 2, data), row_config("baseline", 2, data)
    assert cvae["widths"] == [500, 500] and cvae["side"] == 8 and "latent_dim" not in baseline
    assert run_name("cvae", 3) == "completion_cvae_given3"
    assert run_name("baseline", 1, 2) == "completion_baseline_given1_seed2"
    with pytest.raises(ValueError, match="unknown model"):
        row_config("vae", 1, data)
    hybrid = row_config("hybrid", 2, data)
    assert hybrid["alpha"] == 0.5 and "alpha" not in cvae
    assert "alpha" not in row_config("gsnn", 2, data)
    assert row_config("hybrid", 2, data, alpha=0.25)["alpha"] == 0.25
    with pytest.raises(ValueError, match="unknown settings alpha"):
        row_config("cvae", 2, data, alpha=0.25)


def test_a_row_trains_measures_resumes_and_is_read_back(data, tmp_path, capsys):
    kw = {"test_images": 50, "iw_samples": (1, 10), **QUICK}
    first = run_row("cvae", 2, data, tmp_path, epochs=1, **kw)
    assert first["epoch"] == 1 and first["test_images"] == 50 and first["iw_samples"] == [1, 10]
    assert set(first["neg_cll_iw"]) == {"1", "10"}
    assert first["neg_cll_iw"]["10"] < first["neg_elbo"]  # the tighter bound
    run_dir = tmp_path / run_name("cvae", 2)
    assert json.loads((run_dir / "config.json").read_text())["model"] == "cvae"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert run_row("cvae", 2, data, tmp_path, epochs=1, **kw) == first  # read back
    capsys.readouterr()
    second = run_row("cvae", 2, data, tmp_path, epochs=2, **kw)  # resumed
    assert second["epoch"] == 2 and "resuming" in capsys.readouterr().out
    # A row stopped after one epoch and continued trains as one that ran through.
    straight = run_row("cvae", 2, data, tmp_path / "straight", epochs=2, **kw)
    resumed = load_row(run_dir / "checkpoint.npz")["params"]
    direct = load_row(tmp_path / "straight" / run_name("cvae", 2) / "checkpoint.npz")["params"]
    assert all(np.array_equal(resumed[k], direct[k]) for k in direct)
    assert straight["neg_elbo"] == second["neg_elbo"]
    # Asked for other measurement settings, the row is measured again, not trained again.
    capsys.readouterr()
    third = run_row("cvae", 2, data, tmp_path, epochs=2, **{**kw, "iw_samples": (5,)})
    assert set(third["neg_cll_iw"]) == {"5"} and "epoch" not in capsys.readouterr().out
    baseline = run_row("baseline", 2, data, tmp_path, epochs=1, test_images=50, **QUICK)
    assert baseline["neg_cll"] > 0 and "neg_elbo" not in baseline
    found = collect(tmp_path)
    assert set(found) == {("cvae", 2), ("baseline", 2)}
    table = markdown_table(found)
    assert "| 2 | 1/2 |" in table and "| 61.9 | 51.0 |" in table and "CVAE S=5" in table


def test_the_gsnn_and_hybrid_rows_train_measure_resume_and_are_read_back(data, tmp_path):
    """Each row reports the estimates that apply to it (the GSNN has no recognition network, so
    no ELBO and no importance sampling); stopped after one epoch and continued, a row ends with
    the parameters of one that ran through; another alpha is another configuration."""
    kw = {"test_images": 40, "iw_samples": (1, 30), **QUICK}
    gsnn = run_row("gsnn", 2, data, tmp_path, epochs=2, **kw)
    assert set(gsnn["neg_cll_mc"]) == {"1", "30"} and "neg_elbo" not in gsnn
    assert "neg_cll_iw" not in gsnn and gsnn["iw_samples"] == [1, 30]
    hybrid = run_row("hybrid", 2, data, tmp_path, epochs=1, **kw)
    assert set(hybrid) >= {"neg_elbo", "neg_cll_iw", "neg_cll_mc"}
    assert hybrid["config"]["alpha"] == 0.5
    assert run_row("hybrid", 2, data, tmp_path, epochs=1, **kw) == hybrid  # read back
    resumed = run_row("hybrid", 2, data, tmp_path, epochs=2, **kw)
    straight = run_row("hybrid", 2, data, tmp_path / "straight", epochs=2, **kw)
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert resumed["neg_cll_mc"] == straight["neg_cll_mc"]
    with pytest.raises(ConfigMismatch, match=r"alpha 0.5 \(asked: 0.25\)"):
        run_row("hybrid", 2, data, tmp_path, epochs=2, alpha=0.25, **kw)
    table = markdown_table(collect(tmp_path))
    assert "| given | model | epochs | -ELBO | IS S=1 | IS S=30 | prior S=1 | prior S=30 |" in table
    assert "| 2 | gsnn | 2 |  |  |  |" in table and "| 2 | hybrid | 2 |" in table
    assert "Pyro" not in table  # no baseline or CVAE row: no table beside Pyro's


def test_another_configuration_in_the_folder_is_refused(data, tmp_path):
    kw = {"test_images": 20, **QUICK}
    run_row("baseline", 1, data, tmp_path, epochs=2, **kw)
    with pytest.raises(ConfigMismatch, match=r"widths \[16\] \(asked: \[8\]\)"):
        run_row("baseline", 1, data, tmp_path, epochs=2, **{**kw, "widths": (8,)})
    with pytest.raises(ConfigMismatch, match=r"lr 0.001 \(asked: 0.01\)"):
        run_row("baseline", 1, data, tmp_path, epochs=2, lr=1e-2, **kw)
    with pytest.raises(ValueError, match="already trained 2 epochs, more than 1"):
        run_row("baseline", 1, data, tmp_path, epochs=1, **kw)


def test_the_command_line_trains_resumes_tabulates_and_draws(npz, tmp_path, capsys):
    from numpy_vae.cli.completion_study import main

    quick = ["--data-file", str(npz), "--runs-dir", str(tmp_path / "runs"), "--given", "1,3"]
    quick += ["--hidden", "16", "--latent-dim", "3", "--batch-size", "50", "--no-progress"]
    quick += ["--iw-samples", "1,10", "--test-images", "30"]
    assert main([*quick, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "cvae given 3 (epoch 1): -ELBO" in out and "baseline given 1 (epoch 1)" in out
    assert "gsnn given 1 (epoch 1): -log p(hidden|visible) (z from the prior) S=1" in out
    assert "hybrid given 3 (epoch 1): -ELBO" in out
    assert "epoch   1/1" in out  # trained
    assert main([*quick, "--epochs", "1"]) == 0  # measured: read back
    again = capsys.readouterr().out
    assert "cvae given 1 (epoch 1)" in again and "epoch   1/1" not in again
    assert main([*quick, "--epochs", "2", "--models", "cvae", "--given", "3"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert main([*quick, "--table"]) == 0
    table = capsys.readouterr().out
    assert "| 1 | 1 |" in table and "| 3 | 1/2 |" in table and "| 100.4 | 71.8 |" in table
    assert main([*quick, "--figures", str(tmp_path / "figs")]) == 0
    assert "wrote" in capsys.readouterr().out
    for n in (1, 3):
        assert (tmp_path / "figs" / f"completion_given{n}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figs" / "completion_given2.png").exists()


def test_the_command_line_refuses_in_one_line(npz, tmp_path, usage_error):
    from numpy_vae.cli.completion_study import main

    runs = ["--runs-dir", str(tmp_path), "--data-file", str(npz)]
    assert "no measured row" in usage_error(main, [*runs, "--table"])
    assert "no measured row" in usage_error(main, [*runs, "--figures", str(tmp_path / "f")])
    assert "unknown model(s) vae" in usage_error(main, [*runs, "--models", "cvae,vae"])
    assert "1, 2 or 3 quadrants" in usage_error(main, [*runs, "--given", "4"])
    assert "positive integers" in usage_error(main, [*runs, "--iw-samples", "10,0"])
    assert "--epochs" in usage_error(main, [*runs, "--epochs", "0"])
    odd = tmp_path / "odd.npz"
    np.savez(
        odd, train_images=np.zeros((10, 49), np.uint8), test_images=np.zeros((5, 49), np.uint8)
    )
    assert "even side" in usage_error(main, ["--runs-dir", str(tmp_path), "--data-file", str(odd)])


def test_another_setting_in_the_same_folder_is_refused_not_read_back(npz, tmp_path, usage_error):
    """A measured row is read back only for the configuration that measured it: the same
    folder asked for another --hidden refuses in one line."""
    from numpy_vae.cli.completion_study import main

    quick = ["--data-file", str(npz), "--runs-dir", str(tmp_path), "--given", "2"]
    quick += ["--models", "baseline", "--epochs", "1", "--test-images", "20", "--no-progress"]
    assert main([*quick, "--hidden", "16"]) == 0
    err = usage_error(main, [*quick, "--hidden", "32"])
    assert "widths [16] (asked: [32])" in err and "--runs-dir" in err
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(9)
    np.savez(other, train_images=images(rng, 100), test_images=images(rng, 20))
    err = usage_error(main, [*quick, "--hidden", "16", "--data-file", str(other)])
    assert "data_sha256" in err
    figures = ["--figures", str(tmp_path / "figs"), "--data-file", str(other)]
    assert "trained on other data" in usage_error(main, [*quick, "--hidden", "16", *figures])
    checkpoint = tmp_path / run_name("baseline", 2) / "checkpoint.npz"
    checkpoint.write_bytes(b"not an archive")
    err = usage_error(main, [*quick, "--hidden", "16"])
    assert "not a completion study checkpoint" in err and str(checkpoint) in err
