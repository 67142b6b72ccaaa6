"""The README's "Use it from Python" example runs as written, and the API it shows holds."""

import re
from pathlib import Path

import numpy as np
import pytest

import numpy_vae as nv

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Use it from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    """On real MNIST (from ./data of the repository, fetched there if needed): one epoch with
    the trainer, 100 steps of a plain loop, save, load, evaluate. (tests/test_docs.py leaves this
    block to this test, which also checks its figures.)"""
    data_dir = README.parent / "data"
    monkeypatch.chdir(tmp_path)
    if data_dir.exists():  # the cache, else the example fetches MNIST into tmp_path/data
        (tmp_path / "data").symlink_to(data_dir)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    first = float(re.search(r"test -ELBO after one epoch: ([\d.]+)", out).group(1))
    assert 110 < first < 140  # 127.66 for the default model after one epoch
    nll = float(re.search(r"NLL \(K = 100\): ([\d.]+)", out).group(1))
    assert 80 < nll < 250
    assert (tmp_path / "my_vae.npz").is_file()


def test_every_public_name_imports_and_is_documented():
    for name in [*nv.__all__, *nv.LAZY_NAMES]:
        obj = getattr(nv, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        nv.nonsense  # noqa: B018


@pytest.mark.parametrize("cls", ["VAE", "FastVAE"])
def test_state_dict_round_trip_and_refusals(cls):
    model = getattr(nv, cls)(12, hidden_dims=(8,), latent_dim=3, seed=0)
    state = model.state_dict()
    assert list(state) == list(model.params) and all(
        isinstance(a, np.ndarray) for a in state.values()
    )
    state["head.bias"][0] += 1  # a copy: the model is untouched
    assert model.params["head.bias"][0] != state["head.bias"][0]
    other = getattr(nv, cls)(12, hidden_dims=(8,), latent_dim=3, seed=1, backend="numpy")
    other.load_state_dict(model.state_dict())
    for name, p in model.params.items():
        np.testing.assert_array_equal(other.params[name], p)
    before = other.state_dict()
    bad = {**model.state_dict(), "head.weight": np.zeros((1, 1))}
    with pytest.raises(ValueError, match=r"head.weight has shape \(1, 1\)"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="lacks head.bias"):
        other.load_state_dict({k: v for k, v in model.state_dict().items() if k != "head.bias"})
    nan = model.state_dict()
    nan["decoder.2.bias"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        other.load_state_dict(nan)
    for name, p in other.params.items():  # nothing was copied by the refused calls
        np.testing.assert_array_equal(p, before[name])


def test_save_and_load_in_the_dtype_and_backend_asked_for(tmp_path):
    model = nv.VAE(
        12,
        hidden_dims=(8,),
        latent_dim=3,
        n_classes=4,
        likelihood="gaussian",
        gaussian_sigma=0.5,
        seed=2,
    )
    path = nv.save_model(model, tmp_path / "m.npz")
    same = nv.load_model(path)
    assert same.dtype == np.float32 and same.config() == model.config()
    for dtype, backend, fast in (("float64", "numpy", False), ("float64", "strict", True)):
        loaded = nv.load_model(path, dtype=dtype, backend=backend, fast=fast)
        assert loaded.dtype == np.dtype(dtype) and loaded.backend.name == backend
        assert isinstance(loaded, nv.FastVAE) == fast
        for name, p in model.params.items():
            np.testing.assert_array_equal(loaded.backend.to_host(loaded.params[name]), p)
    (tmp_path / "junk.npz").write_text("not a model")
    with pytest.raises(ValueError, match="cannot read a model"):
        nv.load_model(tmp_path / "junk.npz")


def test_load_a_run_folder(tmp_path):
    from test_train import synthetic_arrays

    arrays = synthetic_arrays(n_train=128, n_test=64)
    data = nv.Dataset(**arrays)
    config = nv.TrainConfig(epochs=1, hidden_dims=(8,), latent_dim=2, batch_size=64)
    trainer = nv.train_run(config, data, tmp_path / "run", log=lambda line: None)
    model = nv.load_model(tmp_path / "run", dtype="float64")
    assert model.dtype == np.float64 and model.latent_dim == 2
    for name, p in trainer.model.params.items():
        np.testing.assert_array_equal(model.params[name], p.astype(np.float64))


def test_python_m_numpy_vae_runs_a_program(capsys):
    from numpy_vae.__main__ import main

    assert main(["gradcheck", "--hidden", "6", "--latent-dim", "2", "--entries", "2"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["nonsense"]) == 2
    assert "unknown program 'nonsense'" in capsys.readouterr().err


def test_the_pieces_are_objects_and_the_config_rebuilds_the_model():
    """The likelihood, decoder and objective are objects named by the configuration (no string
    stands in for them); ``VAE(**model.config())`` rebuilds the model; FastAdam takes Adam's
    positional learning rate."""
    from numpy_vae.likelihoods import Gaussian

    model = nv.VAE(12, hidden_dims=(8,), latent_dim=3, likelihood="gaussian", beta=2.0)
    assert isinstance(model.likelihood, Gaussian) and model.likelihood != "gaussian"
    assert model.hparams.likelihood == model.likelihood.name == "gaussian"
    assert (model.decoder.name, model.objective.name) == ("mlp", "elbo")
    model.beta = 3.0  # the loss's weight may change between calls; the config follows it
    twin = nv.VAE(**model.config())
    assert twin.beta == 3.0 and twin.config() == model.config()
    for name, p in model.params.items():
        np.testing.assert_array_equal(twin.params[name], p)
    with pytest.raises(ValueError, match="config must be a ModelConfig, got tuple"):
        nv.VAE(12, (8,))  # the hyperparameters are named, never positional
    p, g = np.zeros(3), np.ones(3)
    opt = nv.FastAdam([p], [g], 0.5)
    opt.step()
    np.testing.assert_allclose(p, -0.5)
