"""Which packed kernel runs for a layer: the one thin dispatch point.

Dense layers with a binarized input use the bit-sliced, batch-in-the-word
SBNN kernel when the batch fills words (>= ``SLICED_MIN_BATCH`` samples) and
the word-skipping AND + popcount kernel otherwise; 3x3 convolutions use the
SBNN conv kernel (K0 skipped, K1 as shifted copies). Each weight layout
("plan") is prepared once per layer and cached on it. With Numba absent or
``NUMBA_DISABLE_JIT=1`` every call runs the NumPy reference (same results).
"""

import numpy as np

from . import bits as B
from .conv_kernels import SbnnConvPlan, sbnn_conv3x3
from .conv_reference import conv3x3_ones, sbnn_ops
from .dense_kernels import prepare_sliced, prepare_xnor, sbnn_gemm_sliced, xnor_gemm

#: batch size from which the bit-sliced dense kernel is used ...
SLICED_MIN_BATCH = 64
#: ... for layers with at most this fraction of ones (its work scales with
#: the ones; one XNOR-popcount pass over all words wins for denser layers).
SLICED_MAX_DENSITY = 0.25


def _plan(layer, kind, make):
    plans = layer.__dict__.setdefault("_plans", {})
    if kind not in plans:
        plans[kind] = make()
    return plans[kind]


def sbnn_dense(layer, x):
    """``z' = w01 . x`` (int32 (n, M)), ``q = 1 . x`` (int64 (n,)) and the ops executed.

    ``x``: float (n, K) whose signs are the +-1 inputs, or packed rows (uint64 words).
    """
    K, w01 = layer.in_features, layer.words
    packed_rows = x.dtype == np.uint64
    n = len(x)
    if packed_rows:
        q = 2 * B.popcount_numpy(x).sum(axis=1) - K
    else:
        q = 2 * np.count_nonzero(x >= 0, axis=1).astype(np.int64) - K
    density = _plan(layer, "density", lambda: B.popcount_numpy(w01).sum() / max(w01.shape[0] * K, 1))
    if n >= SLICED_MIN_BATCH and density <= SLICED_MAX_DENSITY:
        xf = B.unpack_signs(x, K) if packed_rows else x
        plan = _plan(layer, "sliced", lambda: prepare_sliced(w01, K))
        z, ops = sbnn_gemm_sliced(B.pack_batch_sliced(xf), plan, n, return_ops=True)
    else:
        # w01 . x = (s . x + q) / 2 with s = 2 w01 - 1 in {-1,+1}: one XNOR-popcount
        # pass over all words (exact integers), the fastest path for dense layers.
        a = x if packed_rows else B.pack_signs(x)
        plan = _plan(layer, "xnor", lambda: prepare_xnor(w01, K))
        s_dot_x, ops = xnor_gemm(a, plan, return_ops=True)
        z = ((s_dot_x + q[:, None]) // 2).astype(np.int32)
    return z, q, int(ops)


def sbnn_conv(layer, xs):
    """SBNN conv of +-1 NHWC ``xs``: ``z'`` (n, ho, wo, c_out), ``q`` (n, ho, wo, 1), ops."""
    if layer.kernel_size == 3:
        plan = _plan(layer, "conv3x3", lambda: SbnnConvPlan(layer.ones_kernels(), binary=True))
        z, ops = sbnn_conv3x3(xs, plan, layer.stride, layer.padding)
        return z, conv3x3_ones(xs, layer.stride, layer.padding), int(ops["total"])
    return _generic_conv(layer, xs)


def _generic_conv(layer, xs):
    """Exact integer im2col product for kernels other than 3x3 (counts its ones)."""
    from ..functional import conv2d_forward
    w01 = layer.ones_kernels().astype(np.float64)
    z, _ = conv2d_forward(xs.astype(np.float64), w01, None, layer.stride, layer.padding)
    ones = np.ones((1,) + w01.shape[1:])
    q, _ = conv2d_forward(xs.astype(np.float64), ones, None, layer.stride, layer.padding)
    positions = z.shape[0] * z.shape[1] * z.shape[2]
    return np.rint(z).astype(np.int32), np.rint(q).astype(np.int64), int(w01.sum()) * positions
