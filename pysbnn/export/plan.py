"""What the C export of a packed MLP holds, layer by layer, and which weight form each layer gets.

:func:`plan_model` checks that a :class:`~pysbnn.packed.pack.PackedModel` is an
MLP of :func:`pysbnn.binary_mlp` (a chain of packed dense layers: raw uint8
pixels into the first, bits between them, float logits out of the last)
and returns one :class:`LayerPlan` per layer. A layer's {0,1} weights go to
flash in one of three forms:

* ``"bitmap"``: rows of ``ceil(K / 32)`` uint32 words (the kernels' layout,
  :mod:`pysbnn.kernels.words`): the coding's bitmap plus at most 31 bits of
  padding per row; the kernels read whole words (popcount, or a
  count-trailing-zeros loop over the ones for pixels);
* ``"golomb"`` / ``"rice_rows"``: the stream of :func:`pysbnn.coding.encode_layer`,
  byte for byte (``docs/format.md``; its 16-byte header becomes a C struct),
  decoded one one at a time while the layer runs: work proportional to the
  ones, flash near ``N h(p)``.

``optimize="size"`` takes the form with the fewest flash bytes;
``optimize="speed"`` the bitmap unless the gap code runs faster by
:data:`GAPS_MINUS_BITMAP`, measured on a Cortex-M4 (``benchmarks/bench_export.py``,
``docs/mcu.md``): in short, a layer is coded below about 0.36 % ones when it
reads pixels and 1.5-1.8 % when it reads bits.
"""

from typing import NamedTuple, Optional

import numpy as np

from .. import coding
from ..coding.layer import EncodedLayer
from ..layers import Conv2d
from ..packed.layers import PackedBinaryConv2d, PackedBinaryDense
from ..packed.pack import PackedModel
from ..packed.residual import PackedResidualUnit

#: layers that make a model convolutional (not exportable yet)
CONV_LAYERS = (PackedBinaryConv2d, PackedResidualUnit, Conv2d)

FORMS = ("bitmap", "golomb", "rice_rows")
CODED = ("golomb", "rice_rows")
OPTIMIZE = ("size", "speed")
#: zero bytes after every stream: the decoder reads 32-bit windows
STREAM_PAD = 4
#: the decoder reads a Golomb remainder from one 32-bit window (>= 25 stream bits)
MAX_REMAINDER_BITS = 25

#: What coding a layer costs in Cortex-M4 instructions per image (-Os, QEMU),
#: gap code minus bitmap, by input kind: ``per_row * M + per_word * M *
#: ceil(K / 32) + per_one * ones`` (ones of the coded array). Fitted by
#: ``benchmarks/bench_export.py`` on random 784-512-512-10 and 256-256-128-10
#: MLPs at p <= 5 %; it is negative (the code is faster) below about
#: p = 0.36 % for pixel inputs and p = 1.5-1.8 % for bit inputs (docs/mcu.md).
GAPS_MINUS_BITMAP = {
    "raw": (-1.7, -5.5, 49.0),
    "bits": (27.1, -36.2, 61.2),
}


class LayerPlan(NamedTuple):
    """One binary layer of the export: shape, ones, the chosen form and its bytes."""
    index: int              # l0, l1, ... in the C file
    name: str               # the packed layer's name in the model
    rows: int               # M outputs
    K: int                  # inputs per row
    input: str              # "raw" (uint8 pixels) or "bits"
    output: str             # "bits" (integer threshold) or "affine" (float logits)
    ones: int
    form: str               # one of FORMS
    enc: Optional[EncodedLayer]   # the coded stream (coded forms), else None
    weight_bytes: int       # flash bytes of the weight table
    bound_bytes: int        # ceil(N h(p) / 8), p = ones / N
    layer: PackedBinaryDense

    @property
    def weights(self):
        return self.rows * self.K

    def stream(self):
        """The coded stream bytes (``coding.to_bytes`` without its header) and the pad."""
        return coding.to_bytes(self.enc)[coding.layer.HEADER_BYTES:] + bytes(STREAM_PAD)

    def words32(self):
        """The bitmap as uint32 (rows, ceil(K / 32)), bit k at bit k % 32 of word k // 32."""
        w64 = np.ascontiguousarray(self.layer.words, "<u8")
        return w64.view("<u4").reshape(self.rows, -1)[:, :bitmap_words(self.K)]


def bitmap_words(K):
    return -(-int(K) // 32)


def bitmap_bytes(M, K):
    """Flash bytes of the bitmap form: M rows of ceil(K / 32) uint32 words."""
    return 4 * M * bitmap_words(K)


def coded_bytes(n_bits):
    return -(-int(n_bits) // 8) + STREAM_PAD


def speed_delta(inp, M, K, coded_ones):
    """Cortex-M4 instructions per image a gap code costs over the bitmap (:data:`GAPS_MINUS_BITMAP`)."""
    per_row, per_word, per_one = GAPS_MINUS_BITMAP[inp]
    return per_row * M + per_word * M * bitmap_words(K) + per_one * coded_ones


# ------------------------------------------------------------------ checks

def check_model(packed):
    """The packed dense layers of an exportable MLP, in order; ValueError otherwise."""
    if not isinstance(packed, PackedModel):
        raise ValueError(f"export_c needs a packed model (pysbnn.pack(model)), "
                         f"got {type(packed).__name__}")
    named = list(packed.net.named_layers())
    if any(isinstance(l, CONV_LAYERS) for _, l in named):
        raise ValueError("export_c does not support convolutional models yet: only the MLPs of "
                         "pysbnn.binary_mlp (packed dense layers) can be exported")
    layers = list(getattr(packed.net, "layers", []))
    for i, layer in enumerate(layers):
        if not isinstance(layer, PackedBinaryDense):
            raise ValueError(f"export_c supports only chains of packed binary dense layers; "
                             f"layer {i} is a {type(layer).__name__}")
    if not layers:
        raise ValueError("export_c: the packed model has no binary layers")
    _check_chain(layers)
    return layers


def _check_chain(layers):
    first, last = layers[0], layers[-1]
    if first.binarize_input:
        raise ValueError("export_c: the first layer must take the raw pixels "
                         "(binary_mlp's real-input first layer, its Normalize folded)")
    if last.output != "affine":
        raise ValueError("export_c: the last layer must output the logits (affine)")
    for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        if a.output != "bits" or not b.binarize_input:
            raise ValueError(f"export_c: layer {i} must pass bits to layer {i + 1} "
                             "(folded BatchNorm + sign)")
        if a.out_features != b.in_features:
            raise ValueError(f"export_c: layer {i} has {a.out_features} outputs, "
                             f"layer {i + 1} {b.in_features} inputs")


def check_forms(forms, n_layers):
    """``None`` (choose), one form for every layer, or one per layer -> tuple or None."""
    if forms is None:
        return None
    forms = (forms,) * n_layers if isinstance(forms, str) else tuple(forms)
    if len(forms) != n_layers or any(f not in FORMS for f in forms):
        raise ValueError(f"forms must be one of {FORMS} or a list of {n_layers} of them, got {forms!r}")
    return forms


# ------------------------------------------------------------------ choice

def _coded_candidates(w01):
    """{method: n_bits} of the gap codes the C decoder can read."""
    sizes = coding.candidate_sizes(w01, methods=CODED)
    out = {}
    for method, (params, n_bits) in sizes.items():
        if method == "golomb" and int(params[0] - 1).bit_length() > MAX_REMAINDER_BITS:
            continue
        out[method] = n_bits
    return out


def choose_form(w01, inp, optimize):
    """The form of a layer's weights: fewest bytes (size) or fewest instructions (speed)."""
    M, K = w01.shape
    coded = _coded_candidates(w01)
    sizes = {"bitmap": bitmap_bytes(M, K), **{m: coded_bytes(b) for m, b in coded.items()}}
    if optimize == "size" or not coded:
        return min(FORMS[:1] + tuple(coded), key=lambda f: (sizes[f], FORMS.index(f)))
    ones = int(w01.sum())
    best_coded = min(coded, key=lambda f: (sizes[f], FORMS.index(f)))
    return best_coded if speed_delta(inp, M, K, min(ones, M * K - ones)) < 0 else "bitmap"


def plan_layer(index, name, layer, optimize, form=None):
    """The :class:`LayerPlan` of one packed layer."""
    w01 = layer.ones_rows().astype(bool)
    M, K = w01.shape
    inp = "bits" if layer.binarize_input else "raw"
    form = form or choose_form(w01, inp, optimize)
    enc = None
    if form == "bitmap":
        nbytes = bitmap_bytes(M, K)
    else:
        if form not in _coded_candidates(w01):
            raise ValueError(f"layer {name}: the C decoder cannot read its {form} code")
        enc = coding.encode_layer(w01, methods=(form,))
        nbytes = coded_bytes(enc.n_bits)
    return LayerPlan(index, name, M, K, inp, layer.output, int(w01.sum()), form, enc, nbytes,
                     coding.entropy_bound_bytes(w01), layer)


def plan_model(packed, optimize="size", forms=None):
    """[:class:`LayerPlan`] of an exportable packed MLP (ValueError if it is not one)."""
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}")
    layers = check_model(packed)
    forms = check_forms(forms, len(layers)) or (None,) * len(layers)
    names = {id(l): n for n, l in packed.net.named_layers()}
    return [plan_layer(i, names.get(id(l), str(i)), l, optimize, f)
            for i, (l, f) in enumerate(zip(layers, forms))]
