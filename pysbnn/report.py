"""Model-level counts: ``count_bops``, ``summary`` and ``kernel_histogram``.

Per binary layer, side by side (Sec. 3.5, Tables 2-3):

- ``bnn``: a dense BNN's binary operations, 2N per output position
  (N XNOR + N popcount);
- ``k0k1``: the paper's Table 2 estimate, the BNN count minus the operations
  of K0 and K1 kernels (3x3 convs only; dense layers have no kernels to skip);
- ``sparse``: "sparse operations on FPGA": one popcount per one-weight per
  output position, no XNOR;
- ``executed``: what the packed kernels actually executed, per image;
- ``bparams``: storage in bits, Table 3's rule for 3x3 convs (2 bits per
  kernel + 4 per K1 + 9 per other kernel); for dense layers the entropy bound
  ``ceil(N h(p))`` of Eq. 6; ``bparams_bnn`` is the BNN's N bits;
- bytes of the binary weights: ``stored`` (what ``PackedModel.save`` writes,
  coded near h(p), header included), ``bound`` (ceil(N h(p) / 8)), ``bnn_bytes``
  (N / 8) and ``float32_bytes`` (4 N).
"""

import math

import numpy as np

from . import analysis
from .entropy import binary_entropy
from .packed.layers import PackedBinaryConv2d
from .packed.pack import pack


class BopsReport:
    """Per-layer rows (``layers``: list of dicts) and their ``total``; prints as a table."""

    FIELDS = ("bnn", "k0k1", "sparse", "executed", "bparams", "bparams_bnn", "stored", "bound",
              "bnn_bytes", "float32_bytes")

    def __init__(self, layers, batch):
        self.layers, self.batch = layers, batch
        binary = [r for r in layers if r["binary_input"]]
        self.total = {f: sum(r[f] for r in (binary if f in ("bnn", "k0k1", "sparse", "executed") else layers))
                      for f in self.FIELDS}

    def __str__(self):
        head = f"{'layer':14s} {'kind':5s} {'BNN BOPs':>12s} {'K0/K1 est.':>12s} {'sparse':>12s} " \
               f"{'executed':>12s} {'BParams':>10s} {'BNN bits':>10s} {'stored B':>9s} {'h(p) B':>9s}"
        lines = [head, "-" * len(head)]
        for r in self.layers + [dict(self.total, name="total", kind="", binary_input=True)]:
            ops = [f"{r[f]:12,d}" if r["binary_input"] else f"{'(real input)':>12s}"
                   for f in ("bnn", "k0k1", "sparse", "executed")]
            lines.append(f"{r['name']:14s} {r['kind']:5s} {' '.join(ops)} {r['bparams']:10,d} "
                         f"{r['bparams_bnn']:10,d} {r['stored']:9,d} {r['bound']:9,d}")
        lines.append(f"(operations per image; executed at batch {self.batch}; bytes of the binary "
                     f"weights: stored coded, and their entropy bound)")
        return "\n".join(lines)


def _row(name, layer, positions, batch, sizes):
    w01 = layer.ones_rows()
    N, ones = int(w01.size), int(w01.sum())
    if isinstance(layer, PackedBinaryConv2d):
        kernels = layer.ones_kernels().astype(bool)
        bnn = analysis.bops_bnn(layer.out_channels, layer.in_channels, layer.kernel_size, positions)
        if layer.kernel_size == 3:
            k0k1 = round(bnn * (1 - analysis.bops_pr_k0k1(kernels, positions, binary=True)))
            bparams = analysis.bparams(kernels, binary=True)
        else:
            k0k1, bparams = bnn, N
        kind = "conv"
    else:
        bnn = analysis.bops_bnn_dense(layer.out_features, layer.in_features)
        k0k1 = bnn
        bparams = math.ceil(N * float(binary_entropy(ones / N)))
        kind = "dense"
    return {"name": name, "kind": kind, "binary_input": layer.binarize_input, "weights": N,
            "ones": ones, "positions": positions, "bnn": int(bnn), "k0k1": int(k0k1),
            "sparse": ones * positions, "executed": int(round(layer.last_ops / batch)),
            "bparams": int(bparams), "bparams_bnn": N, "method": sizes["method"],
            "stored": sizes["stored"], "bound": sizes["bound"], "bnn_bytes": sizes["bnn"],
            "float32_bytes": sizes["float32"]}


def count_bops(model, input_shape, batch=256, seed=0):
    """Count binary operations and binary parameters of every binary layer.

    Parameters
    ----------
    model : a trained model or a :class:`~pysbnn.packed.model.PackedModel`
    input_shape : shape of one input as the model takes it, e.g. (28, 28)
    batch : batch size of the measuring forward pass; the bit-sliced dense
        kernel runs from ``pysbnn.packed.dispatch.SLICED_MIN_BATCH`` samples,
        so smaller batches count the XNOR pass of sparse layers too;
        ``executed`` is reported per image

    Returns
    -------
    BopsReport with ``layers`` (one dict per binary layer: bnn, k0k1, sparse,
    executed, bparams, bparams_bnn, ...) and ``total``.
    """
    packed = pack(model)
    x = np.random.default_rng(seed).integers(0, 256, (batch,) + tuple(input_shape)).astype(np.uint8)
    packed.forward(x)                    # every packed layer records its ops and output shape
    rows, sizes = [], dict(packed.storage_report())
    for name, layer in packed.packed_layers():
        shape = layer.last_output_shape
        positions = int(np.prod(shape[1:-1])) if len(shape) == 4 else 1
        rows.append(_row(name, layer, positions, batch, sizes[name]))
    return BopsReport(rows, batch)


def kernel_histogram(layer):
    """Counts over the 512 9-bit codes and over Hamming weights 0-9 of a 3x3 binary conv.

    ``layer``: a BinaryConv2d, a PackedBinaryConv2d or a (c_out, c_in, 3, 3)
    weight array. Returns ``(code_counts (512,), hw_counts (10,))``.
    """
    if isinstance(layer, PackedBinaryConv2d):
        return analysis.kernel_histogram(layer.ones_kernels().astype(bool), binary=True)
    w = layer.params["weight"] if hasattr(layer, "params") else np.asarray(layer)
    return analysis.kernel_histogram(w)


def _fmt_bytes(n):
    return f"{n / 1024:.1f}K" if n >= 1024 else f"{n}B"


def summary(model, input_shape):
    """A per-layer table in the spirit of larq's model summary.

    Columns: parameters, fraction of ones, bits/weight h(p), K0/K1 share,
    BOPs as a BNN and as this SBNN (executed), bytes as float32 / as a BNN /
    as stored by ``PackedModel.save`` (binary weights coded near h(p)) and the
    h(p) bound of the binary weights; then totals and ratios. Returns the text.
    """
    packed = pack(model)
    report = {r["name"]: r for r in count_bops(packed, input_shape).layers}
    head = (f"{'layer':22s} {'params':>9s} {'ones':>7s} {'bits/w':>6s} {'K0':>6s} {'K1':>6s} "
            f"{'BNN BOPs':>11s} {'SBNN BOPs':>11s} {'f32':>8s} {'BNN':>8s} {'stored':>8s} {'h(p)':>8s}")
    lines = [head, "=" * len(head)]
    tot = dict(params=0, bnn=0, sbnn=0, f32=0, b1=0, stored=0, bound=0, coded=0)
    for name, layer in packed.net.named_layers():
        own = sum(a.size for a in layer.params.values()) + sum(a.size for a in layer.buffers.values())
        if not own:
            continue
        label = f"{name} {type(layer).__name__.replace('Packed', '')}"[:22]
        if name in report:
            line, n, f32, b1, st = _binary_line(label, layer, report[name])
            tot["bound"] += report[name]["bound"]
            tot["coded"] += report[name]["stored"]
            if report[name]["binary_input"]:
                tot["bnn"] += report[name]["bnn"]
                tot["sbnn"] += report[name]["executed"]
        else:
            n = sum(a.size for a in layer.params.values())
            f32 = b1 = 4 * own
            st = sum(a.nbytes for a in layer.params.values()) + sum(a.nbytes for a in layer.buffers.values())
            line = (f"{label:22s} {n:9,d} {'-':>7s} {'-':>6s} {'-':>6s} {'-':>6s} {'-':>11s} {'-':>11s} "
                    f"{_fmt_bytes(f32):>8s} {_fmt_bytes(b1):>8s} {_fmt_bytes(st):>8s} {'-':>8s}")
        lines.append(line)
        for key, value in (("params", n), ("f32", f32), ("b1", b1), ("stored", st)):
            tot[key] += value
    lines.append("=" * len(head))
    lines.append(f"{'total':22s} {tot['params']:9,d} {'':7s} {'':6s} {'':6s} {'':6s} {tot['bnn']:11,d} "
                 f"{tot['sbnn']:11,d} {_fmt_bytes(tot['f32']):>8s} {_fmt_bytes(tot['b1']):>8s} "
                 f"{_fmt_bytes(tot['stored']):>8s} {_fmt_bytes(tot['bound']):>8s}")
    if tot["sbnn"]:
        lines.append(f"BOPs: BNN / SBNN = {tot['bnn'] / tot['sbnn']:.2f}x (executed, per image)")
    lines.append(f"binary weights: stored {_fmt_bytes(tot['coded'])}, {tot['coded'] / max(tot['bound'], 1):.3f}x "
                 f"their h(p) bound")
    lines.append(f"memory: float32 / stored = {tot['f32'] / tot['stored']:.1f}x, "
                 f"BNN / stored = {tot['b1'] / tot['stored']:.2f}x")
    return "\n".join(lines)


def _binary_line(label, layer, r):
    """(table line, params, float32 bytes, BNN bytes, stored bytes) of a packed binary layer."""
    n = r["weights"]
    folded = 16 * len(layer.words) if layer.folded_bn else 0   # a folded BatchNorm, in float32
    f32, b1 = 4 * n + 8 + folded, (n + 7) // 8 + 8 + folded
    st = r["stored"] + sum(a.nbytes for k, a in layer.buffers.items() if k != "w01")
    k0 = k1 = "-"
    if isinstance(layer, PackedBinaryConv2d) and layer.kernel_size == 3:
        f0, f1, _, _ = analysis.k0_k1(layer.ones_kernels().astype(bool), binary=True)
        k0, k1 = f"{100 * f0:.1f}%", f"{100 * f1:.1f}%"
    p = r["ones"] / n
    bops = (f"{r['bnn']:11,d} {r['executed']:11,d}" if r["binary_input"]
            else f"{'(real in)':>11s} {'(real in)':>11s}")
    line = (f"{label:22s} {n:9,d} {100 * p:6.2f}% {float(binary_entropy(p)):6.3f} {k0:>6s} "
            f"{k1:>6s} {bops} {_fmt_bytes(f32):>8s} {_fmt_bytes(b1):>8s} {_fmt_bytes(st):>8s} "
            f"{_fmt_bytes(r['bound']):>8s}")
    return line, n, f32, b1, st
