"""A user's own data at the boundary: the pixel conventions of a Dataset, a batch size the data
set can fill, and a --data-dir that exists (issue 24)."""

from pathlib import Path

import numpy as np
import pytest
from test_train import small_args, synthetic_arrays

from numpy_vae.cli import train_main
from numpy_vae.cli.common import load_dataset
from numpy_vae.training.data import DataError, Dataset, ImageSplit
from numpy_vae.training.trainer import TrainConfig, Trainer

TINY = {"hidden_dims": (8,), "latent_dim": 2}


def arrays_with(**changes):
    """The small synthetic data set of test_train, with some arrays replaced."""
    return {**synthetic_arrays(n_train=40, n_test=10), **changes}


def binary(n, seed=0):
    """Black-and-white images stored as 0/1 bytes: the mistake of issue 24."""
    return (np.random.default_rng(seed).random((n, 784)) < 0.3).astype(np.uint8)


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------ pixel conventions
def test_uint8_pixels_mean_k_over_255():
    """The one accepted form: uint8 0..255, which the model sees as k / 255."""
    pixels = np.arange(256, dtype=np.uint8).repeat(4).reshape(64, 16)
    data = Dataset(pixels, None, pixels[:8], None)
    split = ImageSplit(data.train_images, None, "none", np, np.float64)
    np.testing.assert_array_equal(split.whole(None), pixels / 255.0)


def test_binary_images_stored_as_0_and_255_are_accepted():
    images = binary(40) * 255
    data = Dataset(images, None, images[:10], None)
    assert data.train_images.max() == 255


def test_all_black_images_are_accepted():
    """Zeros mean black under either reading; nothing to refuse."""
    zeros = np.zeros((8, 784), np.uint8)
    assert Dataset(zeros, None, zeros, None).input_dim == 784


@pytest.mark.parametrize("split", ["train", "test"])
def test_0_1_bytes_are_refused_with_the_conversion(split):
    """0/1 bytes would be read as the grey levels 0 and 1/255: near-black inputs (issue 24)."""
    arrays = arrays_with(**{f"{split}_images": binary(40 if split == "train" else 10)})
    with pytest.raises(ValueError) as caught:
        Dataset(**arrays)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{split}_images" in message and "only the values 0 and 1" in message
    assert "(X * 255).astype(numpy.uint8)" in message and "0 and 255" in message


def test_a_data_file_of_0_1_bytes_is_refused_in_one_line(tmp_path, capsys):
    """--data-file goes through the same check as the Python API."""
    path = tmp_path / "binary.npz"
    arrays = synthetic_arrays(n_train=300, n_test=100)
    np.savez(path, **{**arrays, "train_images": binary(300), "test_images": binary(100, seed=1)})
    assert train_main(small_args(path, tmp_path, "run", "--epochs", "1")) == 2
    err = one_line_error(capsys)
    assert str(path) in err and "only the values 0 and 1" in err
    assert "(X * 255).astype(numpy.uint8)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "images,conversion",
    [
        (np.full((40, 784), 0.5, np.float32), "numpy.round(x * 255).astype(numpy.uint8)"),
        (np.ones((40, 784), np.float64), "numpy.round(x * 255).astype(numpy.uint8)"),
        (np.ones((40, 784), bool), "(X * 255).astype(numpy.uint8)"),
        (np.full((40, 784), 255, np.int64), "X.astype(numpy.uint8)"),
    ],
    ids=["float32", "float64", "bool", "int64"],
)
def test_floats_and_bools_are_refused_with_their_conversion(images, conversion):
    with pytest.raises(ValueError) as caught:
        Dataset(**arrays_with(train_images=images))
    message = str(caught.value)
    assert "\n" not in message and "train_images must be a uint8" in message
    assert conversion in message


# ------------------------------------------------------------------------------ batch size
def test_a_batch_larger_than_the_training_set_is_refused():
    data = Dataset(**arrays_with())
    with pytest.raises(ValueError) as caught:
        Trainer(TrainConfig(**TINY, batch_size=41), data)
    message = str(caught.value)
    assert "\n" not in message and "41" in message and "40" in message
    Trainer(TrainConfig(**TINY, batch_size=40), data)  # one full batch: allowed


def test_batch_size_beyond_the_data_is_one_line_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    np.savez(path, **synthetic_arrays(n_train=300, n_test=100))
    args = small_args(path, tmp_path, "run", "--epochs", "1", "--batch-size", "100000")
    assert train_main(args) == 2
    err = one_line_error(capsys)
    assert "100000" in err and "300" in err and "--batch-size" in err


# -------------------------------------------------------------------------------- data dir
def test_a_missing_data_dir_is_an_error_not_a_download(tmp_path, capsys, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("load_mnist must not be called for a missing --data-dir")

    monkeypatch.setattr("numpy_vae.cli.common.load_mnist", no_download)
    missing = tmp_path / "nonexistent" / "dir"
    args = ["--data-dir", str(missing), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert train_main(args) == 2
    err = one_line_error(capsys)
    assert str(missing) in err and "does not exist" in err
    assert not missing.exists() and not (tmp_path / "runs").exists()


def test_a_data_dir_that_is_a_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("numpy_vae.cli.common.load_mnist", None)  # must not be reached
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(path, None)


def test_the_default_cache_may_be_missing(tmp_path, monkeypatch):
    """The default cache ($NUMPY_VAE_DATA, else ./data) is created on first use, as before."""
    seen = []

    def fake_load_mnist(data_dir, *args, **kwargs):
        seen.append(Path(data_dir))
        raise DataError("stop here")

    monkeypatch.setattr("numpy_vae.cli.common.load_mnist", fake_load_mnist)
    cache = tmp_path / "new-cache"
    monkeypatch.setenv("NUMPY_VAE_DATA", str(cache))
    with pytest.raises(DataError, match="stop here"):
        load_dataset(None, None)
    with pytest.raises(DataError, match="stop here"):
        load_dataset(cache, None)  # the default, named
    assert seen == [cache, cache]


def test_compare_torch_refuses_a_missing_data_dir(tmp_path, usage_error):
    """As the other command lines: a --data-dir typo is an error, not a download."""
    pytest.importorskip("torch")
    from numpy_vae.cli.compare_torch import main

    missing = tmp_path / "no-such-folder"
    err = usage_error(main, ["--mnist", "--data-dir", str(missing), "--steps", "1"])
    assert "does not exist" in err and not missing.exists()
