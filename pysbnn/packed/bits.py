"""Packed +-1 activations travelling between binary layers, in one of two layouts."""

import numpy as np

from ..kernels import words


class Bits:
    """Packed +-1 activations travelling between binary layers.

    ``layout="rows"``: ``words`` uint64 (n, n_words(K)), feature ``k`` of a
    sample at bit ``k % 64`` of word ``k // 64``; ``layout="sliced"``: uint64
    (K, n_words(n)), sample ``b`` of feature ``k`` at bit ``b % 64`` of word
    ``b // 64``. ``ones``: int64 (n,) set bits per sample (``q = 2 ones - K``).
    """

    def __init__(self, words_, K, n, layout, ones):
        self.words, self.K, self.n, self.layout, self.ones = words_, int(K), int(n), layout, ones

    def __len__(self):
        return self.n

    @property
    def shape(self):
        return (self.n, self.K)

    def as_layout(self, layout, backend="auto"):
        """The same bits in ``layout`` (a bit-matrix transpose if it differs)."""
        if layout == self.layout:
            return self
        return Bits(words.transpose_bits(self.words, self.K if layout == "sliced" else self.n, backend),
                    self.K, self.n, layout, self.ones)

    def signs(self, dtype=np.float32):
        """The +-1 values, (n, K)."""
        rows = self.as_layout("rows").words
        return words.unpack_signs(rows, self.K, dtype)
