"""The beta study end to end on a tiny grid: train, measure, resume, read back, table, figure."""

import json
import re

import numpy as np

from numpy_vae.experiments.disentanglement_study import (
    BASE,
    collect,
    markdown_table,
    plot_study,
    row_config,
    run_name,
    run_row,
    study_data,
)
from numpy_vae.training.dsprites import FactorGrid

TINY = FactorGrid(scales=2, orientations=4, positions_x=4, positions_y=4, image_size=16)
QUICK = {"hidden_dims": (32,), "batch_size": 32}


def test_the_rows_share_the_papers_mlp_and_differ_in_beta():
    config = row_config(4.0)
    assert config.hidden_dims == (1200, 1200) and config.latent_dim == 10 and config.beta == 4.0
    assert row_config(0.5, epochs=2).epochs == 2 and BASE["epochs"] == 30
    assert run_name(0.5) == "disentanglement_beta0.5" and run_name(16, 2).endswith("16_seed2")


def test_a_row_trains_measures_resumes_and_is_read_back(tmp_path, capsys):
    data = study_data(TINY, n_train=300, n_test=84)
    first = run_row(4.0, data, tmp_path, epochs=1, metric_points=300, **QUICK)
    assert first["epoch"] == 1 and 0 <= first["mig"] <= 1 and 0 <= first["factor_vae"] <= 1
    assert len(first["mig_gaps"]) == 5 and first["test_recon"] > 0
    run_dir = tmp_path / run_name(4.0)
    assert json.loads((run_dir / "config.json").read_text())["beta"] == 4.0
    assert (run_dir / "traversal.png").is_file()
    assert run_row(4.0, data, tmp_path, epochs=1, metric_points=300, **QUICK) == first  # kept
    second = run_row(4.0, data, tmp_path, epochs=2, metric_points=300, **QUICK)  # resumed
    assert second["epoch"] == 2 and "resuming" in capsys.readouterr().out
    rows = collect(tmp_path)
    assert [r["beta"] for r in rows] == [4.0]
    assert "| 4 |" in markdown_table(rows)
    plot_study(rows, tmp_path / "study.png")
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(second["test_kl"])


def test_the_command_line_trains_resumes_tabulates_and_draws(tmp_path, capsys):
    from numpy_vae.cli.disentanglement_study import main

    quick = ["--image-size", "16", "--n-train", "200", "--n-test", "50", "--hidden", "16"]
    quick += ["--metric-points", "200", "--betas", "1,4", "--runs-dir", str(tmp_path)]
    assert main([*quick, "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "beta 1 (epoch 1)" in out and "beta 4 (epoch 1)" in out and "MIG" in out
    assert re.search(r"epoch +1/1", out)  # trained
    assert main([*quick, "--epochs", "1", "--no-progress"]) == 0  # measured: read back
    again = capsys.readouterr().out
    assert "beta 4 (epoch 1)" in again and not re.search(r"epoch +1/1", again)
    assert main([*quick, "--table"]) == 0
    assert "| 4 |" in capsys.readouterr().out
    assert main([*quick, "--figure", str(tmp_path / "beta.png")]) == 0
    assert (tmp_path / "beta.png").is_file()


def test_the_command_line_refuses_in_one_line(tmp_path, usage_error):
    from numpy_vae.cli.disentanglement_study import main

    assert "no measured row" in usage_error(main, ["--runs-dir", str(tmp_path), "--table"])
    assert "--image-size" in usage_error(main, ["--image-size", "4"])
    assert "at most 737280" in usage_error(main, ["--n-train", "737280"])
    assert "finite number >= 0" in usage_error(main, ["--betas", "1,-2"])


def test_another_setting_in_the_same_folder_is_refused_not_read_back(tmp_path, usage_error):
    """A measured row is read back only for the configuration that measured it: the same
    folder asked for another --hidden refuses in one line (else the 16-wide row's figures
    would be printed as the 32-wide row's)."""
    from numpy_vae.cli.disentanglement_study import main

    quick = ["--image-size", "16", "--n-train", "200", "--n-test", "50", "--betas", "1"]
    quick += ["--metric-points", "200", "--runs-dir", str(tmp_path), "--epochs", "1"]
    assert main([*quick, "--hidden", "16", "--no-progress"]) == 0
    err = usage_error(main, [*quick, "--hidden", "32", "--no-progress"])
    assert "hidden_dims [16] (asked: [32])" in err and "--runs-dir" in err
