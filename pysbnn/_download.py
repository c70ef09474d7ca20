"""Where :mod:`pysbnn.data` looks for files, and how it downloads them.

Every file is downloaded to a temporary file in the destination directory,
hashed while it streams, and moved into place with :func:`os.replace` only when
its checksum matches, so an interrupted or corrupted download never leaves a
file under the final name. Network failures are reported, never raised: the
caller falls through to its next source. Setting ``PYSBNN_OFFLINE=1`` skips
downloads entirely.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

OFFLINE_ENV = "PYSBNN_OFFLINE"
DATA_ENV = "PYSBNN_DATA"
TIMEOUT = 10.0  # seconds per socket operation: a machine without network fails fast
_CHUNK = 1 << 20

# Checksums of the files as distributed, (algorithm, hex digest). All are
# SHA-256 digests from the public record (the same values appear in many
# independent projects, e.g. torchvision's prototype datasets, Keras'
# cifar10.load_data, tensorflow-datasets); hashlib.md5 is supported for entries
# whose SHA-256 is unknown, but none is needed. For cross-reference, the MD5s
# torchvision checks are listed in the comments.
DATASETS: dict[str, dict] = {
    "mnist": {
        "title": "MNIST",
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "files": {
            # md5 f68b3c2dcbeaaa9fbdd348bbdeb94873
            "train-images-idx3-ubyte.gz": (
                "sha256", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            # md5 d53e105ee54ea40749a09fcbcd1e9432
            "train-labels-idx1-ubyte.gz": (
                "sha256", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            # md5 9fb629c4189551a2d022fa330f9573f3
            "t10k-images-idx3-ubyte.gz": (
                "sha256", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            # md5 ec29112dd5afa0611ce80d1b7f02629c
            "t10k-labels-idx1-ubyte.gz": (
                "sha256", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
    },
    "fashion-mnist": {
        "title": "Fashion-MNIST",
        "mirrors": (
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            # S3 website endpoints serve plain HTTP only; the checksum guards the content.
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        "files": {
            # md5 8d4fb7e6c68d591d4c3dfef9ec88bf0d
            "train-images-idx3-ubyte.gz": (
                "sha256", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            # md5 25c81989df183df01b3e8a0aad5dffbe
            "train-labels-idx1-ubyte.gz": (
                "sha256", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            # md5 bef4ecab320f06d8554ea6380940ec79
            "t10k-images-idx3-ubyte.gz": (
                "sha256", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            # md5 bb300cfdad3c16e7a12a480ee83cd310
            "t10k-labels-idx1-ubyte.gz": (
                "sha256", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        },
    },
    "cifar-10": {
        "title": "CIFAR-10",
        "mirrors": ("https://www.cs.toronto.edu/~kriz/",),
        "files": {
            # md5 c58f30108f718f92721af3b95e74349a, 170,498,071 bytes
            "cifar-10-python.tar.gz": (
                "sha256", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
        },
    },
}


def offline() -> bool:
    """Return True when ``$PYSBNN_OFFLINE`` asks to skip all downloads."""
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def urls(name: str) -> list[str]:
    """Every download URL of dataset `name`, file by file, mirror by mirror."""
    spec = DATASETS[name]
    return [m + f for f in spec["files"] for m in spec["mirrors"]]


def log(message: str, verbose: bool) -> None:
    if verbose:
        print(f"pysbnn.data: {message}", file=sys.stderr, flush=True)


def fetch(url: str, dest: Path, checksum: tuple[str, str], *, timeout: float = TIMEOUT) -> None:
    """Download `url` to `dest` atomically, verifying `checksum`.

    Parameters
    ----------
    url : str
    dest : Path
        Final file name; its directory must exist.
    checksum : (str, str)
        ``("sha256" or "md5", hex digest)``.
    timeout : float
        Seconds per socket operation.

    Raises
    ------
    OSError
        On any network or file failure (``urllib.error.URLError`` is one).
    ValueError
        When the downloaded bytes do not match `checksum`.
    """
    algo, expected = checksum
    digest = hashlib.new(algo)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected.lower():
            raise ValueError(f"{algo} mismatch for {url}: got {digest.hexdigest()}, expected {expected}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(name: str, dest_dir: Path, *, verbose: bool = True) -> list[str]:
    """Fetch the files of dataset `name` missing from `dest_dir`.

    Tries each mirror in turn; a host that fails to connect is not tried again,
    and the first file that no mirror delivers stops the whole download (the
    set would be incomplete anyway). Never raises for network trouble.

    Parameters
    ----------
    name : str
        Key of :data:`DATASETS`.
    dest_dir : Path
        Created if needed.
    verbose : bool
        Print progress to stderr.

    Returns
    -------
    list of str
        Human-readable notes on what failed (empty on success).
    """
    spec = DATASETS[name]
    if offline():
        return [f"downloads skipped because ${OFFLINE_ENV} is set"]
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create {dest_dir}: {exc}"]
    notes: list[str] = []
    dead_hosts: set[str] = set()
    for fname, checksum in spec["files"].items():
        dest = dest_dir / fname
        if dest.is_file():
            continue
        for mirror in spec["mirrors"]:
            host = urllib.parse.urlparse(mirror).netloc or mirror  # file:// mirrors: no host
            if host in dead_hosts:
                continue
            url = mirror + fname
            log(f"downloading {url} -> {dest}", verbose)
            try:
                fetch(url, dest, checksum)
                break
            except urllib.error.HTTPError as exc:
                notes.append(f"{url}: HTTP {exc.code}")
            except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad checksum
                notes.append(f"{url}: {exc}")
                if not isinstance(exc, ValueError):
                    dead_hosts.add(host)
            except Exception as exc:  # http.client oddities: never let a download crash a loader
                notes.append(f"{url}: {type(exc).__name__}: {exc}")
        else:
            log(f"could not download {fname}; giving up on {spec['title']} downloads", verbose)
            return notes
    return notes


# ------------------------------------------------------------------ searching
def cache_dir(name: str) -> Path:
    """Cache directory of dataset `name` (not created).

    ``$XDG_CACHE_HOME/pysbnn/<name>`` when ``$XDG_CACHE_HOME`` is an absolute
    path, else ``~/.cache/pysbnn/<name>``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "pysbnn" / name


def search_dirs(name: str, data_dir, extra=()) -> list[tuple[Path, str]]:
    """Directories to search, in order, each with a label for messages."""
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "data_dir argument")]
    dirs = []
    env = os.environ.get(DATA_ENV, "")
    if env:
        dirs += [(Path(env) / name, f"${DATA_ENV}/{name}"), (Path(env), f"${DATA_ENV}")]
    dirs.append((cache_dir(name), "cache"))
    dirs += [(Path(d), "system") for d in extra]
    return dirs


def not_found(name: str, wanted: list[str], dirs, notes, hint: str = "") -> FileNotFoundError:
    """The error telling which files to put where, and where to download them."""
    title = DATASETS[name]["title"]
    lines = [f"{title} not found. Put these files:"]
    lines += [f"    {w}" for w in wanted]
    lines.append("into one of these directories (searched in this order):")
    lines += [f"    {d}    ({label})" for d, label in dirs]
    lines.append("Download URLs (mirrors of the same files):")
    lines += [f"    {u}" for u in urls(name)]
    if notes:
        lines.append("Download attempts:")
        lines += [f"    {n}" for n in notes]
    if hint:
        lines.append(hint)
    return FileNotFoundError("\n".join(lines))


def locate(name, data_dir, allow_download, verbose, finder, extra=()):
    """Run `finder` over the search dirs, downloading once if allowed.

    Returns ``(found, dirs, notes)``; `found` is whatever `finder` returned
    for the first directory where it was not None, or None.
    """
    dirs = search_dirs(name, data_dir, extra)
    for d, _ in dirs:
        if (found := finder(d)) is not None:
            return found, dirs, []
    notes = []
    if allow_download:
        target = dirs[0][0] if data_dir is not None else cache_dir(name)
        notes = download(name, target, verbose=verbose)
        if (found := finder(target)) is not None:
            return found, dirs, notes
    else:
        notes = ["downloads disabled (download=False)"]
    return None, dirs, notes
