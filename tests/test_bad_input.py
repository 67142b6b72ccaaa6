"""Bad input at every boundary: checkpoints, data files, the model's methods, configurations and
the command line. Each must end in a clear error raised by numpy-vae itself (naming what is
wrong) or in a correct result; never a bare NumPy error from deep inside, a hang, or a silently
wrong answer. Property-based: hypothesis throws random bytes, arrays and values at them."""

import json
import re
import traceback
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_train import small_args, synthetic_arrays

import numpy_vae
from numpy_vae.cli import train_main
from numpy_vae.cli.common import load_dataset
from numpy_vae.cli.train import train_parser
from numpy_vae.model import VAE
from numpy_vae.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpy_vae.training.data import DataError, Dataset, parse_idx
from numpy_vae.training.trainer import TrainConfig, Trainer

PACKAGE = Path(numpy_vae.__file__).resolve().parent
# Random inputs must be dealt with quickly; a slow example would point at a hang.
quick = settings(deadline=5000, max_examples=60)


def assert_raised_by_numpy_vae(err: BaseException) -> None:
    """The error is a ValueError/TypeError with a message, raised by a ``raise`` statement of
    numpy-vae's own code, not one NumPy raised on the way (a NumPy function written in C would
    leave the calling line of the package as the innermost frame, hence the ``raise`` check)."""
    assert isinstance(err, ValueError | TypeError), repr(err)
    assert str(err).strip(), "an error without a message"
    innermost = traceback.extract_tb(err.__traceback__)[-1]
    where = f"{type(err).__name__}: {err} came from {innermost.filename}:{innermost.lineno}"
    assert Path(innermost.filename).resolve().is_relative_to(PACKAGE), where
    assert innermost.line.startswith("raise "), where


REFUSED = object()


def accepted(call):
    """``call()``'s result, or :data:`REFUSED` when it raised numpy-vae's own clear error."""
    try:
        return call()
    except (ValueError, TypeError) as err:
        assert_raised_by_numpy_vae(err)
        return REFUSED


def tiny_data(labelled=True):
    arrays = synthetic_arrays(n_train=128, n_test=64)
    if not labelled:
        arrays["train_labels"] = arrays["test_labels"] = None
    return Dataset(*(arrays[k] for k in ("train_images", "train_labels", "test_images",
                                         "test_labels")))  # fmt: skip


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint after one epoch of a tiny model, its bytes and its loaded state."""
    trainer = Trainer(TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=64), tiny_data())
    trainer.train_epoch()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.npz"
    save_checkpoint(path, trainer.state_dict())
    return path.read_bytes(), load_checkpoint(path)


def assert_same_state(a, b):
    assert a["config"] == b["config"] and a["history"] == b["history"]
    assert (a["epoch"], a["step"], a["adam_step"]) == (b["epoch"], b["step"], b["adam_step"])
    assert a["params"].keys() == b["params"].keys()
    for name in a["params"]:
        np.testing.assert_array_equal(a["params"][name], b["params"][name])
    np.testing.assert_array_equal(a["adam_m"], b["adam_m"])
    np.testing.assert_array_equal(a["adam_v"], b["adam_v"])


@quick
@given(data=st.data())
def test_a_truncated_checkpoint_is_refused(checkpoint, tmp_path_factory, data):
    raw, _ = checkpoint
    cut = data.draw(st.integers(0, len(raw) - 1))
    path = tmp_path_factory.mktemp("cut") / "checkpoint.npz"
    path.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match="not a readable checkpoint, truncated or corrupted"):
        load_checkpoint(path)


@quick
@given(data=st.data())
def test_a_corrupted_checkpoint_is_refused_or_loads_unchanged(checkpoint, tmp_path_factory, data):
    """Bytes overwritten anywhere (headers, array data, the zip directory): either the damage is
    detected (zip CRC, structure, the checks on the content) or it touched nothing that is read."""
    raw, original = checkpoint
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("flip") / "checkpoint.npz"
    path.write_bytes(bytes(mutated))
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return
    assert_same_state(state, original)


@quick
@given(raw=st.binary(max_size=2000))
def test_random_bytes_are_not_a_checkpoint(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("junk") / "checkpoint.npz"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def rewrite(tmp_path, checkpoint, change):
    """The checkpoint's arrays with ``change(arrays)`` applied, saved plainly as a new .npz."""
    raw, _ = checkpoint
    source = tmp_path / "source.npz"
    source.write_bytes(raw)
    with np.load(source) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    path = tmp_path / "changed.npz"
    np.savez(path, **arrays)
    return path


def set_json(key, **values):
    def change(arrays):
        arrays[key] = np.asarray(json.dumps({**json.loads(str(arrays[key])), **values}))

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.update(format=np.asarray(2)), "format 2, this numpy-vae reads format 1"),
        (lambda a: a.pop("adam/m"), r"missing adam/m"),
        (set_json("config", lr=-1.0), r"configuration is invalid \(.*lr must be"),
        (set_json("config", learning_rate=1.0), "unknown configuration keys: learning_rate"),
        (lambda a: a.update(config=np.asarray("{oops")), "config is not valid JSON"),
        (lambda a: a.update(history=np.asarray("[]")), "history does not list 1 epochs"),
        (lambda a: a.update(step=np.asarray(-3)), "step must be a non-negative integer"),
        (lambda a: a.update({"adam/step": np.asarray(7)}), "Adam has taken 7 steps but"),
        (lambda a: a["param/head.bias"].__setitem__(0, np.nan), "head.bias is empty or holds NaN"),
        (
            lambda a: a.update({"param/head.bias": a["param/head.bias"].astype(np.float64)}),
            "head.bias is float64, the configuration says float32",
        ),  # fmt: skip
        (lambda a: a.update({"adam/v": -a["adam/v"] - 1}), "negative second moments"),
        (lambda a: a.update({"adam/m": a["adam/m"][:-1]}), r"adam/m has shape \(\d+,\), the"),
        (lambda a: a.update(config=np.arange(3)), "config must be a JSON string"),
    ],
)
def test_inconsistent_checkpoints_name_what_does_not_match(tmp_path, checkpoint, change, message):
    path = rewrite(tmp_path, checkpoint, change)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_of_another_architecture_names_the_parameter(tmp_path, checkpoint):
    state = load_checkpoint(rewrite(tmp_path, checkpoint, lambda a: None))
    other = Trainer(TrainConfig(hidden_dims=(9,), latent_dim=2), tiny_data())
    with pytest.raises(ValueError, match=r"encoder.0.weight has shape \(8, 784\), the model "
                                         r"needs \(9, 784\)"):  # fmt: skip
        other.load_state_dict(state)
    state["params"]["decoder.9.weight"] = state["params"]["head.weight"]
    with pytest.raises(ValueError, match="has unknown decoder.9.weight"):
        Trainer(TrainConfig(hidden_dims=(8,), latent_dim=2), tiny_data()).load_state_dict(state)


def test_a_pickle_inside_a_checkpoint_is_never_executed(tmp_path, checkpoint):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    def smuggle(arrays):
        arrays["config"] = np.array([Payload()], dtype=object)

    path = rewrite(tmp_path, checkpoint, smuggle)
    with pytest.raises(CheckpointError, match="Object arrays cannot be loaded"):
        load_checkpoint(path)
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as f:  # what loading with pickles would have done
        f["config"]
    assert marker.exists()


# ---------------------------------------------------------------------------------- data
@quick
@given(raw=st.binary(max_size=64))
def test_parse_idx_on_random_bytes(raw):
    """Random bytes: refused with a DataError, or parsed exactly as the header says."""
    try:
        values = parse_idx(raw, "f")
    except DataError as err:
        assert str(err).startswith("f: ")
        return
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    assert values.shape == shape
    assert values.tobytes() == np.frombuffer(raw[4 + 4 * ndim :], values.dtype.newbyteorder(">"))\
        .astype(values.dtype).tobytes()  # fmt: skip


arrays_of_any_kind = st.one_of(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
    hnp.arrays(np.uint8, st.tuples(st.integers(0, 4), st.integers(0, 4))),  # plausible images
    hnp.arrays(np.int64, st.integers(0, 4), elements=st.integers(-1, 10)),  # plausible labels
    st.lists(st.integers(0, 255), max_size=4),  # not an array at all
)


@quick
@given(
    train=arrays_of_any_kind,
    test=arrays_of_any_kind,
    labels=st.none() | arrays_of_any_kind,
    test_labels=st.none() | arrays_of_any_kind,
)
def test_dataset_accepts_only_what_training_can_use(train, test, labels, test_labels):
    try:
        data = Dataset(train, labels, test, test_labels)
    except ValueError as err:
        assert_raised_by_numpy_vae(err)
        return
    for images, y in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        assert images.dtype == np.uint8 and images.ndim == 2 and images.size > 0
        assert images.max() != 1  # 0/1 bytes are black-and-white images stored wrongly
        assert y is None or (y.dtype.kind in "iu" and y.shape == images.shape[:1]
                             and 0 <= y.min() and y.max() <= 9)  # fmt: skip
    assert data.train_images.shape[1] == data.test_images.shape[1]


@quick
@given(raw=st.binary(max_size=600), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY"]))
def test_a_data_file_of_random_bytes_is_refused(tmp_path_factory, raw, prefix):
    path = tmp_path_factory.mktemp("d") / "data.npz"
    path.write_bytes(prefix + raw)
    with pytest.raises(DataError, match=str(path)):
        load_dataset(Path("unused"), path)


def test_a_single_array_is_neither_data_nor_checkpoint(tmp_path):
    path = tmp_path / "one.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(Path("unused"), path)
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"train_images": np.zeros((4, 9), np.float32)}, "train_images must be a uint8"),
        ({"train_images": np.zeros((4, 3, 3), np.uint8)}, "non-empty 2-D array"),
        ({"train_labels": np.full(300, 10)}, r"digits 0..9, got values in \[10, 10\]"),
        ({"train_labels": np.zeros(299, np.int64)}, r"must have shape \(300,\)"),
        ({"train_labels": np.zeros(300, np.float32)}, "must be an integer array"),
        ({"test_images": np.zeros((100, 783), np.uint8)}, "test images 783"),
        ({"test_labels": None}, "labels for one split only"),
    ],
)
def test_bad_data_files_are_one_line(tmp_path, capsys, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **{k: v for k, v in {**synthetic_arrays(), **arrays}.items() if v is not None})
    assert train_main(small_args(path, tmp_path, "run")) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count("\n") == 1 and str(path) in err


def test_unlabeled_data_trains_but_not_a_conditional_model(tmp_path, capsys):
    arrays = synthetic_arrays()
    path = tmp_path / "unlabeled.npz"
    np.savez(path, train_images=arrays["train_images"], test_images=arrays["test_images"])
    assert train_main(small_args(path, tmp_path, "plain", "--epochs", "1")) == 0
    assert (tmp_path / "plain" / "latent_means.png").exists()
    capsys.readouterr()
    assert train_main(small_args(path, tmp_path, "cvae", "--conditional")) == 2
    assert "--conditional needs labels" in capsys.readouterr().err
    assert not (tmp_path / "cvae").exists()


# -------------------------------------------------------------------------- model boundary
model = VAE(input_dim=6, hidden_dims=(5,), latent_dim=2, n_classes=3, seed=0)

batches = st.one_of(
    hnp.arrays(
        dtype=st.sampled_from(
            [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64]
        ),  # fmt: skip
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
    ),
    hnp.arrays(
        np.float64, st.tuples(st.integers(0, 3), st.integers(5, 7)), elements=st.floats(-0.5, 1.5)
    ),  # plausible batches  # fmt: skip
    st.lists(st.lists(st.floats(0, 1), min_size=0, max_size=7), max_size=4),  # maybe ragged
    st.text(max_size=5),
    st.none(),
)
labels = st.one_of(
    st.none(),
    hnp.arrays(
        st.sampled_from([np.int64, np.int8, np.float64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5),
    ),  # fmt: skip
    st.lists(st.integers(-5, 5), max_size=5),
    st.lists(st.lists(st.integers(0, 2), max_size=2), max_size=3),
)


@st.composite
def model_inputs(draw, corrupt):
    """``(x, y, eps)`` valid for ``model`` (any float dtype, labels as arrays or lists); with
    ``corrupt``, one of them replaced by anything at all."""
    n = draw(st.integers(1, 4))
    floats = st.sampled_from([np.float16, np.float32, np.float64])
    x = draw(hnp.arrays(floats, (n, 6), elements=st.floats(0, 1, width=16)))
    y = draw(hnp.arrays(st.sampled_from([np.int64, np.int8, np.uint8]), n,
                        elements=st.integers(0, 2)))  # fmt: skip
    if draw(st.booleans()):
        y = y.tolist()
    eps = draw(st.none() | hnp.arrays(floats, (n, 2), elements=st.floats(-3, 3, width=16)))
    if corrupt:
        which = draw(st.sampled_from(["x", "y", "eps"]))
        junk = draw(labels if which == "y" else batches)
        x, y, eps = (junk if which == name else value
                     for name, value in (("x", x), ("y", y), ("eps", eps)))  # fmt: skip
    return x, y, eps


@quick
@given(inputs=model_inputs(corrupt=False))
def test_model_loss_on_valid_input_of_any_form(inputs):
    """Valid input in any float dtype, labels as a list or any integer array: a finite result,
    the same as for the canonical arrays."""
    x, y, eps = inputs
    parts = model.loss(x, y, eps=eps, grad=False)
    assert np.isfinite(parts.loss)
    if eps is not None:
        canonical = model.loss(np.asarray(x, np.float32), np.asarray(y, np.int64),
                               eps=np.asarray(eps, np.float32), grad=False)  # fmt: skip
        assert parts.loss == canonical.loss


@quick
@given(inputs=model_inputs(corrupt=True))
def test_model_loss_on_anything(inputs):
    x, y, eps = inputs
    parts = accepted(lambda: model.loss(x, y, eps=eps))
    if parts is REFUSED:
        return
    # Accepted only what the model documents: 2-D finite floats of the right width in [0, 1],
    # one integer label in [0, 3) per row, and noise of shape (rows, latent_dim).
    x, y = np.asarray(x), np.asarray(y)
    assert x.ndim == 2 and x.shape[1] == 6 and x.dtype.kind == "f" and np.isfinite(x).all()
    assert 0 <= x.min() and x.max() <= 1
    assert y.shape == (len(x),) and y.dtype.kind in "iu" and 0 <= y.min() and y.max() < 3
    assert eps is None or np.asarray(eps).shape == (len(x), 2)
    assert np.isfinite(parts.loss) and all(np.isfinite(g).all() for g in model.grads.values())


@quick
@given(z=batches, y=labels)
def test_model_decode_on_anything(z, y):
    out = accepted(lambda: model.decode(z, y))
    if out is REFUSED:
        return
    assert out.shape == (np.asarray(z).shape[0], 6) and np.isfinite(out).all()


@quick
@given(
    n=st.integers(-3, 5) | st.floats() | st.booleans() | st.none(),
    y=labels,
)
def test_model_sample_on_anything(n, y):
    out = accepted(lambda: model.sample(n, y))
    if out is REFUSED:
        return
    assert out.shape == (n, 6)


# ------------------------------------------------------------------ configurations and CLI
numbers = st.integers(-5, 5000) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()


@quick
@given(
    values=st.fixed_dictionaries(
        {},
        optional={
            "epochs": numbers,
            "batch_size": numbers,
            "lr": numbers,
            "latent_dim": numbers,
            "beta": numbers,
            "free_bits": numbers,
            "kl_warmup": numbers,
            "gaussian_sigma": numbers,
            "eval_batch_size": numbers,
            "hidden_dims": st.lists(numbers, max_size=3),
            "binarize": st.sampled_from(["none", "dynamic", "threshold", "sometimes"]),
            "dtype": st.sampled_from(["float32", "float64", "float16"]),
            "n_classes": st.booleans() | st.integers(-1, 12),
            "skip_nonfinite": st.booleans() | st.none(),
            "seed": numbers | st.text(max_size=2),
            "activation": st.sampled_from(["relu", "tanh", "gelu", ""]),
        },
    )  # fmt: skip
)
def test_train_config_is_valid_or_refused(values):
    config = accepted(lambda: TrainConfig(**values))
    if config is REFUSED:
        return
    assert config.epochs >= 1 and config.batch_size >= 1 and config.latent_dim >= 1
    assert config.lr > 0 and np.isfinite(config.lr) and config.beta >= 0
    assert type(config.seed) is int and config.seed >= 0 and config.activation in ("relu", "tanh")
    assert all(type(getattr(config, k)) is float or type(getattr(config, k)) is int
               for k in ("lr", "beta", "free_bits", "kl_warmup", "gaussian_sigma"))  # fmt: skip
    assert all(w >= 1 for w in config.hidden_dims)
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


NUMERIC_FLAGS = {
    "--epochs": (1, int), "--batch-size": (1, int), "--latent-dim": (1, int),
    "--iw-samples": (0, int), "--lr": (0, float), "--beta": (0, float),
    "--free-bits": (0, float), "--kl-warmup": (0, float), "--gaussian-sigma": (0, float),
}  # fmt: skip


@quick
@given(flag=st.sampled_from(sorted(NUMERIC_FLAGS)), text=st.text(max_size=8) | numbers.map(str))
def test_numeric_flags_say_their_range(flag, text, capsys):
    low, kind = NUMERIC_FLAGS[flag]
    try:
        args = train_parser().parse_args([f"{flag}={text}"])
    except SystemExit as stop:
        assert stop.code == 2
        err = capsys.readouterr().err
        assert flag in err and err.count("\n") == 1
        ranges = (f">= {low}", f"> {low}", "positive integer")
        assert any(r in err for r in ranges), err  # the allowed range, even for non-numbers
        return
    value = getattr(args, flag[2:].replace("-", "_"))
    assert isinstance(value, kind) and np.isfinite(value) and value >= low


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--gaussian-sigma", "0.5"], "--gaussian-sigma needs --likelihood gaussian"),
        (["--beta", "0", "--free-bits", "1"], "beta = 0 switches off"),
        (["--beta", "0", "--kl-warmup", "2"], "beta = 0 switches off"),
    ],
)
def test_invalid_combinations_are_refused_up_front(tmp_path, capsys, extra, message):
    arrays_file = tmp_path / "d.npz"
    np.savez(arrays_file, **synthetic_arrays())
    assert train_main(small_args(arrays_file, tmp_path, "run", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_fewer_epochs_and_a_new_name(tmp_path, capsys):
    arrays_file = tmp_path / "d.npz"
    np.savez(arrays_file, **synthetic_arrays())
    assert train_main(small_args(arrays_file, tmp_path, "run", "--epochs", "2")) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert train_main(["--resume", run, "--epochs", "1", "--data-file", str(arrays_file)]) == 2
    assert "already trained 2 epochs" in capsys.readouterr().err
    assert train_main(["--resume", run, "--name", "x", "--data-file", str(arrays_file)]) == 2
    assert "drop --name" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"pixel,label\n0,1\n", b"", b"\x89PNG\r\n\x1a\n"])
def test_a_data_file_that_is_not_an_npz_says_so(tmp_path, capsys, content):
    """A CSV, an empty file, a picture: the message names the format, not NumPy's pickle advice."""
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    assert train_main(small_args(path, tmp_path, "run")) == 2
    err = capsys.readouterr().err
    assert "not an .npz archive" in err and "allow_pickle" not in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_range_is_checked_on_the_values_given_not_their_float32_rounding():
    """Found by the fuzz test above: a float64 pixel of -1e-111 rounds to -0 in float32, and
    the Bernoulli range check once looked only at the rounded batch and let it through."""
    with pytest.raises(ValueError, match=r"x has values in \[-1e-111, -1e-111\]"):
        model.loss(np.full((1, 6), -1e-111), np.array([0]))
    with pytest.raises(ValueError, match="NaN or infinite"):  # finite in float64, not in float32
        model.loss(np.full((1, 6), 1e300), np.array([0]))
