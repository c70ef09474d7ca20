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
  ``ceil(N h(p))`` of Eq. 6; ``bparams_bnn`` is the BNN's N bits.
"""

import math

import numpy as np

from . import analysis
from .entropy import binary_entropy
from .packed.layers import PackedBinaryConv2d
from .packed.pack import pack


class BopsReport:
    """Per-layer rows (``layers``: list of dicts) and their ``total``; prints as a table."""

    FIELDS = ("bnn", "k0k1", "sparse", "executed", "bparams", "bparams_bnn")

    def __init__(self, layers, batch):
        self.layers, self.batch = layers, batch
        binary = [r for r in layers if r["binary_input"]]
        self.total = {f: sum(r[f] for r in (binary if f in ("bnn", "k0k1", "sparse", "executed") else layers))
                      for f in self.FIELDS}

    def __str__(self):
        head = f"{'layer':14s} {'kind':5s} {'BNN BOPs':>12s} {'K0/K1 est.':>12s} {'sparse':>12s} " \
               f"{'executed':>12s} {'BParams':>10s} {'BNN bits':>10s}"
        lines = [head, "-" * len(head)]
        for r in self.layers + [dict(self.total, name="total", kind="", binary_input=True)]:
            ops = [f"{r[f]:12,d}" if r["binary_input"] else f"{'(real input)':>12s}"
                   for f in ("bnn", "k0k1", "sparse", "executed")]
            lines.append(f"{r['name']:14s} {r['kind']:5s} {' '.join(ops)} {r['bparams']:10,d} {r['bparams_bnn']:10,d}")
        lines.append(f"(operations per image; executed at batch {self.batch})")
        return "\n".join(lines)


def _row(name, layer, positions, batch):
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
            "bparams": int(bparams), "bparams_bnn": N}


def count_bops(model, input_shape, batch=64, seed=0):
    """Count binary operations and binary parameters of every binary layer.

    Parameters
    ----------
    model : a trained model or a :class:`~pysbnn.packed.model.PackedModel`
    input_shape : shape of one input as the model takes it, e.g. (28, 28)
    batch : batch size of the measuring forward pass (the bit-sliced dense
        kernel runs from batch 64); ``executed`` is reported per image

    Returns
    -------
    BopsReport with ``layers`` (one dict per binary layer: bnn, k0k1, sparse,
    executed, bparams, bparams_bnn, ...) and ``total``.
    """
    packed = pack(model)
    x = np.random.default_rng(seed).integers(0, 256, (batch,) + tuple(input_shape)).astype(np.uint8)
    packed.forward(x)                    # every packed layer records its ops and output shape
    rows = []
    for name, layer in packed.packed_layers():
        shape = layer.last_output_shape
        positions = int(np.prod(shape[1:-1])) if len(shape) == 4 else 1
        rows.append(_row(name, layer, positions, batch))
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
    BOPs as a BNN and as this SBNN (executed), bytes as float32 / BNN /
    packed SBNN; then totals and compression ratios. Returns the text.
    """
    packed = pack(model)
    report = {r["name"]: r for r in count_bops(packed, input_shape).layers}
    head = (f"{'layer':22s} {'params':>9s} {'ones':>7s} {'bits/w':>6s} {'K0':>6s} {'K1':>6s} "
            f"{'BNN BOPs':>11s} {'SBNN BOPs':>11s} {'f32':>8s} {'BNN':>8s} {'packed':>8s}")
    lines = [head, "=" * len(head)]
    tot = dict(params=0, bnn=0, sbnn=0, f32=0, b1=0, packed=0)
    for name, layer in packed.net.named_layers():
        if layer.children():
            continue
        label = f"{name} {type(layer).__name__.replace('Packed', '')}"[:22]
        if name in report:
            r = report[name]
            n = r["weights"]
            folded = 16 * len(layer.words) if layer.folded_bn else 0   # BN in float32
            f32, b1 = 4 * n + 8 + folded, (n + 7) // 8 + 8 + folded
            pk = sum(a.nbytes for a in layer.buffers.values())
            k0 = k1 = "-"
            if isinstance(layer, PackedBinaryConv2d) and layer.kernel_size == 3:
                f0, f1, _, _ = analysis.k0_k1(layer.ones_kernels().astype(bool), binary=True)
                k0, k1 = f"{100 * f0:.1f}%", f"{100 * f1:.1f}%"
            p = r["ones"] / n
            bops = (f"{r['bnn']:11,d} {r['executed']:11,d}" if r["binary_input"]
                    else f"{'(real in)':>11s} {'(real in)':>11s}")
            lines.append(f"{label:22s} {n:9,d} {100 * p:6.2f}% {float(binary_entropy(p)):6.3f} {k0:>6s} "
                         f"{k1:>6s} {bops} {_fmt_bytes(f32):>8s} {_fmt_bytes(b1):>8s} {_fmt_bytes(pk):>8s}")
            if r["binary_input"]:
                tot["bnn"] += r["bnn"]
                tot["sbnn"] += r["executed"]
        else:
            n = sum(a.size for a in layer.params.values())
            f32 = b1 = pk = 4 * (n + sum(a.size for a in layer.buffers.values()))
            if not f32:
                continue
            lines.append(f"{label:22s} {n:9,d} {'-':>7s} {'-':>6s} {'-':>6s} {'-':>6s} {'-':>11s} {'-':>11s} "
                         f"{_fmt_bytes(f32):>8s} {_fmt_bytes(b1):>8s} {_fmt_bytes(pk):>8s}")
        tot["params"] += n
        tot["f32"] += f32
        tot["b1"] += b1
        tot["packed"] += pk
    lines.append("=" * len(head))
    lines.append(f"{'total':22s} {tot['params']:9,d} {'':7s} {'':6s} {'':6s} {'':6s} {tot['bnn']:11,d} "
                 f"{tot['sbnn']:11,d} {_fmt_bytes(tot['f32']):>8s} {_fmt_bytes(tot['b1']):>8s} "
                 f"{_fmt_bytes(tot['packed']):>8s}")
    if tot["sbnn"]:
        lines.append(f"BOPs: BNN / SBNN = {tot['bnn'] / tot['sbnn']:.2f}x (executed, per image)")
    lines.append(f"memory: float32 / packed = {tot['f32'] / tot['packed']:.1f}x, "
                 f"BNN / packed = {tot['b1'] / tot['packed']:.2f}x")
    return "\n".join(lines)
