"""Which weight form runs faster in exported C: bitmap words or a gap code, per layer.

    python benchmarks/bench_export.py                 # ~3 minutes on 2 cores
    python benchmarks/bench_export.py --quick         # fewer densities

For random MLPs (784-512-512-10 and 256-256-128-10, i.i.d. ones at density
p) it exports every model once with all layers as bitmaps and once per layer
with that layer gap-coded (the smaller of golomb / rice_rows), and measures
the instructions per image of ``<name>_predict``: Cortex-M4 (-Os, QEMU
``-icount``: executed Thumb-2 instructions) and x86-64 (gcc -O2, valgrind
callgrind). The difference ``gaps - bitmap`` of one layer is the price of
coding it; a least-squares fit per input kind (uint8 pixels, bits),

    delta = per_row * M + per_word * M * ceil(K / 32) + per_one * ones

(fitted on p <= 5 %, where the crossovers are), is the rule ``export_c(optimize="speed")`` applies
(``pysbnn.export.plan.GAPS_MINUS_BITMAP``, fitted on the Cortex-M4). It also
times ``popcount32``'s two bodies (``__builtin_popcount`` vs the SWAR lines)
on the bits kernel. Prints Markdown tables; ``--json`` writes the points.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pysbnn  # noqa: E402
from _timing import cpu_header  # noqa: E402
from pysbnn.export import build, plan  # noqa: E402
from pysbnn.export.synthetic import random_images, random_packed_mlp  # noqa: E402

SHAPES = [(784, 512, 512, 10), (256, 256, 128, 10)]
DENSITIES = [0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002]


def counts(packed, forms, tmp, images, extra=()):
    """(Cortex-M4, x86) instructions per image of one export."""
    export = pysbnn.export_c(packed, tmp, name="bench", forms=forms)
    x = images[:, :export.inputs]
    info = {}
    build.run_mcu(build.build_mcu([export.source], tmp, model="bench", inputs=export.inputs,
                                  extra_cflags=extra), x[:20], inputs=export.inputs, info=info)
    exe = build.build_host([export.source], tmp, model="bench", inputs=export.inputs, extra_cflags=extra)
    return info["mcu_instructions_per_image"], build.instructions_per_image(exe, x[:5], "bench",
                                                                             export.inputs)


def best_coded(layer):
    w = layer.ones_rows().astype(bool)
    sizes = plan._coded_candidates(w)
    return min(sizes, key=lambda m: (sizes[m], m))


def measure(shape, p, tmp, images):
    """The per-layer points (dicts) of one random model."""
    packed = random_packed_mlp(shape, p, seed=int(1000 * p) + shape[1])
    layers = [l for _, l in packed.packed_layers()]
    base = counts(packed, "bitmap", tmp, images)
    points = []
    for i, layer in enumerate(layers):
        forms = ["bitmap"] * len(layers)
        forms[i] = best_coded(layer)
        mcu, x86 = counts(packed, forms, tmp, images)
        ones = layer.n_ones()
        N = layer.in_features * layer.out_features
        points.append(dict(shape=list(shape), layer=i, input="bits" if layer.binarize_input else "raw",
                           K=layer.in_features, M=layer.out_features, p=p, form=forms[i],
                           coded_ones=min(ones, N - ones), mcu_delta=mcu - base[0],
                           x86_delta=x86 - base[1], mcu_bitmap=base[0], x86_bitmap=base[1]))
        print(f"  {shape} p={p} layer {i} ({points[-1]['input']}, {forms[i]}): "
              f"Cortex-M4 {mcu - base[0]:+,.0f}, x86 {x86 - base[1]:+,.0f} instructions", flush=True)
    return points


#: the fit uses the densities near the crossovers (the price per one is not
#: constant: at 30 % ones a gap is short and cheap)
FIT_MAX_DENSITY = 0.05


def fit(points, target):
    """Least squares (per_row, per_word, per_one) of ``delta / M`` for each input kind,
    over the points with p <= FIT_MAX_DENSITY (each row of a layer weighs the same)."""
    out = {}
    for inp in ("raw", "bits"):
        pts = [q for q in points if q["input"] == inp and q["p"] <= FIT_MAX_DENSITY]
        A = np.array([[1.0, plan.bitmap_words(q["K"]), q["coded_ones"] / q["M"]] for q in pts])
        b = np.array([q[f"{target}_delta"] / q["M"] for q in pts])
        out[inp] = tuple(float(v) for v in np.linalg.lstsq(A, b, rcond=None)[0])
    return out


def measured_crossovers(points, target):
    """{(input, K, M): p where delta changes sign}, interpolated linearly in p between
    the two measured densities around it (None if it never does)."""
    out = {}
    for key in sorted({(q["input"], q["K"], q["M"]) for q in points}):
        pts = sorted((q["p"], q[f"{target}_delta"]) for q in points if (q["input"], q["K"], q["M"]) == key)
        out[key] = None
        for (p0, d0), (p1, d1) in zip(pts, pts[1:]):
            if d0 < 0 <= d1:
                out[key] = p0 + (p1 - p0) * -d0 / (d1 - d0)
    return out


def crossover(coef, K):
    """The density below which the gap code is faster, for rows of K inputs."""
    per_row, per_word, per_one = coef
    return -(per_row + per_word * plan.bitmap_words(K)) / per_one / K


def popcount_bodies(tmp, images):
    """Instructions per image of an all-bitmap model, SWAR vs __builtin_popcount."""
    packed = random_packed_mlp(SHAPES[0], 0.05, seed=3)
    swar = counts(packed, "bitmap", tmp, images)
    builtin = counts(packed, "bitmap", tmp, images, extra=["-DSBNN_BUILTIN_POPCOUNT"])
    return swar, builtin


def report(points, fits, pops):
    print("\n| shape | layer | input | K x M | p | coded as | Cortex-M4 gaps - bitmap | "
          "x86 gaps - bitmap |\n|---|---|---|---|---|---|---|---|")
    for q in points:
        print(f"| {'-'.join(map(str, q['shape']))} | {q['layer']} | {q['input']} | {q['K']} x {q['M']} | "
              f"{q['p']} | {q['form']} | {q['mcu_delta']:+,.0f} | {q['x86_delta']:+,.0f} |")
    print("\n| target | input | per row | per word | per one | p* (K = 784) | p* (K = 512) | p* (K = 128) |"
          "\n|---|---|---|---|---|---|---|---|")
    for target, f in fits.items():
        for inp, c in f.items():
            print(f"| {target} | {inp} | {c[0]:.1f} | {c[1]:.1f} | {c[2]:.1f} | "
                  + " | ".join(f"{100 * crossover(c, K):.2f} %" for K in (784, 512, 128)) + " |")
    print("\n| input | K x M | measured p*, Cortex-M4 | measured p*, x86 |\n|---|---|---|---|")
    cross = {t: measured_crossovers(points, t) for t in ("mcu", "x86")}
    for key in cross["mcu"]:
        cell = lambda t: "none" if cross[t][key] is None else f"{100 * cross[t][key]:.2f} %"  # noqa: E731
        print(f"| {key[0]} | {key[1]} x {key[2]} | {cell('mcu')} | {cell('x86')} |")
    (m_swar, x_swar), (m_bi, x_bi) = pops
    print(f"\npopcount32, all-bitmap 784-512-512-10 at 5 %: Cortex-M4 SWAR {m_swar:,.0f} vs "
          f"__builtin_popcount {m_bi:,.0f}; x86 SWAR {x_swar:,.0f} vs builtin {x_bi:,.0f} instructions/image")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three densities, one shape")
    ap.add_argument("--json", help="write the measured points here")
    args = ap.parse_args(argv)
    reason = build.missing_tools("host_cc", "mcu_cc", "newlib", "qemu", "valgrind")
    if reason:
        print(f"bench_export: {reason}", file=sys.stderr)
        return 2
    print(f"# {cpu_header()} (instruction counts: QEMU Cortex-M4 and callgrind, not timings)")
    shapes, densities = (SHAPES[:1], [0.1, 0.02, 0.005]) if args.quick else (SHAPES, DENSITIES)
    images = random_images(20, 784, seed=11)
    points = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        for shape in shapes:
            for p in densities:
                points += measure(shape, p, tmp, images)
        pops = popcount_bodies(tmp, images)
    fits = {"Cortex-M4": fit(points, "mcu"), "x86": fit(points, "x86")}
    report(points, fits, pops)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"points": points, "fits": fits, "popcount": pops}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
