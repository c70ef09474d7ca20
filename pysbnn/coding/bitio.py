"""Bit streams on little-endian uint64 words.

Bit order: bit ``i`` of a stream is bit ``i % 64`` of word ``i // 64``; since
the words are little-endian, it is also bit ``i % 8`` of byte ``i // 8``, so a
stream is written to a file as its first ``ceil(n_bits / 8)`` bytes and a C
reader may fetch bytes or words alike. A field of ``w`` bits holding value
``v`` occupies stream bits ``pos .. pos+w-1`` with the least significant bit
of ``v`` first. Unary ``q`` is ``q`` zero bits then a one bit (so a C reader
finds it with count-trailing-zeros). Bits past ``n_bits`` in the last word are
zero.

Vectorised writers (``write_fields``, ``BitWriter``) build whole streams;
scalar readers (``read_bits``, ``read_unary``) are plain functions that the
decode loops call, compiled by numba or not.
"""
import numpy as np

U64 = np.dtype("<u8")


def words_from_bits(bits):
    """Pack a 1-D bool/{0,1} array (n_bits,) into uint64 words: (words, n_bits)."""
    bits = np.asarray(bits).reshape(-1).astype(bool)
    n_bits = bits.size
    packed = np.packbits(bits, bitorder="little")
    padded = np.zeros(-(-n_bits // 64) * 8, np.uint8)
    padded[:packed.size] = packed
    return padded.view(U64).copy(), n_bits


def bits_from_words(words, n_bits):
    """Unpack the first ``n_bits`` bits of uint64 ``words`` to a bool array (n_bits,)."""
    raw = np.ascontiguousarray(words, U64).view(np.uint8)
    if n_bits > raw.size * 8:
        raise ValueError(f"stream truncated: {n_bits} bits declared, {raw.size * 8} present")
    return np.unpackbits(raw, count=n_bits, bitorder="little").astype(bool)


def words_to_bytes(words, n_bits):
    """The ``ceil(n_bits / 8)`` bytes that a file holds for this stream."""
    return np.ascontiguousarray(words, U64).view(np.uint8)[:-(-n_bits // 8)].tobytes()


def words_from_bytes(buf, n_bits):
    """Inverse of :func:`words_to_bytes`; checks length and zero padding."""
    n_bytes = -(-n_bits // 8)
    if len(buf) != n_bytes:
        raise ValueError(f"stream has {len(buf)} bytes, {n_bytes} expected for {n_bits} bits")
    padded = np.zeros(-(-n_bits // 64) * 8, np.uint8)
    padded[:n_bytes] = np.frombuffer(buf, np.uint8)
    if n_bits % 8 and padded[n_bytes - 1] >> (n_bits % 8):
        raise ValueError("non-zero padding bits after the end of the stream")
    return padded.view(U64).copy()


def write_fields(values, widths):
    """Concatenate fields: value ``values[j]`` in ``widths[j]`` bits, LSB first.

    values : (n,) non-negative ints, ``values[j] < 2**widths[j]``; a field of
        more than 64 bits must hold 0 (a run of zeros, e.g. a long unary).
    Returns (words uint64, n_bits) with ``n_bits = sum(widths)``.
    """
    values = np.asarray(values, np.uint64).reshape(-1)
    widths = np.asarray(widths, np.int64).reshape(-1)
    keep = widths > 0
    values, widths = values[keep], widths[keep]
    small = widths < 64
    if np.any(values[small] >> widths[small].astype(np.uint64)) or np.any(values[~small & (widths > 64)]):
        raise ValueError("a field value does not fit its width")
    n_bits = int(widths.sum())
    starts = np.cumsum(widths) - widths
    j = np.arange(n_bits, dtype=np.int64) - np.repeat(starts, widths)
    v = np.repeat(values, widths)
    bits = ((v >> np.minimum(j, 63).astype(np.uint64)) & np.uint64(1)).astype(bool) & (j < 64)
    return words_from_bits(bits)


class BitWriter:
    """Collects fields (scalars or whole arrays) and packs them once in ``finish``."""

    def __init__(self):
        self._values, self._widths = [], []

    def write(self, value, width):
        """Append ``value`` in ``width`` bits (LSB first)."""
        self._values.append(np.array([value], np.uint64))
        self._widths.append(np.array([width], np.int64))

    def write_many(self, values, widths):
        """Append arrays of fields, as :func:`write_fields` takes them."""
        self._values.append(np.asarray(values, np.uint64).reshape(-1))
        self._widths.append(np.broadcast_to(np.asarray(widths, np.int64), np.shape(values)).reshape(-1))

    def write_unary(self, q):
        """Append unary ``q``: ``q`` zeros, then a one."""
        self.write(0, q)
        self.write(1, 1)

    def write_gamma(self, v):
        """Append Elias gamma of ``v >= 1``: unary(bit_length(v) - 1), then the low bits of v."""
        nb = int(v).bit_length()
        self.write_unary(nb - 1)
        self.write(int(v) & ((1 << (nb - 1)) - 1), nb - 1)

    def finish(self):
        """Return (words uint64, n_bits) of everything written."""
        if not self._values:
            return np.zeros(0, U64), 0
        return write_fields(np.concatenate(self._values), np.concatenate(self._widths))


def read_bits(words, pos, width):
    """Stream bits ``pos .. pos+width-1`` as a uint64 (0 <= width <= 63).

    The caller checks ``pos + width <= n_bits``; a field may straddle two words.
    """
    if width == 0:
        return np.uint64(0)
    w = pos >> 6
    o = pos & 63
    v = words[w] >> np.uint64(o)
    if o + width > 64:
        v |= words[w + 1] << np.uint64(64 - o)
    return v & ((np.uint64(1) << np.uint64(width)) - np.uint64(1))


def read_unary(words, n_bits, pos):
    """Decode unary at ``pos``: returns (q, pos after the terminating one).

    q = -1 when no one bit occurs before ``n_bits`` (truncated stream).
    Whole zero words are skipped 64 bits at a time.
    """
    q = 0
    while pos < n_bits:
        o = pos & 63
        v = words[pos >> 6] >> np.uint64(o)
        if v == 0:
            q += 64 - o
            pos += 64 - o
            continue
        while (v & np.uint64(1)) == 0:
            v >>= np.uint64(1)
            q += 1
            pos += 1
        if pos >= n_bits:
            return -1, pos
        return q, pos + 1
    return -1, pos


class BitReader:
    """Sequential reader for headers and tables; raises ValueError past ``n_bits``."""

    def __init__(self, words, n_bits, pos=0):
        self.words = np.ascontiguousarray(words, U64)
        if n_bits > self.words.size * 64:
            raise ValueError(f"stream truncated: {n_bits} bits declared, {self.words.size * 64} present")
        self.n_bits, self.pos = int(n_bits), int(pos)

    def read(self, width):
        """Next ``width`` bits (0..63) as an int."""
        if self.pos + width > self.n_bits:
            raise ValueError(f"stream truncated: read of {width} bits at {self.pos} past {self.n_bits}")
        v = int(read_bits(self.words, self.pos, width))
        self.pos += width
        return v

    def read_unary(self):
        """Next unary value."""
        q, pos = read_unary(self.words, self.n_bits, self.pos)
        if q < 0:
            raise ValueError(f"stream truncated: unary at {self.pos} has no terminating one")
        self.pos = int(pos)
        return int(q)

    def read_gamma(self, max_bits=32):
        """Next Elias gamma value (>= 1); at most ``max_bits`` significant bits."""
        nb = self.read_unary()
        if nb >= max_bits:
            raise ValueError(f"gamma code of {nb + 1} bits exceeds {max_bits}")
        return (1 << nb) | self.read(nb)
