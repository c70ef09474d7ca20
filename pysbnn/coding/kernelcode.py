"""Coding of 3x3 conv layers by their 9-bit kernel codes.

Kernel (o, i) of a (C_out, C_in, 3, 3) {0,1} array has code
``c = sum_t b_t 2**t`` over the taps ``t = 3*dy + dx`` (as in
``pysbnn.analysis.kernel_codes``); K0 = code 0. Kernels are numbered
``j = o * C_in + i``.

Stream = Huffman table, then the kernels:

* variant 0 ("gaps"): for each non-K0 kernel in order, the Golomb codeword
  (divisor m, see :mod:`golomb`) of the number of K0 kernels before it, then
  the Huffman codeword of its code (alphabet 1..511 and ESC). The stream ends
  after the last non-K0 kernel (at ``n_bits``); trailing K0 kernels are
  implied.
* variant 1 ("all"): the Huffman codewords of all ``C_out * C_in`` codes
  (alphabet 0..511 and ESC), nothing else.

Escape: symbol ESC = 512 is followed by the code in 9 raw bits; codes rarer
than a threshold (chosen for the fewest total bits) are sent that way, so the
table only lists the frequent codes.

Huffman table: number of used symbols u (10 bits), then per used symbol in
increasing order the Elias gamma of ``symbol - previous`` (previous = -1
first) and its code length in 5 bits. Lengths are canonical (shorter first,
then by symbol), at most 24; a table with one symbol has length 0 (its
codeword is empty). A codeword is written most significant bit first.
"""
import heapq

import numpy as np

from ..kernels.jit import Twins
from .bitio import BitReader, BitWriter, read_bits, read_unary
from .golomb import ERRORS, _params, best_golomb_m, bit_length, check_stream, golomb_fields, ones_and_gaps

LMAX = 24
ESC = 512
ALPHABET = 513
KERNEL_ERRORS = {**ERRORS, 4: "invalid Huffman codeword", 5: "K0 coded as a non-K0 kernel"}


def kernel_codes(w4):
    """Codes (C_out * C_in,) int64 of a (C_out, C_in, 3, 3) {0,1} array."""
    w4 = np.asarray(w4)
    return (w4.reshape(-1, 9).astype(np.int64) << np.arange(9)).sum(1)


def kernel_bits(codes, c_out, c_in):
    """Inverse of :func:`kernel_codes`: bool (C_out, C_in, 3, 3)."""
    return ((np.asarray(codes)[:, None] >> np.arange(9)) & 1).astype(bool).reshape(c_out, c_in, 3, 3)


def huffman_lengths(counts, lmax=LMAX):
    """Huffman code lengths (alphabet,) for ``counts``; -1 for unused symbols.

    One used symbol gets length 0. Longer than ``lmax``: counts are halved
    (used ones kept >= 1) and the code rebuilt.
    """
    counts = np.asarray(counts, np.int64)
    used = np.flatnonzero(counts)
    lengths = np.full(counts.size, -1, np.int64)
    lengths[used] = 0
    while used.size > 1:
        heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
        heapq.heapify(heap)
        depth = dict.fromkeys(used.tolist(), 0)
        while len(heap) > 1:
            c1, t1, s1 = heapq.heappop(heap)
            c2, t2, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
        lengths[used] = [depth[s] for s in used.tolist()]
        if lengths.max() <= lmax:
            break
        counts = np.where(counts > 0, np.maximum(counts // 2, 1), 0)
    return lengths


def canonical_codes(lengths):
    """Canonical codes of ``lengths`` (alphabet,), -1 = unused, and decode tables.

    Returns (codes (alphabet,), first (LMAX+1,), count (LMAX+1,), offset
    (LMAX+1,), symbols sorted by (length, symbol)). ``first[n]`` is the
    first codeword of length n, ``offset[n]`` the index in ``symbols`` of the
    first symbol of length n. ValueError if the Kraft sum exceeds 1.
    """
    lengths = np.asarray(lengths, np.int64)
    count = np.bincount(lengths[lengths > 0], minlength=LMAX + 1)
    if count.size > LMAX + 1 or np.sum(count / 2.0 ** np.arange(LMAX + 1)) > 1:
        raise ValueError("invalid Huffman table: code lengths over-subscribed or too long")
    used = np.flatnonzero(lengths >= 0)
    symbols = used[np.lexsort((used, lengths[used]))]
    first, offset = np.zeros(LMAX + 1, np.int64), np.zeros(LMAX + 1, np.int64)
    for n in range(2, LMAX + 1):
        first[n] = (first[n - 1] + count[n - 1]) << 1
        offset[n] = offset[n - 1] + count[n - 1]
    codes = np.zeros(lengths.size, np.int64)
    for j, s in enumerate(symbols.tolist()):
        n = lengths[s]
        codes[s] = first[n] + j - offset[n] if n else 0
    return codes, first, count, offset, symbols


def write_table(writer, lengths):
    """Append the table of used symbols (lengths >= 0) and their lengths."""
    used = np.flatnonzero(lengths >= 0)
    writer.write(used.size, 10)
    prev = -1
    for s in used.tolist():
        writer.write_gamma(s - prev)
        writer.write(int(lengths[s]), 5)
        prev = s


def read_table(reader, alphabet_lo):
    """Parse a table: lengths (ALPHABET,), -1 = unused; ValueError if malformed."""
    u = reader.read(10)
    if not 1 <= u <= ALPHABET - alphabet_lo:
        raise ValueError(f"Huffman table with {u} symbols")
    lengths, prev = np.full(ALPHABET, -1, np.int64), -1
    for _ in range(u):
        prev += reader.read_gamma(max_bits=10)
        if not alphabet_lo <= prev <= ESC:
            raise ValueError(f"Huffman table symbol {prev} outside {alphabet_lo}..{ESC}")
        lengths[prev] = reader.read(5)
    if (u == 1) != (lengths.max() == 0) or (u > 1 and np.any(lengths == 0)):
        raise ValueError("Huffman table: length 0 is only valid for a single symbol")
    return lengths


def _reversed(codes, lengths):
    """Codes bit-reversed within their lengths, so the LSB-first writer emits MSB first."""
    out = np.zeros_like(codes)
    for i in range(int(lengths.max(initial=0))):
        out |= (((codes >> np.maximum(lengths - 1 - i, 0)) & 1) << i) * (i < lengths)
    return out


def table_bits(lengths):
    """Exact bits of :func:`write_table` for ``lengths``."""
    used = np.flatnonzero(lengths >= 0)
    deltas = np.diff(used, prepend=-1)
    return 10 + int((2 * bit_length(deltas) - 1).sum()) + 5 * used.size


def symbol_plan(syms):
    """Huffman lengths (ALPHABET,) and escape mask (512,) of fewest total bits.

    Tries escape thresholds c_min in {1, 2, 3, 4, 6, 8, 12, ...}: codes seen
    fewer than c_min times are escaped. Total = table + codewords + 9 per escape.
    """
    counts = np.bincount(syms, minlength=512)
    best, c_min = None, 1
    while True:
        escaped = (counts > 0) & (counts < c_min)
        c = np.append(np.where(escaped, 0, counts), counts[escaped].sum())
        lengths = huffman_lengths(c)
        total = table_bits(lengths) + int((c * np.maximum(lengths, 0)).sum()) + 9 * int(c[ESC])
        if best is None or total < best[0]:
            best = (total, lengths, escaped)
        if c_min > counts.max(initial=0):
            return best[1], best[2]
        c_min = c_min + 1 if c_min < 4 else c_min * 3 // 2


def kernel_encode(codes, variant):
    """Stream of kernel ``codes`` (n_kernels,): (words, n_bits, m); m = 0 for variant 1."""
    codes = np.asarray(codes, np.int64)
    syms = codes[codes > 0] if variant == 0 else codes
    lengths, escaped = symbol_plan(syms)
    w = BitWriter()
    if syms.size:
        write_table(w, lengths)
    hcodes, *_ = canonical_codes(lengths)
    esc = escaped[syms]
    hsym = np.where(esc, ESC, syms)
    sym_fields = [_reversed(hcodes[hsym], lengths[hsym]), syms, lengths[hsym], 9 * esc]
    m = 0
    if variant == 0:
        _, gaps, _ = ones_and_gaps(codes > 0)
        m, _ = best_golomb_m(gaps)
        gv, gw = golomb_fields(gaps, m)
        w.write_many(np.column_stack([gv, sym_fields[0], sym_fields[1]]),
                     np.column_stack([gw, sym_fields[2], sym_fields[3]]))
    else:
        w.write_many(np.column_stack(sym_fields[:2]), np.column_stack(sym_fields[2:]))
    words, n_bits = w.finish()
    return words, n_bits, m


def _read_symbol(words, n_bits, pos, first, count, offset, symbols, lmax):
    """Canonical Huffman decode at ``pos``: (symbol, pos, status)."""
    if lmax == 0:
        return symbols[0], pos, 0
    code = 0
    for n in range(1, lmax + 1):
        if pos >= n_bits:
            return -1, pos, 1
        code = (code << 1) | np.int64(read_bits(words, pos, 1))
        pos += 1
        idx = code - first[n]
        if 0 <= idx < count[n]:
            return symbols[offset[n] + idx], pos, 0
    return -1, pos, 4


def _kernel_loop(words, n_bits, pos, n, variant, m, b, t, first, count, offset, symbols, lmax, out):
    """Decode kernel codes into ``out`` (n,); returns status (0 or KERNEL_ERRORS key)."""
    s = 0
    while (variant == 0 and pos < n_bits) or (variant == 1 and s < n):
        if s >= n:
            return 3
        if variant == 0:
            q, pos = read_unary(words, n_bits, pos)
            if q < 0:
                return 1
            if q > (n - s - 1) // m:
                return 2
            r = 0
            if b > 0:
                if pos + b > n_bits + 1:
                    return 1
                r = np.int64(read_bits(words, pos, b - 1))
                pos += b - 1
                if r >= t:
                    if pos >= n_bits:
                        return 1
                    if np.int64(read_bits(words, pos, 1)) == 1:
                        r += (1 << (b - 1)) - t
                    pos += 1
            s += q * m + r
            if s >= n:
                return 2
        sym, pos, status = _read_symbol(words, n_bits, pos, first, count, offset, symbols, lmax)
        if status:
            return status
        if sym == 512:
            if pos + 9 > n_bits:
                return 1
            sym = np.int64(read_bits(words, pos, 9))
            pos += 9
        if variant == 0 and sym == 0:
            return 5
        out[s] = sym
        s += 1
    return 3 if pos != n_bits else 0


_TWINS = Twins({"kernel": _kernel_loop}, helpers=(read_bits, read_unary, _read_symbol))


def kernel_loop(*args):
    """The decode loop, compiled when numba runs (:meth:`~pysbnn.kernels.jit.Twins.function`)."""
    return _TWINS.function("kernel")(*args)


def kernel_decode(words, n_bits, n_kernels, variant, m):
    """Inverse of :func:`kernel_encode`: codes (n_kernels,) int64."""
    if variant not in (0, 1) or (variant == 0 and not 1 <= m <= 1 << 32):
        raise ValueError(f"bad kernel-code header: variant={variant}, m={m}")
    words = check_stream(words, n_bits)
    out = np.zeros(n_kernels, np.int64)
    if n_bits == 0 and (variant == 0 or n_kernels == 0):
        return out
    reader = BitReader(words, n_bits)
    lengths = read_table(reader, alphabet_lo=1 - variant)
    _, first, count, offset, symbols = canonical_codes(lengths)
    b, t, _ = _params(max(m, 1))
    status = kernel_loop(words, int(n_bits), reader.pos, int(n_kernels), int(variant), int(max(m, 1)),
                         int(b), int(t), first, count, offset, symbols.astype(np.int64),
                         int(lengths.max()), out)
    if status:
        raise ValueError(f"corrupt kernel-code stream: {KERNEL_ERRORS[status]}")
    return out
