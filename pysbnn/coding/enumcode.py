"""Exact enumerative code of the positions of the ones (small layers).

With n ones at ``x_0 < ... < x_{n-1}`` in N bits (n stored in the header),
the rank ``R = sum_i C(x_i, i + 1)`` (combinatorial number system) is a
bijection onto ``0 .. C(N, n) - 1`` and is written in
``B = bit_length(C(N, n) - 1)`` bits, LSB first. Since
``C(N, n) <= 2**(N h(n/N))``, ``B <= ceil(N h(n/N))``: never above the
entropy bound, whatever the realisation. Cost: Python big integers, so it is
offered only up to ``MAX_BITS`` (decoding is O(n log N) binomials).
"""
import math

import numpy as np

from .bitio import bits_from_words, words_from_bits

MAX_BITS = 1024


def enum_bits(N, n):
    """Stream bits ``B = bit_length(C(N, n) - 1)`` of the enumerative code."""
    return (math.comb(int(N), int(n)) - 1).bit_length()


def log2_comb(N, n):
    """log2 C(N, n) from lgamma (a cheap estimate before the exact count)."""
    return (math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1)) / math.log(2)


def enum_encode(bits):
    """(words, n_bits) of the rank of the ones of a flattened {0,1} array."""
    x = np.flatnonzero(np.asarray(bits).reshape(-1))
    rank = sum(math.comb(int(p), i + 1) for i, p in enumerate(x.tolist()))
    n_bits = enum_bits(np.size(bits), x.size)
    stream = np.array([(rank >> j) & 1 for j in range(n_bits)], bool)
    return words_from_bits(stream)


def enum_decode(words, n_bits, N, n):
    """Inverse of :func:`enum_encode`: bool (N,); ValueError on a bad stream."""
    if not 0 <= n <= N:
        raise ValueError(f"{n} ones cannot fit in {N} positions")
    total = math.comb(int(N), int(n))
    if n_bits != (total - 1).bit_length():
        raise ValueError(f"enumerative stream of {n_bits} bits, {(total - 1).bit_length()} expected")
    stream = bits_from_words(words, n_bits)
    rank = int.from_bytes(np.packbits(stream, bitorder="little").tobytes(), "little")
    if rank >= total:
        raise ValueError("enumerative rank out of range (corrupt stream)")
    out = np.zeros(int(N), bool)
    hi = int(N)
    for i in range(int(n), 0, -1):
        lo, top = i - 1, hi - 1          # largest c in [lo, top] with C(c, i) <= rank
        while lo < top:
            mid = (lo + top + 1) // 2
            if math.comb(mid, i) <= rank:
                lo = mid
            else:
                top = mid - 1
        rank -= math.comb(lo, i)
        out[lo] = True
        hi = lo
    return out
