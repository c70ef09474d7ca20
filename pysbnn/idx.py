"""The IDX file format of MNIST and Fashion-MNIST (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw), as used by MNIST.

    Compression is detected from the gzip magic bytes, not the file name. The
    header is the magic number ``0x0000TTDD`` (type code ``TT``, ``DD``
    dimensions), then ``DD`` big-endian uint32 sizes, then the big-endian
    payload, whose length must match exactly.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray
        Shape ``(d_1, ..., d_DD)``, native byte order, dtype by type code:
        0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
        0x0E float64. Writable.

    Raises
    ------
    ValueError
        Naming the file: unreadable gzip, wrong magic number, unsupported type
        code, truncated header or payload, or bytes after the payload.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: unreadable gzip data ({exc})") from exc
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: wrong magic number 0x{raw[:4].hex().upper()} for an IDX "
                         "file (expected 0x0000TTDD: two zero bytes, type code, ndim)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_TYPES)
        raise ValueError(f"{path}: unsupported IDX type code 0x{code:02X} (supported: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares zero dimensions")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {start} bytes, "
                         f"file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_TYPES[code])
    count = math.prod(dims)
    expected, found = count * dtype.itemsize, len(raw) - start
    if found < expected:
        raise ValueError(f"{path}: truncated IDX payload: shape {dims} of {dtype.name} needs "
                         f"{expected} bytes, found {found}")
    if found > expected:
        raise ValueError(f"{path}: IDX payload too long: shape {dims} of {dtype.name} needs "
                         f"{expected} bytes, found {found} ({found - expected} extra)")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # copy: native order, writable
