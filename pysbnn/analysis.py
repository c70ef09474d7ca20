"""Kernel statistics and analytic operation / parameter counts on weight
arrays (paper Sec. 3.5, Sec. 4.1 "Effects of network sparsification", Fig. 2,
Tables 2-3). Pure functions of NumPy arrays; model-level wrappers live
elsewhere.

Conventions
-----------
* A weight is a *one* of the {0,1} domain when ``w >= 0`` (``sign(0) = +1``,
  as everywhere in pysbnn; the reference code counts ``w > 0``, which differs
  only on exact zeros). Bool arrays, or any array with ``binary=True``, are
  taken as already binary (non-zero = one).
* A 3x3 kernel ``w[o, i]`` is the 9-bit code ``sum_t b_t 2^t`` with the taps
  numbered row-major, ``t = 3*dy + dx`` (top-left bit 0, bottom-right bit 8).
  K0 = code 0 (Hamming weight 0), K1 = the nine codes 1, 2, 4, ..., 256.
* ``positions`` is the number of output positions the layer computes
  (``H_out * W_out`` per image; multiply by the batch for a batch).
* BOPs follow the paper: a dense BNN layer costs ``2N`` per output position
  (N XNOR + N popcount). The SBNN kernel's executed count ("sparse
  operations") is one op per one-weight per position (popcount over the ones,
  no XNOR; a K1 kernel's shifted-plane add also counts 1), so
  ``bops_sparse == sbnn_conv_ops(...)["total"]`` and it equals what
  ``pysbnn.kernels.conv_sbnn.sbnn_conv3x3`` records while it runs.
"""
import numpy as np

from .entropy import binary_entropy, fraction_of_ones, ones_of

__all__ = ["kernel_codes", "hamming_weights", "kernel_histogram", "k0_k1",
           "zero_filters", "bops_bnn", "bops_pr_k0k1", "bops_sparse", "sbnn_conv_ops",
           "bparams", "bparams_pr", "bops_bnn_dense", "bops_sparse_dense", "bops_wordskip",
           "bits_per_weight", "K1_CODES"]

K1_CODES = tuple(1 << t for t in range(9))

def _conv_ones(w, binary):
    b = ones_of(w, binary)
    if b.ndim != 4 or b.shape[2:] != (3, 3):
        raise ValueError(f"expected conv weights (C_out, C_in, 3, 3), got {b.shape}")
    return b


def kernel_codes(w, binary=None):
    """9-bit code of every 3x3 kernel.

    .. math:: code[o, i] = \\sum_{t=0}^{8} b[o, i, t // 3, t \\% 3]\\, 2^t

    w: (C_out, C_in, 3, 3) latent or binary. Returns int64 (C_out, C_in).
    """
    b = _conv_ones(w, binary)
    return (b.reshape(b.shape[0], b.shape[1], 9).astype(np.int64) << np.arange(9)).sum(-1)


def hamming_weights(codes):
    """Number of ones of each code (popcount)."""
    return np.bitwise_count(np.asarray(codes, np.int64)).astype(np.int64)


def kernel_histogram(w, binary=None):
    """Histogram of the kernels (paper Fig. 2).

    Returns (by_code int64 (512,), by_hamming_weight int64 (10,)): number of
    kernels with each 9-bit code and with each Hamming weight 0..9.
    """
    codes = kernel_codes(w, binary).ravel()
    return (np.bincount(codes, minlength=512).astype(np.int64),
            np.bincount(hamming_weights(codes), minlength=10).astype(np.int64))


def k0_k1(w, binary=None):
    """Fractions and counts of K0 (no one) and K1 (exactly one) kernels
    (Tables 2-3). Returns (frac_k0, frac_k1, n_k0, n_k1)."""
    hw = hamming_weights(kernel_codes(w, binary))
    n_k0, n_k1 = int((hw == 0).sum()), int((hw == 1).sum())
    return n_k0 / hw.size, n_k1 / hw.size, n_k0, n_k1


def zero_filters(w, binary=None):
    """Number of output filters whose kernels are all zero (prunable filters);
    works for conv (C_out, C_in, 3, 3) and dense (out, in) weights."""
    b = ones_of(w, binary)
    return int((~b.reshape(b.shape[0], -1).any(1)).sum())


def bops_bnn(C_out, C_in, k, out_positions):
    """Binary operations of a dense BNN conv (paper: O_BNN = 2N per output).

    .. math:: BOPs = 2\\, C_{out} C_{in} k^2 \\cdot positions
    """
    return 2 * int(C_out) * int(C_in) * int(k) * int(k) * int(out_positions)


def _layers(w, positions):
    """Normalise (array, int) or (sequence of arrays, sequence of ints)."""
    if isinstance(w, (list, tuple)):
        positions = list(positions) if np.ndim(positions) else [positions] * len(w)
        if len(positions) != len(w):
            raise ValueError("one positions value per layer is needed")
        return list(zip(w, positions))
    return [(w, positions)]


def bops_pr_k0k1(w, positions, binary=None):
    """Table 2's "BOPs PR" of the SBNN: the fraction of the BNN operations
    that K0 and K1 kernels remove (a K0 kernel is skipped, a K1 kernel is a
    shifted copy), weighted by each layer's output size.

    .. math::
        PR = \\frac{\\sum_\\ell (n_{K0} + n_{K1})\\, 2 k^2 P_\\ell}
                  {\\sum_\\ell n_{kernels}\\, 2 k^2 P_\\ell}

    w: one conv weight array or a list of them; positions: output positions
    (one per layer for a list).
    """
    removed = total = 0
    for wl, pos in _layers(w, positions):
        b = _conv_ones(wl, binary)
        _, _, n0, n1 = k0_k1(b, True)
        removed += (n0 + n1) * 2 * 9 * int(pos)
        total += bops_bnn(b.shape[0], b.shape[1], 3, pos)
    return removed / total


def bops_sparse(w, positions, binary=None):
    """"Sparse operations on FPGA" (Sec. 3.5, 4.2): one popcount operation per
    one-weight per output position, no XNOR. Compare with ``bops_bnn`` (2N).
    Works for conv and dense weights; w may be a list (then positions too)."""
    return sum(int(ones_of(wl, binary).sum()) * int(pos) for wl, pos in _layers(w, positions))


def sbnn_conv_ops(w, positions, binary=None):
    """Operations Kernel B executes (kernels.conv_sbnn.sbnn_conv3x3 records the
    same): K0 kernels 0, a K1 kernel 1 shifted-plane add per position, a
    kernel of Hamming weight h >= 2 h popcount ops per position.
    Returns dict(k1_shift, popcount, total)."""
    hw = hamming_weights(kernel_codes(w, binary))
    k1 = int((hw == 1).sum()) * int(positions)
    multi = int(hw[hw >= 2].sum()) * int(positions)
    return {"k1_shift": k1, "popcount": multi, "total": k1 + multi}


def bparams(w, binary=None):
    """Binary parameters of the SBNN storage rule of Table 3: 2 bits per
    kernel (class K0 / K1 / other), +4 bits for the position of a K1
    kernel's one, +9 bits for every kernel with Hamming weight >= 2.
    w may be a list of conv weights (summed)."""
    total = 0
    for wl in (w if isinstance(w, (list, tuple)) else [w]):
        hw = hamming_weights(kernel_codes(wl, binary))
        total += 2 * hw.size + 4 * int((hw == 1).sum()) + 9 * int((hw >= 2).sum())
    return total


def bparams_pr(w, binary=None):
    """Table 3's "BParams PR": ``1 - bparams / (9 * n_kernels)``, the
    fraction of the BNN's 9 bits per kernel saved."""
    ws = w if isinstance(w, (list, tuple)) else [w]
    n_kernels = sum(int(np.prod(np.shape(wl)[:2])) for wl in ws)
    return 1 - bparams(ws, binary) / (9 * n_kernels)


def bops_bnn_dense(M, K, B=1):
    """Binary operations of a dense BNN layer (M outputs, K inputs) on B
    samples: ``2 * M * K * B`` (XNOR + popcount per weight)."""
    return 2 * int(M) * int(K) * int(B)


def bops_sparse_dense(w, B=1, binary=None):
    """Sparse operations of a dense {0,1} layer: ones * B."""
    return bops_sparse(w, B, binary)


def bops_wordskip(w01_bits, B=1):
    """Bit operations of the word-skipping kernel (``kernels.wordskip``):
    AND + popcount over every bit of every *non-zero* 64-bit weight word,
    ``2 * 64 * nnz_words * B``."""
    return 2 * 64 * int(np.count_nonzero(np.asarray(w01_bits))) * int(B)


def bits_per_weight(w, binary=None):
    """Entropy h(p) of the layer's fraction of ones in bits per weight (Eq. 6)."""
    return float(binary_entropy(fraction_of_ones([w], binary)))
