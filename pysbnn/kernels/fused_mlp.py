r"""A whole packed MLP in one kernel call, sample by sample: the small-batch path.

At batch 1 a packed layer's own work is a few microseconds, and one Python
call per layer (dispatch, allocation, a Numba dispatcher per kernel) costs as
much again. This kernel runs every binary layer of an MLP for each sample in
turn, in one call:

* layer 0 reads the uint8 pixels: ``z'_m = sum_{k in ones(m)} x_k`` (gather),
  or, when it costs less, the weight columns of the non-zero pixels, 32
  outputs per vector add (``gather.columns``); ``Q = sum_k x_k``;
* every hidden layer reads the bits of the previous one: ``z'_m = 2
  popcount(w01_m & a) - popcount(w01_m)``, ``q = 2 ones(a) - K``;
* each layer but the last emits the bits of its integer threshold test
  (``kernels.threshold``: ``dir * u_F >= T`` with ``u_F = (z' << F) + t``);
* the last layer returns ``z'`` and ``q``, which ``pysbnn.packed`` turns into
  logits (Eq. 20 with the folded BatchNorm).

The same integers as the layer-by-layer kernels (tests compare them).
"""

from typing import NamedTuple

import numpy as np

from .gather import COLUMN_ADDS, columns, register_add_rows
from .intrinsics import popcount64
from .jit import Twins
from .threshold import HELPERS, emit_rows, fires, sample_offset

class Chain(NamedTuple):
    """The layers of an MLP as flat arrays (one Numba call unboxes few arguments).

    Layer 0 (pixels): ``indptr``, ``idx``, ``w01t`` (``gather.GatherWeights``) and
    its threshold ``T0``, ``dir0``, ``fix0 = [F, XI, G]``. Layers 1 .. L (bits in):
    row ``r`` of layer ``i`` is ``words[off[i, 0] + r Kw : ...]`` with
    ``shape[i] = (M, Kw, K)``, its ones ``ones[off[i, 1] + r]``, its threshold
    ``T[off[i, 2] + r]``, ``dir[...]`` and ``fix[i]`` (the last layer has none).
    """
    indptr: np.ndarray      # int64
    idx: np.ndarray         # uint32
    w01t: np.ndarray        # uint8 (K0, M0 padded)
    T0: np.ndarray          # int32 (M0,)
    dir0: np.ndarray        # int8 (M0,)
    fix0: np.ndarray        # int64 (3,)
    words: np.ndarray       # uint64, every later layer's rows
    shape: np.ndarray       # int64 (L, 3): M, Kw, K
    off: np.ndarray         # int64 (L, 3): words, ones, threshold offsets
    ones: np.ndarray        # int64
    T: np.ndarray           # int32
    dir: np.ndarray         # int8
    fix: np.ndarray         # int64 (L, 3)


def chain_of(gather_weights, first_threshold, later):
    """A :class:`Chain` from layer 0's gather layout and threshold and the later
    layers' ``(words, ones, threshold or None)``."""
    shape, off, at = [], [], [0, 0, 0]
    for w, ones, th in later:
        shape.append((w.shape[0], w.shape[1], 0))
        off.append(tuple(at))
        at = [at[0] + w.size, at[1] + w.shape[0], at[2] + (w.shape[0] if th is not None else 0)]
    fix = [(th.F, th.XI, th.G) if th is not None else (0, 0, 0) for _, _, th in later]
    cat = lambda parts, dtype: np.concatenate([np.asarray(p, dtype).ravel() for p in parts] or [np.zeros(0, dtype)])
    ths = [th for _, _, th in later if th is not None]
    t0 = first_threshold
    return Chain(gather_weights.indptr, gather_weights.indices, gather_weights.w01t, t0.T, t0.dir,
                 np.array([t0.F, t0.XI, t0.G], np.int64), cat([w for w, _, _ in later], np.uint64),
                 np.array(shape, np.int64).reshape(-1, 3), np.array(off, np.int64).reshape(-1, 3),
                 cat([o for _, o, _ in later], np.int64), cat([th.T for th in ths], np.int32),
                 cat([th.dir for th in ths], np.int8), np.array(fix, np.int64).reshape(-1, 3))


def _first(x, indptr, idx, w01t, z, ks, vs):
    """Layer 0 of one sample: ``z'`` into z (M,), returns ``Q``: the weight columns of
    the non-zero pixels (``gather.columns``) or the pixels under the ones, the cheaper."""
    M, nonzero = z.shape[0], 0
    for k in range(x.shape[0]):
        nonzero += x[k] != 0
    if nonzero * M < COLUMN_ADDS * idx.shape[0]:
        return columns(x, w01t, z, ks, vs)
    Q = 0
    for k in range(x.shape[0]):
        Q += np.int64(x[k])
    for m in range(M):
        acc = np.int32(0)
        for t in range(indptr[m], indptr[m + 1]):
            acc += np.int32(x[idx[t]])
        z[m] = acc
    return Q


def _binary(a, words, ones, z):
    """``z' = 2 popcount(w01 & a) - ones`` of one sample into z (M,); words (M, Kw)."""
    for m in range(words.shape[0]):
        acc = 0
        for w in range(words.shape[1]):
            acc += popcount64(words[m, w] & a[w])
        z[m] = 2 * acc - ones[m]


def _run(x, indptr, idx, w01t, T0, dir0, fix0, words, shape, off, ones_, T, dir_, fix,
         z, bits, z_last, q_last):
    """Every sample through the chain (the :class:`Chain` fields, then ``z``: int32
    scratch of the widest layer, ``bits``: (layers, words) scratch, the outputs)."""
    M0, L = T0.shape[0], shape.shape[0]
    ks, vs = np.empty(x.shape[1], np.uint32), np.empty(x.shape[1], np.int32)
    for b in range(x.shape[0]):
        Q = _first(x[b], indptr, idx, w01t, z[:M0], ks, vs)
        t0 = sample_offset(Q, fix0[1], fix0[2], fix0[0])
        ones = emit_rows(z[:M0], t0, T0, dir0, fix0[0], bits[0, :(M0 + 63) // 64])
        K = M0
        for i in range(L):
            M, Kw = shape[i, 0], shape[i, 1]
            o_w, o_n, o_t = off[i, 0], off[i, 1], off[i, 2]
            rows = words[o_w:o_w + M * Kw].reshape((M, Kw))
            q = 2 * ones - K
            if i == L - 1:
                _binary(bits[i], rows, ones_[o_n:o_n + M], z_last[b])
                q_last[b] = q
            else:
                _binary(bits[i], rows, ones_[o_n:o_n + M], z[:M])
                t = sample_offset(q, fix[i, 1], fix[i, 2], fix[i, 0])
                ones = emit_rows(z[:M], t, T[o_t:o_t + M], dir_[o_t:o_t + M], fix[i, 0],
                                 bits[i + 1, :(M + 63) // 64])
            K = M
    return 0


_TWINS = Twins({"run": _run}, helpers=HELPERS + (_first, _binary, columns), inline=(fires,),
               setup=(register_add_rows,))


def scratch_of(chain):
    """The kernel's work buffers for ``chain`` (reusable across calls): ``(z, bits)``."""
    widths = [chain.T0.shape[0]] + [int(m) for m in chain.shape[:, 0]]
    return np.empty(max(widths), np.int32), np.zeros((len(widths) - 1, (max(widths) + 63) // 64), np.uint64)


def fused_mlp(x, chain, scratch=None):
    """``(z', q)`` of the last layer of a packed MLP (a :class:`Chain`) for uint8 inputs (B, K).

    ``scratch``: buffers from :func:`scratch_of` (made here when None). The
    chain's arrays are passed one by one: Numba's dispatcher types arrays on a
    fast path and tuples on a slow one (measured: 2 us more per call).
    Returns int32 (B, M_last) and int64 (B,).
    """
    z, bits = scratch if scratch is not None else scratch_of(chain)
    B = x.shape[0]
    z_last = np.empty((B, chain.shape[-1, 0]), np.int32)
    q_last = np.empty(B, np.int64)
    _TWINS["run"](np.ascontiguousarray(x, dtype=np.uint8), *chain, z, bits, z_last, q_last)
    return z_last, q_last
