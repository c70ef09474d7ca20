"""Sub-bit storage of the {0,1} weights of a binary layer, near N h(p) bits.

``encode_layer(w01)`` tries every applicable method, keeps the one with the
fewest stored bytes and returns an :class:`EncodedLayer`;
``decode_layer(enc, shape)`` inverts it exactly; ``stored_bytes(enc)`` is
``len(to_bytes(enc))``, every byte written.

Methods (ids in the header):

0 ``bitmap``    N bits, bit i = weight i (row-major).
1 ``golomb``    gaps between ones, one divisor m for the layer (m = 2**k is
                Rice); see :mod:`golomb`.
2 ``rice_rows`` per-row Rice k (table of M fields in the stream, optionally
                marking empty rows, which are then skipped); :mod:`rows`.
3 ``kernel``    3x3 conv only: kernel codes, Golomb gaps between non-K0
                kernels + canonical Huffman of the codes; :mod:`kernelcode`.
4 ``enum``      exact enumerative rank of the ones (stream <= 1024 bits);
                :mod:`enumcode`.

Methods 1, 2 and 4 code the complement when more than half the weights are
ones (header flag). Rows: a layer of shape (M, ...) is M rows of K = N / M
weights (dense (M, K) with M outputs; conv (C_out, C_in*9)).

Stored bytes = 16-byte header + ``ceil(n_bits / 8)`` stream bytes. Header
(little-endian):

====== ===== ==========================================================
offset bytes field
====== ===== ==========================================================
0      1     method id (bits 0-3) | complement flag (bit 4)
1      1     param8: rice_rows k_min | skip << 7, kernel variant, else 0
2      4     param32: golomb m, rice_rows width, kernel m, else 0
6      4     n_ones of the coded array (after the complement)
10     4     n_bits of the stream
14     2     CRC-16/CCITT (poly 0x1021, init 0xFFFF) of bytes 0..13 + stream
====== ===== ==========================================================

N and the shape are not stored: the model file holds the shape.
"""
import binascii
import math
import struct
from typing import NamedTuple

import numpy as np

from . import enumcode, golomb, kernelcode, rows
from .bitio import bits_from_words, words_from_bits, words_from_bytes, words_to_bytes

METHODS = ("bitmap", "golomb", "rice_rows", "kernel", "enum")
HEADER_BYTES = 16
_N_PARAMS = {"bitmap": 0, "golomb": 1, "rice_rows": 3, "kernel": 2, "enum": 0}
_HEADER = struct.Struct("<BBIII")          # bytes 0..13; the CRC follows


class EncodedLayer(NamedTuple):
    """A coded {0,1} layer: header fields as plain ints and the stream words."""
    method: str            # one of METHODS
    params: tuple          # golomb (m,); rice_rows (k_min, width, skip); kernel (variant, m); else ()
    n_ones: int            # ones of the coded array (after the complement)
    complement: bool       # the stream codes 1 - w
    n_bits: int            # stream length in bits
    crc: int               # CRC-16 of header bytes 0..13 + stream bytes
    words: np.ndarray      # uint64 stream words, ceil(n_bits / 64) of them


def _rows_view(shape):
    """(M, K) of a layer shape: M = shape[0] rows (1 for 1-D)."""
    n = int(np.prod(shape))
    m = int(shape[0]) if len(shape) >= 2 and n else 1
    return m, n // max(m, 1)


def _is_conv3x3(shape):
    return len(shape) == 4 and tuple(shape[2:]) == (3, 3)


def _as_bits(w01):
    """Validated bool copy of a {0,1} array."""
    w = np.asarray(w01)
    if w.dtype != bool and not np.all((w == 0) | (w == 1)):
        raise ValueError("weights must be a {0,1} (or bool) array")
    if w.size == 0 or w.size >= 1 << 32:
        raise ValueError(f"layer size {w.size} outside 1 .. 2**32 - 1")
    return w.astype(bool)


def _param_fields(method, params):
    """(param8, param32) of the header for ``params``."""
    if method == "golomb":
        return 0, params[0]
    if method == "rice_rows":
        return params[0] | (params[2] << 7), params[1]
    if method == "kernel":
        return params[0], params[1]
    return 0, 0


def _header14(method, params, n_ones, complement, n_bits):
    p8, p32 = _param_fields(method, params)
    return _HEADER.pack(METHODS.index(method) | (int(complement) << 4), p8, p32, n_ones, n_bits)


def _crc(header14, stream_bytes):
    return binascii.crc_hqx(stream_bytes, binascii.crc_hqx(header14, 0xFFFF))


def _make(method, params, n_ones, complement, words, n_bits):
    if n_bits >= 1 << 32:
        raise ValueError(f"stream of {n_bits} bits does not fit the 32-bit header field")
    words = np.ascontiguousarray(words, np.uint64)
    head = _header14(method, params, n_ones, complement, n_bits)
    return EncodedLayer(method, tuple(int(p) for p in params), int(n_ones), bool(complement),
                        int(n_bits), _crc(head, words_to_bytes(words, n_bits)), words)


def candidate_sizes(w01, methods=METHODS):
    """Exact stream bits of each applicable method: {method: (params, n_bits)}.

    The kernel entry is the smaller of its two variants. Used by
    :func:`encode_layer` and by the benchmarks.
    """
    w = _as_bits(w01)
    return {name: (params, n_bits) for name, params, n_bits, _ in _plans(w, methods)}


def _plans(w, methods):
    """(method, params, n_bits, encode) for each applicable method; encode() -> words."""
    flat, n = w.reshape(-1), w.size
    M, K = _rows_view(w.shape)
    ones = int(flat.sum())
    comp = ones > n // 2
    coded = ~flat if comp else flat
    n_c = n - ones if comp else ones
    out = []
    if "bitmap" in methods:
        out.append(("bitmap", (), n, lambda: words_from_bits(flat)[0]))
    if "golomb" in methods:
        m, nb = golomb.best_golomb_m(golomb.ones_and_gaps(coded)[1])
        out.append(("golomb", (m,), nb, lambda m=m: golomb.golomb_encode(coded, m)[0]))
    if "rice_rows" in methods and M > 1:
        k_rows, k_min, width, skip, nb = rows.row_rice_plan(coded.reshape(M, K))
        out.append(("rice_rows", (k_min, width, skip), nb,
                    lambda: rows.row_rice_encode(coded.reshape(M, K), k_rows, k_min, width, skip)[0]))
    if "kernel" in methods and _is_conv3x3(w.shape):
        codes = kernelcode.kernel_codes(w)
        for variant in (0, 1):
            words, nb, m_gap = kernelcode.kernel_encode(codes, variant)
            out.append(("kernel", (variant, m_gap), nb, lambda words=words: words))
    if "enum" in methods and enumcode.log2_comb(n, n_c) <= enumcode.MAX_BITS + 1:
        nb = enumcode.enum_bits(n, n_c)
        if nb <= enumcode.MAX_BITS:
            out.append(("enum", (), nb, lambda: enumcode.enum_encode(coded)[0]))
    best = {}
    for plan in out:                       # keep the smaller kernel variant
        if plan[0] not in best or plan[2] < best[plan[0]][2]:
            best[plan[0]] = plan
    return [best[name] for name in METHODS if name in best]


def encode_layer(w01, methods=METHODS):
    """Code a {0,1} layer with the method of fewest stored bytes.

    w01 : any shape, bool or {0,1}; 4-D (C_out, C_in, 3, 3) also tries the
        kernel-code method. ``methods`` restricts the choice (e.g. leave out
        "enum" for a decoder without big integers). Ties go to the earlier
        method in METHODS.
    """
    w = _as_bits(w01)
    if not set(methods) <= set(METHODS):
        raise ValueError(f"unknown methods {set(methods) - set(METHODS)}; known: {METHODS}")
    plans = _plans(w, methods)
    if not plans:
        raise ValueError(f"no applicable method among {methods}")
    order = {name: i for i, name in enumerate(METHODS)}
    name, params, n_bits, encode = min(plans, key=lambda p: (-(-p[2] // 8), order[p[0]]))
    ones = int(w.sum())
    comp = name in ("golomb", "rice_rows", "enum") and ones > w.size // 2
    return _make(name, params, w.size - ones if comp else ones, comp, encode(), n_bits)


def stored_bytes(enc):
    """Every byte written for ``enc``: the 16-byte header + ceil(n_bits / 8)."""
    return HEADER_BYTES + -(-int(enc.n_bits) // 8)


def to_bytes(enc):
    """Serialise: header (with CRC) + stream bytes; ``len == stored_bytes(enc)``."""
    head = _header14(enc.method, enc.params, enc.n_ones, enc.complement, enc.n_bits)
    return head + struct.pack("<H", enc.crc) + words_to_bytes(enc.words, enc.n_bits)


def from_bytes(buf):
    """Parse :func:`to_bytes` output; ValueError on a truncated or malformed buffer."""
    buf = bytes(buf)
    if len(buf) < HEADER_BYTES:
        raise ValueError(f"truncated header: {len(buf)} bytes")
    tag, p8, p32, n_ones, n_bits = _HEADER.unpack_from(buf)
    (crc,) = struct.unpack_from("<H", buf, 14)
    if tag & 0x0F >= len(METHODS) or tag >> 5:
        raise ValueError(f"unknown method tag {tag:#x}")
    method = METHODS[tag & 0x0F]
    words = words_from_bytes(buf[HEADER_BYTES:], n_bits)
    params = {"golomb": (p32,), "rice_rows": (p8 & 0x1F, p32, p8 >> 7), "kernel": (p8, p32)}.get(method, ())
    if _header14(method, params, n_ones, bool(tag & 0x10), n_bits) != buf[:14]:
        raise ValueError("non-zero unused header field")
    return EncodedLayer(method, params, n_ones, bool(tag & 0x10), n_bits, crc, words)


def _check(enc, shape, check_crc):
    """Validate header fields against the shape (and the CRC); returns the words."""
    n = int(np.prod(shape))
    if enc.method not in METHODS:
        raise ValueError(f"unknown method {enc.method!r}")
    if not 0 <= enc.n_ones <= n or not 0 <= enc.n_bits < 1 << 32:
        raise ValueError(f"header out of range: n_ones={enc.n_ones}, n_bits={enc.n_bits}, N={n}")
    if enc.complement and enc.method not in ("golomb", "rice_rows", "enum"):
        raise ValueError(f"complement flag not valid for method {enc.method}")
    if len(enc.params) != _N_PARAMS[enc.method] or not all(0 <= p < 1 << 32 for p in enc.params):
        raise ValueError(f"bad parameters {enc.params} for method {enc.method}")
    if np.ndim(enc.words) != 1:
        raise ValueError("payload words must be a 1-D uint64 array")
    words = golomb.check_stream(enc.words, enc.n_bits)
    if check_crc:
        head = _header14(enc.method, enc.params, enc.n_ones, enc.complement, enc.n_bits)
        if _crc(head, words_to_bytes(words, enc.n_bits)) != enc.crc:
            raise ValueError("CRC mismatch: corrupt header or stream")
    return words


def decode_layer(enc, shape, check_crc=True):
    """Decode ``enc`` to a bool array of ``shape``; ValueError on any inconsistency."""
    shape = tuple(int(s) for s in shape)
    words = _check(enc, shape, check_crc)
    n, (M, K) = int(np.prod(shape)), _rows_view(shape)
    method, params = enc.method, enc.params
    if method == "bitmap":
        if enc.n_bits != n:
            raise ValueError(f"bitmap of {enc.n_bits} bits for {n} weights")
        flat = bits_from_words(words, n)
    elif method == "golomb":
        flat = golomb.golomb_decode(words, enc.n_bits, n, params[0])
    elif method == "rice_rows":
        flat = rows.row_rice_decode(words, enc.n_bits, M, K, *params)
    elif method == "kernel":
        if not _is_conv3x3(shape):
            raise ValueError(f"kernel-code stream for non-3x3-conv shape {shape}")
        codes = kernelcode.kernel_decode(words, enc.n_bits, shape[0] * shape[1], *params)
        flat = kernelcode.kernel_bits(codes, shape[0], shape[1]).reshape(-1)
    else:
        flat = enumcode.enum_decode(words, enc.n_bits, n, enc.n_ones)
    if int(flat.sum()) != enc.n_ones:
        raise ValueError(f"stream decodes to {int(flat.sum())} ones, header says {enc.n_ones}")
    return (~flat if enc.complement else flat).reshape(shape)


def _row_layout(enc, M):
    """(divisor per kept row, kept row numbers, table bits) of a gap-coded layer."""
    if enc.method == "golomb":
        return np.full(M, enc.params[0], np.int64), np.arange(M), 0
    if enc.method == "rice_rows":
        k_min, width, skip = enc.params
        k_rows = rows.read_row_table(enc.words, enc.n_bits, M, k_min, width, skip)
        kept = np.flatnonzero(k_rows >= 0)
        return np.int64(1) << k_rows[kept], kept, M * width
    raise ValueError(f"row index needs a golomb or rice_rows layer, not {enc.method}")


def row_index(enc, shape):
    """Entry points of the kept rows (offsets (M',), carries (M',)) and their cost in bits."""
    M, K = _rows_view(shape)
    row_m, kept, table_bits = _row_layout(enc, M)
    coded = decode_layer(enc, shape).reshape(M, K) ^ enc.complement
    offsets, carries = rows.build_row_index(coded[kept], row_m, table_bits)
    return offsets, carries, rows.row_index_bits(offsets, carries, enc.n_bits)


def decode_rows(enc, shape, offsets, carries, r0, r1):
    """Rows r0..r1-1 of the layer as bool (r1 - r0, K), decoded alone from the index."""
    M, K = _rows_view(shape)
    if not 0 <= r0 <= r1 <= M:
        raise ValueError(f"row range {r0}..{r1} outside 0..{M}")
    row_m, kept, _ = _row_layout(enc, M)
    c0, c1 = np.searchsorted(kept, [r0, r1])
    out = np.zeros((r1 - r0, K), bool)
    out[kept[c0:c1] - r0] = rows.decode_rows(enc.words, enc.n_bits, kept.size, K, row_m,
                                             offsets, carries, int(c0), int(c1))
    return ~out if enc.complement else out


def entropy_bound_bytes(w01):
    """ceil(N h(p) / 8) with p the fraction of ones of ``w01``."""
    w = np.asarray(w01)
    p = float(w.mean())
    h = 0.0 if p in (0.0, 1.0) else -p * math.log2(p) - (1 - p) * math.log2(1 - p)
    return math.ceil(w.size * h / 8)
