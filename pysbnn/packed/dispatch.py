"""Which kernel runs for a packed layer: the one dispatch point of ``pysbnn.packed``.

Dense layers with a binarized input use the bit-sliced, batch-in-the-word
SBNN kernel (:mod:`pysbnn.kernels.sliced`) when the batch fills words (at
least ``SLICED_MIN_BATCH`` samples) and the layer is sparse; one XNOR-popcount
pass (:mod:`pysbnn.kernels.xnor`) otherwise. 3x3 convolutions use Kernel B
(:mod:`pysbnn.kernels.conv_sbnn`: K0 skipped, K1 as shifted copies), other
kernel sizes an exact integer im2col product. Each weight layout ("plan") is
prepared once per layer and cached on it. Every function returns the
operations it executed, which ``count_bops`` reports.
"""

import numpy as np

from ..functional import conv2d_forward
from ..kernels import sliced, words, xnor
from ..kernels.conv_sbnn import SbnnConvPlan, conv3x3_ones, sbnn_conv3x3

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


def sbnn_dense(layer, x, backend="auto"):
    """``z' = w01 . x`` (int32 (n, M)), ``q = 1 . x`` (int64 (n,)) and the ops executed.

    ``x``: float (n, K) whose signs are the +-1 inputs, or packed rows (uint64 words).
    """
    K, w01 = layer.in_features, layer.words
    packed_rows = x.dtype == np.uint64
    n = len(x)
    if packed_rows:
        q = words.input_dot_ones(x, K)
    else:
        q = 2 * np.count_nonzero(x >= 0, axis=1).astype(np.int64) - K
    density = _plan(layer, "density", lambda: words.popcount_numpy(w01).sum() / max(w01.shape[0] * K, 1))
    if n >= SLICED_MIN_BATCH and density <= SLICED_MAX_DENSITY:
        xf = words.unpack_signs(x, K) if packed_rows else x
        plan = _plan(layer, "sliced", lambda: sliced.prepare_sliced(w01, K))
        z, ops = sliced.sbnn_gemm_sliced(words.pack_batch_sliced(xf, backend), plan, n,
                                         backend=backend, return_ops=True)
    else:
        # w01 . x = (s . x + q) / 2 with s = 2 w01 - 1 in {-1,+1}: one XNOR-popcount
        # pass over all words (exact integers), the fastest path for dense layers.
        a = x if packed_rows else words.pack_signs(x, backend)
        plan = _plan(layer, "xnor", lambda: xnor.prepare_xnor(w01, K))
        s_dot_x, ops = xnor.xnor_gemm(a, plan, backend=backend, return_ops=True)
        z = ((s_dot_x + q[:, None]) // 2).astype(np.int32)
    return z, q, int(ops)


def sbnn_conv(layer, xs, backend="auto"):
    """SBNN conv of +-1 NHWC ``xs``: ``z'`` (n, ho, wo, c_out), ``q`` (n, ho, wo, 1), ops."""
    if layer.kernel_size == 3:
        plan = _plan(layer, "conv3x3", lambda: SbnnConvPlan(layer.ones_kernels(), binary=True))
        z, ops = sbnn_conv3x3(xs, plan, layer.stride, layer.padding, backend=backend)
        return z, conv3x3_ones(xs, layer.stride, layer.padding), int(ops["total"])
    return _generic_conv(layer, xs)


def _generic_conv(layer, xs):
    """Exact integer im2col product for kernels other than 3x3 (counts its ones)."""
    w01 = layer.ones_kernels().astype(np.float64)
    z, _ = conv2d_forward(xs.astype(np.float64), w01, None, layer.stride, layer.padding)
    ones = np.ones((1,) + w01.shape[1:])
    q, _ = conv2d_forward(xs.astype(np.float64), ones, None, layer.stride, layer.padding)
    positions = z.shape[0] * z.shape[1] * z.shape[2]
    return np.rint(z).astype(np.int32), np.rint(q).astype(np.int64), int(w01.sum()) * positions
