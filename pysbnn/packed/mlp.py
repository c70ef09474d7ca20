"""The small-batch path of a packed MLP: every binary layer in one kernel call.

A packed ``binary_mlp`` is a chain of :class:`PackedBinaryDense` layers: the
first reads raw pixels and emits bits, the middle ones read and emit bits, the
last emits logits. Below ``SMALL_BATCH`` samples :func:`forward` runs the whole
chain in :func:`pysbnn.kernels.fused_mlp.fused_mlp` (one Numba call instead
of a few per layer: at batch 1 the calls cost as much as the work) and turns
the last layer's integers into logits (Eq. 20 with the folded BatchNorm). The
integers are those of the layer-by-layer path, so are the logits.
"""

import numpy as np

from ..kernels import fused_mlp, gather
from ..kernels.jit import resolve_backend
from .layers import PackedBinaryDense

#: below this batch the fused per-sample kernel beats the layer-by-layer path
#: (measured with benchmarks/bench_dispatch.py on a 2-core AMD EPYC Zen 3, AVX2,
#: no AVX-512, 2026-12-01: docs/benchmarks.md "Dispatch"; on another CPU run it,
#: it prints what it measures next to these values)
SMALL_BATCH = 64


def chain(net):
    """The layers of ``net`` if it is a fusable packed MLP, else None."""
    layers = getattr(net, "layers", None)
    if not layers or len(layers) < 2 or not all(isinstance(l, PackedBinaryDense) for l in layers):
        return None
    first, *middle, last = layers
    if first.binarize_input or first.output != "bits" or last.output != "affine":
        return None
    if not all(l.binarize_input and l.output == "bits" for l in middle) or not last.binarize_input:
        return None
    return layers


def _prepared(layers):
    """``(chain, scratch, ops per sample, last layer's (A, A xi, C))``, built once per
    parameter version: the kernel's :class:`~pysbnn.kernels.fused_mlp.Chain` and buffers."""
    def make():
        first, *later = layers
        plan = first.cached("gather", lambda: gather.prepare_gather(first.ones_rows()))
        rows = [(l.words, l.ones_rows().sum(axis=1), l.threshold if l.output == "bits" else None)
                for l in later]
        chain_arrays = fused_mlp.chain_of(plan, first.threshold, rows)
        ops = [int(plan.indices.shape[0])] + [2 * l.in_features * l.out_features for l in later]
        aff = layers[-1].affine
        return chain_arrays, fused_mlp.scratch_of(chain_arrays), ops, (aff.A, aff.A * aff.xi, aff.C)
    return layers[0].cached("fused_chain", make)


def usable(layers, x):
    """True when the fused path applies: a small uint8 batch on the numba backend."""
    return (layers is not None and isinstance(x, np.ndarray) and x.dtype == np.uint8
            and 0 < len(x) < SMALL_BATCH and resolve_backend(layers[0].backend) == "numba")


def forward(layers, x):
    """Logits float32 (B, classes) of uint8 inputs (B, ...) through the fused kernel."""
    chain_arrays, scratch, ops, (A, A_xi, C) = _prepared(layers)
    B = len(x)
    z, q = fused_mlp.fused_mlp(x.reshape(B, -1), chain_arrays, scratch)
    for layer, n in zip(layers, ops):          # the executed operations, as the layered path counts
        layer.last_output_shape, layer.last_ops = (B, layer.out_features), n * B
    # Eq. 20 with the folded BatchNorm, A (z' + xi q) + C, as fold.affine_output computes it
    return (A * z + A_xi * q[:, None].astype(np.float64) + C).astype(np.float32)
