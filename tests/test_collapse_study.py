"""The posterior-collapse study: its mutual-information estimate, rows, resume and figures."""

import math

import numpy as np
import pytest
from test_train import synthetic_arrays

from numpy_vae.cli.collapse_study import main as study_main
from numpy_vae.experiments import collapse
from numpy_vae.experiments.collapse import markdown_table, mutual_information, run_row
from numpy_vae.training.trainer import Dataset


def test_mutual_information_is_zero_without_information_and_log_n_with_all_of_it():
    """q(z|x) the same for every x: no information (about 0). Posteriors far apart and
    narrow: each z identifies its x, and the estimate reaches its ceiling log N."""
    rng = np.random.default_rng(0)
    n, latent = 400, 3
    same = mutual_information(np.zeros((n, latent)), np.zeros((n, latent)), rng)
    assert abs(same) < 1e-12
    mu = rng.standard_normal((n, latent)) * 50
    apart = mutual_information(mu, np.full((n, latent), -8.0), rng)
    assert apart == pytest.approx(math.log(n), abs=1e-6)
    # In between, for a Gaussian channel z = mu + noise with mu ~ N(0, s^2) the information is
    # (L/2) log(1 + s^2 / sigma^2): 1.5 log 2 = 1.04 nats for s = sigma = 1 (the estimate is
    # biased low by the finite N, and noisy).
    mid = mutual_information(rng.standard_normal((4000, latent)), np.zeros((4000, latent)), rng)
    assert 0.85 < mid < 1.1


def test_rows_share_one_budget_and_differ_in_what_they_name():
    configs = {row: collapse.row_config(row) for row in collapse.ROWS}
    assert {c.epochs for c in configs.values()} == {collapse.BASE["epochs"]}
    assert {c.binarize for c in configs.values()} == {"dynamic"}
    assert configs["mlp"].decoder == "mlp" and configs["made"].decoder == "made"
    assert configs["made_fb_0.5"].free_bits == 0.5 and configs["made_b2"].beta == 2.0
    assert not configs["made_no_z"].made_z
    with pytest.raises(ValueError, match="unknown row"):
        collapse.row_config("nope")


def test_a_row_trains_measures_once_and_reads_back(tmp_path, monkeypatch):
    small = {**collapse.BASE, "hidden_dims": (8,), "latent_dim": 2, "batch_size": 50}
    monkeypatch.setattr(collapse, "BASE", small)
    monkeypatch.setitem(
        collapse.ROWS, "made_no_z", ({"decoder": "made", "made_hidden": (6,), "made_z": False}, "t")
    )
    monkeypatch.setitem(collapse.ROWS, "made", ({"decoder": "made", "made_hidden": (6,)}, "m"))
    data = Dataset(**synthetic_arrays(200, 60))
    first = run_row("made_no_z", data, tmp_path, epochs=2, iw_k=5, test_images=20)
    assert first["epoch"] == 2 and first["test_images"] == 20 and first["iw_k"] == 5
    # A decoder blind to z: the exact NLL on the same images, and the IW estimate close to it
    # (q is not exactly the prior after two epochs, so not equal).
    assert first["test_exact_nll_subset"] > 0
    assert abs(first["test_iw_nll"] - first["test_exact_nll_subset"]) < 1.0
    assert run_row("made_no_z", data, tmp_path, epochs=2, iw_k=5, test_images=20) == first
    run_row("made", data, tmp_path, epochs=1, iw_k=5, test_images=20)
    table = markdown_table(collapse.collect(tmp_path))
    assert "exact:" in table and "k = 5 importance samples on 20" in table
    figures = tmp_path / "fig"
    assert study_main(["--figures", str(figures), "--runs-dir", str(tmp_path)]) == 0
    assert (figures / "kl_per_dim.png").stat().st_size > 0
    assert (figures / "samples.png").stat().st_size > 0
    assert study_main(["--table", "--runs-dir", str(tmp_path)]) == 0
    assert study_main(["--rows", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert study_main(["--table", "--runs-dir", str(tmp_path / "empty")]) == 2
    # Another seed is another run folder; the first seed's measurements are not its.
    assert study_main(["--table", "--seed", "1", "--runs-dir", str(tmp_path)]) == 2
    other = run_row("made", data, tmp_path, epochs=1, iw_k=5, test_images=20, seed=1)
    assert (tmp_path / "collapse_made_seed1" / "collapse.json").is_file()
    assert set(collapse.collect(tmp_path, seed=1)) == {"made"}
    assert other != collapse.collect(tmp_path)["made"]
