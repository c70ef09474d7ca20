"""The packed-model file: binary weights coded near their entropy, one payload.

A packed model is saved as an ``.npz`` (read with ``allow_pickle=False``)
holding two arrays:

* ``__meta__``: a JSON document (uint8) with ``kind = "packed"``,
  ``format_version = 2``, the layer tree (as ``save_model``), and two tables
  into the payload: ``arrays`` (``name -> [dtype, shape, offset, nbytes]``:
  every parameter and buffer except the {0,1} weights) and ``coded``
  (``layer -> [offset, nbytes, method]``: each binary layer's weights coded
  by :func:`pysbnn.coding.encode_layer`, header and CRC included);
* ``payload``: uint8, every table entry's bytes one after the other.

One payload instead of one ``.npz`` member per array keeps the container's
overhead near 1 KB (a member costs ~300 bytes of zip and ``.npy`` headers),
which matters next to a 6 KB SBNN. The byte layout is in ``docs/format.md``.
Loading decodes every layer once into the bitmap the kernels read; corrupted
or truncated payloads raise a ``ValueError`` naming the file and the layer.
"""

import os

import numpy as np

from .. import coding
from ..kernels import words
from ..serialize import (atomic_savez, build_layer, encode_json, layer_spec, load_arrays, model_arrays,
                         read_npz)

FORMAT_VERSION = 2
#: dtypes a packed file may hold (no object arrays, ever)
DTYPES = ("float32", "float64", "int8", "int32", "int64", "uint8", "uint64")
#: coding methods the weights may use (all of them; the C export restricts itself)
METHODS = coding.METHODS


def coder_shape(layer):
    """The shape a layer's {0,1} weights are coded in: (M, K) dense, (C_out, C_in, k, k) conv."""
    if hasattr(layer, "out_channels"):
        k = layer.kernel_size
        return (layer.out_channels, layer.in_channels, k, k)
    return (layer.out_features, layer.in_features)


def encode_weights(layer, methods=METHODS):
    """:class:`pysbnn.coding.EncodedLayer` of a packed layer's weights."""
    return coding.encode_layer(layer.ones_rows().astype(bool).reshape(coder_shape(layer)), methods)


def save_packed(net, layers, path):
    """Write ``net`` (a packed Sequential) with the weights of ``layers`` (``[(name, layer)]``) coded."""
    arrays = model_arrays(net)
    chunks, table, coded, offset = [], {}, {}, 0
    for name, layer in layers:
        blob = coding.to_bytes(encode_weights(layer))
        coded[name] = [offset, len(blob), coding.from_bytes(blob).method]
        chunks.append(np.frombuffer(blob, np.uint8))
        offset += len(blob)
        del arrays[f"buffers/{name}.w01" if name else "buffers/w01"]
    for key, a in arrays.items():
        a = np.ascontiguousarray(a)
        table[key] = [a.dtype.name, list(a.shape), offset, a.nbytes]
        chunks.append(a.view(np.uint8).ravel())
        offset += a.nbytes
    meta = {"kind": "packed", "format_version": FORMAT_VERSION, "spec": layer_spec(net),
            "arrays": table, "coded": coded}
    payload = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    atomic_savez(path, {"__meta__": encode_json(meta), "payload": payload}, compressed=True)


def _slice(payload, offset, nbytes, what, path):
    if not (isinstance(offset, int) and isinstance(nbytes, int) and 0 <= offset
            and 0 <= nbytes and offset + nbytes <= payload.size):
        raise ValueError(f"{path}: {what} lies outside the payload (truncated or corrupted file)")
    return payload[offset:offset + nbytes]


def _array(entry, payload, name, path):
    try:
        dtype, shape, offset, nbytes = entry
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: malformed table entry for {name}") from None
    if dtype not in DTYPES:
        raise ValueError(f"{path}: {name} has dtype {dtype!r}, not one of {DTYPES}")
    raw = _slice(payload, offset, nbytes, name, path)
    if int(np.prod(shape)) * np.dtype(dtype).itemsize != raw.size:
        raise ValueError(f"{path}: {name} has {raw.size} bytes for shape {shape} of {dtype}")
    return raw.view(dtype).reshape(shape).copy()


def load_packed_net(path):
    """The packed Sequential of a file written by :func:`save_packed`."""
    meta, arrays = read_npz(path, "packed", versions=(FORMAT_VERSION,))
    if "payload" not in arrays or not isinstance(meta.get("arrays"), dict) or not isinstance(meta.get("coded"), dict):
        raise ValueError(f"{path}: not a pysbnn packed file of format {FORMAT_VERSION} (no payload tables)")
    payload = arrays["payload"]
    if payload.dtype != np.uint8 or payload.ndim != 1:
        raise ValueError(f"{path}: payload must be a 1-D uint8 array")
    try:
        net = build_layer(meta["spec"], path)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: cannot rebuild the model ({e})") from None
    layers = {n: l for n, l in net.named_layers() if n in meta["coded"]}
    values = {k: _array(v, payload, k, path) for k, v in meta["arrays"].items()}
    for name, entry in meta["coded"].items():
        if name not in layers:
            raise ValueError(f"{path}: coded weights of {name!r}, which the model does not have")
        layer = layers[name]
        try:
            offset, nbytes, _ = entry
            enc = coding.from_bytes(_slice(payload, offset, nbytes, f"layer {name}", path).tobytes())
            w01 = coding.decode_layer(enc, coder_shape(layer))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: layer {name}: corrupted coded weights ({e})") from None
        values[f"buffers/{name}.w01" if name else "buffers/w01"] = words.pack_bits(w01.reshape(w01.shape[0], -1))
    load_arrays(net, values, path)
    return net, meta


def file_bytes(path):
    """Size of a file on disk, in bytes."""
    return os.path.getsize(os.fspath(path))

