"""Which kernel runs for a packed layer: the one dispatch point of ``pysbnn.packed``.

* Raw inputs (a first layer, its Normalize folded in): uint8 pixels take the
  exact integer gather kernel (:mod:`pysbnn.kernels.gather`), other dtypes a
  float64 product.
* +-1 inputs (:class:`~pysbnn.packed.layers.Bits` or floats): the bit-sliced,
  batch-in-the-word SBNN kernel (:mod:`pysbnn.kernels.sliced`) when the batch
  fills words (at least ``SLICED_MIN_BATCH`` samples) and the layer is sparse,
  one XNOR-popcount pass (:mod:`pysbnn.kernels.xnor`) otherwise.
* 3x3 convolutions: Kernel B (:mod:`pysbnn.kernels.conv_sbnn`: K0 skipped,
  K1 as shifted copies); other kernel sizes an exact integer im2col product.

Bits leave a folded layer in the layout the next layer's kernel reads at
that batch size (``"sliced"`` for the bit-sliced kernel, ``"rows"`` for the
XNOR pass), packed by the threshold kernel in the same pass; a layer handed
the other layout transposes the bit matrix. Each weight layout ("plan") is prepared
once per layer and cached on it. Every function returns the operations its
kernel executed, which ``count_bops`` reports.
"""

import numpy as np

from ..functional import conv2d_forward
from ..kernels import gather, sliced, words, xnor
from ..kernels.conv_sbnn import SbnnConvPlan, conv3x3_ones, sbnn_conv3x3
from ..kernels.threshold import pack_threshold
from .bits import Bits
from .fold import affine_output

#: batch size from which the bit-sliced dense kernel is used (and bits travel sliced) ...
SLICED_MIN_BATCH = 128
#: ... for layers with at most this fraction of ones (its work scales with
#: the ones; one XNOR-popcount pass over all words wins for denser layers).
#: Both are the setting that loses least time over a grid of batches 16-1000 and
#: densities 0.01-0.5, measured with benchmarks/bench_dispatch.py on a 2-core AMD
#: EPYC Zen 3, AVX2, no AVX-512, 2026-12-01 (docs/benchmarks.md "Dispatch"); on
#: another CPU run it: it prints what it measures next to these values.
SLICED_MAX_DENSITY = 0.3


def _plan(layer, kind, make):
    """A weight layout of ``layer``, prepared once per parameter version."""
    return layer.cached(kind, make)


def uses_sliced(layer, batch):
    """True when a +-1-input dense layer runs the bit-sliced kernel at this batch size."""
    return batch >= SLICED_MIN_BATCH and density(layer) <= SLICED_MAX_DENSITY


def layout_for(layer, batch):
    """The layout ``layer`` emits its bits in: the one its consumer's kernel reads
    (``layer.consumer``, set by ``PackedModel``), else the batch size's default."""
    consumer = getattr(layer, "consumer", None)
    if consumer is not None:
        return "sliced" if uses_sliced(consumer, batch) else "rows"
    return "sliced" if batch >= SLICED_MIN_BATCH else "rows"


def _fused_sliced(layer, batch):
    """True when ``layer`` emits batch-sliced bits straight from its kernel (threshold fused)."""
    return layer.output == "bits" and layout_for(layer, batch) == "sliced"


def density(layer):
    """Fraction of ones of a packed layer (cached)."""
    return _plan(layer, "density", lambda: layer.n_ones() / max(layer.words.shape[0] * layer.fan_in, 1))


def _emit(layer, z, q, backend, neuron_major=False):
    """The layer's output from int32 ``z'`` ((B, M), or (M, B) neuron-major) and ``q`` (B,)."""
    if layer.output == "affine":
        return affine_output(z.T if neuron_major else z, q, layer.affine)
    B = len(q)
    layout = layout_for(layer, B)
    bits, ones = pack_threshold(z, q, layer.threshold, layout, neuron_major=neuron_major, backend=backend)
    return Bits(bits, layer.out_features, B, layout, ones)


def raw_dense(layer, x, backend="auto"):
    """First-layer product of raw inputs (n, ...) -> (output, ops)."""
    x = np.asarray(x)
    x2 = x.reshape(len(x), -1)
    if x2.shape[1] != layer.in_features:
        raise ValueError(f"expected inputs of {layer.in_features} values, got shape {x.shape}")
    if x2.dtype == np.uint8:
        plan = _plan(layer, "gather", lambda: gather.prepare_gather(layer.ones_rows()))
        layout = layout_for(layer, len(x2))
        if layer.output == "bits" and (gather.strategy(x2, plan)[0], layout) in gather.FUSED:
            bits, ones, ops = gather.gather_bits(x2, plan, layer.threshold, layout, backend=backend)
            return Bits(bits, layer.out_features, len(x2), layout, ones), ops
        zt, Q, ops = gather.gather_dense(x2, plan, backend=backend)
        return _emit(layer, zt, Q, backend, neuron_major=True), ops
    x64 = x2.astype(np.float64)
    w01 = _plan(layer, "float", lambda: layer.ones_rows().T.astype(np.float64))
    return layer.finish(x64 @ w01, x64.sum(axis=1)), 0


def binary_dense(layer, x, backend="auto"):
    """Product of +-1 inputs (:class:`Bits` or floats (n, K)) -> (output, ops)."""
    K = layer.in_features
    if not isinstance(x, Bits):
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != K:
            raise ValueError(f"expected +-1 inputs (n, {K}), got shape {x.shape}")
        rows = words.pack_signs(x, backend)
        x = Bits(rows, K, len(x), "rows", words.popcount_numpy(rows).sum(axis=1))
    n, q = x.n, 2 * x.ones - K
    if uses_sliced(layer, n):
        plan = _plan(layer, "sliced", lambda: sliced.prepare_sliced(layer.words, K))
        xs = x.as_layout("sliced", backend).words
        if _fused_sliced(layer, n):
            bits, ones, ops = sliced.sbnn_sliced_bits(xs, plan, n, layer.threshold, q, backend=backend,
                                                      return_ops=True)
            return Bits(bits, layer.out_features, n, "sliced", ones), int(ops)
        z, ops = sliced.sbnn_gemm_sliced(xs, plan, n, backend=backend, return_ops=True)
    else:
        # w01 . x = (s . x + q) / 2 with s = 2 w01 - 1 in {-1,+1}: one XNOR-popcount
        # pass over all words (exact integers), the fastest path for dense layers.
        plan = _plan(layer, "xnor", lambda: xnor.prepare_xnor(layer.words, K))
        s_dot_x, ops = xnor.xnor_gemm(x.as_layout("rows", backend).words, plan, backend=backend,
                                      return_ops=True)
        s_dot_x += q[:, None].astype(np.int32)          # even: the shift divides exactly
        z = s_dot_x >> 1
    return _emit(layer, z, q, backend), int(ops)


def conv(layer, xs, backend="auto"):
    """Conv of NHWC ``xs`` (+-1, or real for a first layer): ``z'``, ``q`` (n, ho, wo, 1), ops."""
    if layer.binarize_input and layer.kernel_size == 3:
        plan = _plan(layer, "conv3x3", lambda: SbnnConvPlan(layer.ones_kernels(), binary=True))
        z, ops = sbnn_conv3x3(xs, plan, layer.stride, layer.padding, backend=backend)
        return z, conv3x3_ones(xs, layer.stride, layer.padding), int(ops["total"])
    return _generic_conv(layer, xs)


def _generic_conv(layer, xs):
    """im2col product for other kernels or real inputs (exact integers for +-1 inputs)."""
    w01 = layer.ones_kernels().astype(np.float64)
    z, _ = conv2d_forward(xs.astype(np.float64), w01, None, layer.stride, layer.padding)
    ones = np.ones((1,) + w01.shape[1:])
    q, _ = conv2d_forward(xs.astype(np.float64), ones, None, layer.stride, layer.padding)
    if not layer.binarize_input:
        return z, q, 0
    positions = z.shape[0] * z.shape[1] * z.shape[2]
    return np.rint(z).astype(np.int32), np.rint(q).astype(np.int64), int(w01.sum()) * positions
