"""Saving and loading models as ``.npz`` files (no pickle), written atomically.

A file holds every array of the model (``params/NAME``, ``buffers/NAME``) and
a ``__meta__`` JSON record: the kind of file, the format version and the
layer tree (class, constructor config, children) that rebuilds the model.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from . import containers  # noqa: F401  (registers Sequential and Residual for loading)
from .layers import LAYER_REGISTRY, parameters_changed
from .validation import check_finite_model

FORMAT_VERSION = 1


def layer_spec(layer):
    """The JSON tree that rebuilds ``layer`` (class, config, children)."""
    return {"class": type(layer).__name__, "config": layer.get_config(),
            "children": [layer_spec(c) for c in layer.children()]}


def build_layer(spec, path):
    cls = LAYER_REGISTRY.get(spec.get("class"))
    if cls is None:
        raise ValueError(f"{path}: unknown layer class {spec.get('class')!r}")
    children = [build_layer(c, path) for c in spec.get("children", [])]
    return cls.build(spec.get("config", {}), children)


def model_arrays(model):
    """All arrays that define ``model``: ``{"params/NAME": ..., "buffers/NAME": ...}``."""
    out = {f"params/{k}": v for k, v in model.named_parameters()}
    out.update({f"buffers/{k}": v for k, v in model.named_buffers()})
    return out


def load_arrays(model, arrays, path="<arrays>"):
    """Copy ``arrays`` (as from :func:`model_arrays`) into ``model`` in place, checking shapes."""
    expected = model_arrays(model)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: arrays do not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
    for name, target in expected.items():
        src = arrays[name]
        if src.shape != target.shape:
            raise ValueError(f"{path}: {name} has shape {src.shape}, the model expects {target.shape}")
        if src.dtype.kind == "f" and not np.all(np.isfinite(src)):
            raise ValueError(f"{path}: {name} holds non-finite values")
        target[...] = src
    parameters_changed()


def atomic_savez(path, arrays, compressed=False):
    """Write an ``.npz`` to a temporary file in the same directory, then rename it.

    An interruption leaves either the old file or the new one, never half a file.
    ``compressed`` deflates every member (``np.savez_compressed``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def encode_json(obj):
    """A JSON document as a uint8 array (stored in ``.npz`` without pickle)."""
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def read_npz(path, kind, versions=(FORMAT_VERSION,)):
    """Read every array of an ``.npz`` written by pysbnn, with clear errors.

    Returns ``(meta, arrays)`` where ``meta`` is the decoded ``__meta__`` JSON;
    ``versions``: the format versions this reader accepts.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ValueError(f"{path}: not a readable pysbnn {kind} file (truncated or corrupted: {e})") from None
    if "__meta__" not in arrays:
        raise ValueError(f"{path}: not a pysbnn {kind} file (no __meta__ record)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupted metadata ({e})") from None
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: holds a {meta.get('kind')!r}, expected a {kind!r}")
    if meta.get("format_version") not in versions:
        raise ValueError(f"{path}: {kind} format version {meta.get('format_version')!r}, this pysbnn "
                         f"reads version {' or '.join(map(str, versions))}"
                         + (" (re-pack the float model: pysbnn.pack(pysbnn.load_model(...)).save(...))"
                            if kind == "packed" else ""))
    return meta, arrays


def save_model(model, path, extra=None, kind="model"):
    """Save a model (architecture + parameters + buffers) to an ``.npz`` file.

    The file is written atomically and read back with ``allow_pickle=False``.
    ``extra`` is an optional JSON-serialisable dict stored alongside (e.g. the
    training history); :func:`load_model` returns it as ``model.extra``.
    A model with a NaN/inf parameter or buffer is refused (ValueError naming the layer).
    """
    check_finite_model(model, "save_model")
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "spec": layer_spec(model),
            "extra": extra or {}}
    arrays = model_arrays(model)
    arrays["__meta__"] = encode_json(meta)
    atomic_savez(path, arrays)


def load_model(path, kind="model"):
    """Load a model written by :func:`save_model`.

    Raises ``ValueError`` naming the file for truncated, corrupted or
    mismatched files.
    """
    meta, arrays = read_npz(path, kind)
    try:
        model = build_layer(meta["spec"], path)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: cannot rebuild the model ({e})") from None
    dtypes = {v.dtype for k, v in arrays.items() if k.startswith("params/")}
    if kind == "model" and len(dtypes) == 1:        # e.g. a model trained in float64
        model.astype(dtypes.pop())
    load_arrays(model, arrays, path)
    model.extra = meta.get("extra", {})
    return model
