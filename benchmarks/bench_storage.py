"""Sub-bit storage of binary layers against the entropy bound, zlib and lzma (Markdown tables).

    python benchmarks/bench_storage.py                      # i.i.d. and synthetic layers
    python benchmarks/bench_storage.py --models runs/mnist_sbnn  # + the main job's trained layers

Sizes are bytes. "bound" = ceil(N h(p) / 8) with p the layer's own fraction
of ones; "payload" = stream bytes ceil(n_bits / 8) without the 16-byte
header; "stored" = header + payload. Seeds are fixed.
"""
import csv
import lzma
import math
import os
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import cpu_header  # noqa: E402
from pysbnn.coding import golomb, kernelcode, rows  # noqa: E402
from pysbnn.coding.layer import (candidate_sizes, decode_layer, encode_layer,  # noqa: E402
                                 entropy_bound_bytes, row_index, stored_bytes)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = []            # directories of packed models (--models): their trained layers are measured too


def trained_layers(kind):
    """{name: {0,1} weights} of the dense ("mlp") or 3x3 conv ("resnet") layers of every
    ``*.packed.npz`` in the --models directories."""
    import pysbnn
    from pysbnn.packed.storage import coder_shape
    out = {}
    for folder in MODELS:
        for f in sorted(os.listdir(folder)):
            if not f.endswith(".packed.npz"):
                continue
            for name, layer in pysbnn.load_packed(os.path.join(folder, f)).packed_layers():
                w = layer.ones_rows().astype(bool).reshape(coder_shape(layer))
                if (w.ndim == 2) == (kind == "mlp") and (w.ndim == 2 or w.shape[2:] == (3, 3)):
                    out[f"trained {f[:-11]} layer {name} {w.shape}"] = w
    return out
DENSE = {"784x512": (512, 784), "512x512": (512, 512), "512x10": (10, 512)}
PS = (0.5, 0.3, 0.1, 0.05, 0.01, 0.001)


def nbytes(bits):
    return -(-int(bits) // 8)


def h(p):
    return 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def table(head, rows_):
    """Markdown table."""
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows_:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()


def per_method_bytes(w):
    """Payload bytes of each method plus per-layer Rice, for a {0,1} array."""
    sizes = candidate_sizes(w)
    flat = w.reshape(-1)
    coded = ~flat if flat.sum() > flat.size // 2 else flat
    k, rbits = golomb.best_rice_k(golomb.ones_and_gaps(coded)[1])
    out = {name: (params, nbytes(b)) for name, (params, b) in sizes.items()}
    out["rice"] = ((k,), nbytes(rbits))
    return out


def iid_tables():
    print("## (a) i.i.d. Bernoulli(p) dense layers\n")
    print("Layer orientation (M outputs, K inputs) as in pysbnn; payload bytes; "
          "ratio = chosen payload / bound.\n")
    head = ["layer", "p", "ones", "bound", "bitmap", "CSR16", "Rice/layer (k)", "Golomb/layer (m)",
            "Rice/row (k_min,w)", "enum", "chosen", "stored", "ratio"]
    out, comp = [], []
    for name, shape in DENSE.items():
        for i, p in enumerate(PS):
            w = np.random.default_rng(100 + i).random(shape) < p
            s = per_method_bytes(w)
            enc = encode_layer(w)
            bound = entropy_bound_bytes(w)
            pay = stored_bytes(enc) - 16
            out.append([name, p, int(w.sum()), bound, s["bitmap"][1], 2 * int(w.sum()),
                        f"{s['rice'][1]} ({s['rice'][0][0]})", f"{s['golomb'][1]} ({s['golomb'][0][0]})",
                        f"{s['rice_rows'][1]} {s['rice_rows'][0]}", s.get("enum", ((), "-"))[1],
                        enc.method, stored_bytes(enc), f"{pay / max(bound, 1):.4f}"])
            packed = np.packbits(w.reshape(-1)).tobytes()
            z = len(zlib.compress(packed, 9))
            xz = len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME))
            raw = len(lzma.compress(packed, format=lzma.FORMAT_RAW,
                                    filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]))
            comp.append([name, p, bound, stored_bytes(enc), f"{stored_bytes(enc) / max(bound, 1):.3f}",
                         z, f"{z / max(bound, 1):.3f}", xz, f"{xz / max(bound, 1):.3f}",
                         raw, f"{raw / max(bound, 1):.3f}"])
    table(head, out)
    print("### zlib / lzma on np.packbits of the same layers\n")
    print("zlib level 9; xz = lzma.compress preset 9|EXTREME (.xz container); raw = "
          "FORMAT_RAW LZMA2 9|EXTREME (no container). Ratios to the bound; ours includes the 16-byte header.\n")
    table(["layer", "p", "bound", "ours (stored)", "ours/bound", "zlib", "zlib/bound", "xz", "xz/bound",
           "lzma raw", "raw/bound"], comp)


def expected_redundancy():
    print("## Expected code length per one vs h(p)/p (geometric gaps, exact sums)\n")
    rows_ = []
    for p in (0.3, 0.25, 0.22, 0.21, 0.2, 0.15, 0.11, 0.1, 0.05, 0.03, 0.01, 0.003, 0.001):
        g = np.arange(int(80 / p) + 10)
        P = (1 - p) ** g * p
        P /= P.sum()
        ks = [float((P * golomb.golomb_lengths(g, 1 << k)).sum()) for k in range(21)]
        ms = np.arange(1, int(3 / p) + 2)
        gs = [float((P * golomb.golomb_lengths(g, m)).sum()) for m in ms]
        ideal = h(p) / p
        rows_.append([p, f"{ideal:.4f}", f"{min(ks):.4f} (k={int(np.argmin(ks))})", f"{min(ks) / ideal:.4f}",
                      f"{min(gs):.4f} (m={int(ms[np.argmin(gs)])})", f"{min(gs) / ideal:.4f}"])
    table(["p", "h(p)/p bits", "Rice bits (k)", "Rice / h", "Golomb bits (m)", "Golomb / h"], rows_)


def criterion_rates(trials=400, ps=(0.001, 0.002, 0.005, 0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.21, 0.22,
                                    0.25, 0.3), only_in_range=True):
    print(f"## Size criterion at N = 4096 ({trials} i.i.d. layers per nominal p"
          + (", kept if 0.001 <= own p <= 0.3)\n" if only_in_range else ", all kept)\n"))
    print("fail = payload > 1.03 * bound (i.e. stored > 1.03 * bound + 16); worst = max payload / bound.\n")
    rows_ = []
    for p in ps:
        stats = {key: [0, 0.0] for key in ("rice", "golomb", "no_enum", "chosen")}
        rng = np.random.default_rng(int(p * 1e6))
        n = 0
        for _ in range(trials):
            w = rng.random(4096) < p
            if only_in_range and not 0.001 <= w.mean() <= 0.3:
                continue
            n += 1
            bound = entropy_bound_bytes(w)
            gaps = golomb.ones_and_gaps(w)[1]
            r, g = nbytes(golomb.best_rice_k(gaps)[1]), nbytes(golomb.best_golomb_m(gaps)[1])
            sizes = {k: nbytes(v[1]) for k, v in candidate_sizes(w).items()}
            nc = min(v for k, v in sizes.items() if k != "enum")
            ch = min(sizes.values())
            for key, v in zip(stats, (r, g, nc, ch)):
                stats[key][0] += v > 1.03 * bound
                stats[key][1] = max(stats[key][1], v / max(bound, 1))
        rows_.append([p, n] + [f"{stats[k][0]} / {stats[k][1]:.3f}" for k in stats])
    table(["p", "layers", "Rice only: fail / worst", "Golomb only", "chosen without enum", "chosen (all)"], rows_)


def criterion_random(trials=3000):
    print(f"## Size criterion on {trials} random layers (N in 4096..30000, p log-uniform 0.001..0.3)\n")
    rng = np.random.default_rng(123)
    n, fails, worst = 0, 0, 0.0
    for _ in range(trials):
        w = rng.random(int(rng.choice([4096, 4100, 5000, 8192, 12345, 30000]))) < np.exp(
            rng.uniform(np.log(0.001), np.log(0.3)))
        if not 0.001 <= w.mean() <= 0.3:
            continue
        n += 1
        ratio = min(nbytes(v[1]) for v in candidate_sizes(w).values()) / entropy_bound_bytes(w)
        fails += ratio > 1.03
        worst = max(worst, ratio)
    table(["layers kept (0.001 <= own p <= 0.3)", "payload > 1.03 bound", "worst payload / bound"],
          [[n, fails, f"{worst:.4f}"]])


def varying_rows():
    print("## (b) Rows of different densities: per-layer vs per-row parameters\n")
    print("bound(row) = sum over rows of ceil-free K h(p_r) / 8, the bound for a coder that knows each "
          "row's density; Rice/row includes its table of M*w bits.\n")
    rng = np.random.default_rng(7)
    layers = {
        "512x784, p_r log-uniform 0.001..0.3": rng.random((512, 784)) < np.exp(rng.uniform(
            np.log(0.001), np.log(0.3), 512))[:, None],
        "512x512, half 0.002 / half 0.2": rng.random((512, 512)) < np.where(np.arange(512) % 2, 0.002, 0.2)[:, None],
        "512x512, p_r uniform 0.025..0.075": rng.random((512, 512)) < rng.uniform(0.025, 0.075, 512)[:, None],
        "512x512, 10 % of rows empty, rest 0.05": rng.random((512, 512)) < np.where(
            rng.random(512) < 0.1, 0, 0.05)[:, None],
    }
    layers.update(trained_layers("mlp"))
    out = []
    for name, w in layers.items():
        s = per_method_bytes(w)
        pr = w.mean(1)
        row_bound = nbytes(sum(w.shape[1] * h(q) for q in pr))
        enc = encode_layer(w)
        out.append([name, f"{w.mean():.4f}", int((pr == 0).sum()), entropy_bound_bytes(w), row_bound,
                    s["rice"][1], s["golomb"][1], f"{s['rice_rows'][1]} {s['rice_rows'][0]}",
                    nbytes(terminated_rows_bits(w)), enc.method, stored_bytes(enc)])
    table(["layer", "p", "empty rows", "bound", "bound(row)", "Rice/layer", "Golomb/layer",
           "Rice/row (k_min,w,skip)", "Rice/row terminated*", "chosen", "stored"], out)
    print("\\* not implemented: exact size of a variant whose rows do not share gaps (each row ends with "
          "the gap to its end, coded with the row's k; empty rows skipped via the table).\n")


def terminated_rows_bits(w):
    """Exact bits of per-row Rice with row-terminated gaps and skipped empty rows (cost model only)."""
    M, K = w.shape
    kept = w.any(1)
    cost = np.zeros((int(kept.sum()), 21), np.int64)
    for i, r in enumerate(np.flatnonzero(kept)):
        g = np.diff(np.concatenate(([-1], np.flatnonzero(w[r]), [K]))) - 1
        cost[i] = [int(((g >> k) + 1 + k).sum()) for k in range(21)]
    return rows._best_window(cost, M, int(not kept.all()))[0]


def conv_layers():
    print("## Conv layers: kernel-code coding vs independent bits\n")
    layers = {}
    layers.update(trained_layers("resnet"))
    layers.update(synthetic_resnet())
    out, tot = [], {}
    for name, w in layers.items():
        codes = kernelcode.kernel_codes(w)
        s = per_method_bytes(w)
        enc = encode_layer(w)
        hist = np.bincount(codes, minlength=512) / codes.size
        h_codes = -(hist[hist > 0] * np.log2(hist[hist > 0])).sum() * codes.size / 8
        group = name.rsplit(" ", 2)[0]
        t = tot.setdefault(group, np.zeros(6))
        t += [entropy_bound_bytes(w), h_codes, s["golomb"][1], s["kernel"][1], stored_bytes(enc) - 16, 16]
        out.append([name, w.shape, f"{w.mean():.4f}", f"{hist[0]:.3f}", f"{hist[1 << np.arange(9)].sum():.3f}",
                    entropy_bound_bytes(w), f"{h_codes:.0f}", s["golomb"][1], s["rice_rows"][1],
                    f"{s['kernel'][1]} (v{s['kernel'][0][0]})", enc.method, stored_bytes(enc)])
    table(["layer", "shape", "p", "K0", "K1", "bound", "H(codes)", "Golomb", "Rice/row", "kernel",
           "chosen", "stored"], out)
    print("Totals per network (payload bytes; headers separately)\n")
    table(["network", "bound", "H(codes)", "Golomb", "kernel", "chosen payload", "headers"],
          [[g] + [f"{v:.0f}" for v in t] for g, t in tot.items()])
    kernel_breakdown({k: v for k, v in layers.items() if k.endswith(("ec0.05 conv 16", "ec0.01 conv 16",
                                                                    "95% layer 15", "99% layer 5"))})


def sbnn_like_conv(shape, seed, k0=0.7, k1=0.2, patterns=(16, 186, 495, 56, 146)):
    """Conv weights with a skewed kernel-code histogram: K0 with prob k0, a K1
    (half of them the centre tap) with k1, else one of a few multi-tap ``patterns``."""
    rng = np.random.default_rng(seed)
    n = shape[0] * shape[1]
    k1_codes = np.where(rng.random(n) < 0.5, 16, 1 << rng.integers(0, 9, n))
    codes = np.select([rng.random(n) < k0 / (k0 + k1 + 1e-300), np.ones(n, bool)], [0, k1_codes])
    other = rng.random(n) >= k0 + k1
    codes[other] = rng.choice(patterns, other.sum())
    return kernelcode.kernel_bits(codes, shape[0], shape[1])


def kernel_breakdown(layers):
    """Where the kernel-code bytes go: gaps, Huffman table, symbols, vs their entropies."""
    print("Kernel-code bytes by part (variant 0): gaps between non-K0 kernels vs N_k h(share of non-K0); "
          "symbols vs the plug-in entropy of the non-K0 codes.\n")
    out = []
    for name, w in layers.items():
        codes = kernelcode.kernel_codes(w)
        nz = codes > 0
        syms = codes[nz]
        if syms.size == 0:
            continue
        gbits = golomb.best_golomb_m(golomb.ones_and_gaps(nz)[1])[1]
        lengths, esc = kernelcode.symbol_plan(syms)
        hs = np.where(esc[syms], kernelcode.ESC, syms)
        sbits = int(np.maximum(lengths, 0)[hs].sum()) + 9 * int(esc[syms].sum())
        c = np.bincount(syms)
        q = c[c > 0] / syms.size
        out.append([name, codes.size, int(nz.sum()), nbytes(gbits), nbytes(codes.size * h(nz.mean())),
                    nbytes(kernelcode.table_bits(lengths)), int((lengths >= 0).sum()), int(esc.sum()),
                    nbytes(sbits), nbytes(-(q * np.log2(q)).sum() * syms.size),
                    per_method_bytes(w)["golomb"][1]])
    table(["layer", "kernels", "non-K0", "gaps", "gaps bound", "table", "table symbols", "escaped codes",
           "symbols", "symbols H", "Golomb on bits"], out)


def synthetic_resnet():
    """ResNet-18 (width 64) conv shapes with the Hamming-weight histograms of
    figures/fig2.csv (95 % and 99 %), taps uniform within a weight class."""
    path = os.path.join(ROOT, "figures", "fig2.csv")
    if not os.path.exists(path):
        return {}
    hist = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            hist.setdefault((int(r["layer"]), r["constraint"]), np.zeros(10))[int(r["hamming_weight"])] = \
                float(r["percent"])
    shapes = {5: (128, 64, 3, 3), 10: (256, 256, 3, 3), 15: (512, 512, 3, 3)}
    out, rng = {}, np.random.default_rng(11)
    for (layer, cons), hw_pct in sorted(hist.items()):
        if cons == "none" or hw_pct.sum() == 0:
            continue
        shape = shapes[layer]
        n = shape[0] * shape[1]
        hw = rng.choice(10, size=n, p=hw_pct / hw_pct.sum())
        taps = np.argsort(rng.random((n, 9)), 1) < hw[:, None]
        out[f"synthetic fig2 {cons} layer {layer}"] = taps.reshape(shape)
    return out


def timing():
    print("## Decoding speed\n")
    rng = np.random.default_rng(5)
    cases = [("784x512 p=0.05", rng.random((512, 784)) < 0.05), ("784x512 p=0.01", rng.random((512, 784)) < 0.01),
             ("784x512 p=0.3", rng.random((512, 784)) < 0.3)]
    cases.append(("conv 256x256x3x3 kernel-coded", sbnn_like_conv((256, 256, 3, 3), 3)))
    out = []
    for name, w in cases:
        t0 = time.perf_counter()
        enc = encode_layer(w)
        t_enc = time.perf_counter() - t0
        decode_layer(enc, w.shape)
        ts = []
        for _ in range(30):
            t0 = time.perf_counter()
            decode_layer(enc, w.shape)
            ts.append(time.perf_counter() - t0)
        twins = golomb._TWINS if enc.method in ("golomb", "rice_rows") else kernelcode._TWINS
        twins.function = lambda name, backend="auto", _t=twins: _t.kernels[name]   # plain Python
        t0 = time.perf_counter()
        decode_layer(enc, w.shape)
        t_py = time.perf_counter() - t0
        del twins.function
        out.append([name, enc.method, int(w.sum()), f"{t_enc * 1e3:.1f}", f"{np.median(ts) * 1e3:.2f}",
                    f"{min(ts) * 1e3:.2f}", f"{t_py * 1e3:.0f}"])
    table(["layer", "method", "ones", "encode ms", "decode ms (median of 30)", "decode ms (min)",
           "decode ms uncompiled"], out)


def index_cost():
    print("## Per-row entry points (optional row index)\n")
    out = []
    for p in (0.05, 0.01, 0.001):
        w = np.random.default_rng(9).random((512, 784)) < p
        enc = encode_layer(w, methods=("golomb", "rice_rows"))
        _, _, bits = row_index(enc, w.shape)
        out.append([f"784x512 p={p}", enc.method, stored_bytes(enc), nbytes(bits),
                    f"{nbytes(bits) / stored_bytes(enc):.3f}"])
    table(["layer", "method", "stored", "index bytes", "index / stored"], out)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", action="append", default=[], help="directory of *.packed.npz files")
    MODELS.extend(ap.parse_args(argv).models)
    print(f"# {cpu_header()}\n")
    iid_tables()
    expected_redundancy()
    criterion_rates()
    criterion_rates(2000, (0.001, 0.3), only_in_range=False)
    criterion_random()
    varying_rows()
    conv_layers()
    timing()
    index_cost()


if __name__ == "__main__":
    main()
