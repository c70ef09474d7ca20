"""Export the models of a mnist_sbnn.py run to C, check them on x86 and on a Cortex-M4, size them.

    python examples/mnist_sbnn.py --quick --out /tmp/q     # models to export
    python examples/export_mcu.py --runs /tmp/q
    python examples/export_mcu.py --runs /tmp/q --optimize speed --synthetic 0.5,0.05,0.01

For every ``<name>.packed.npz`` of the run (``pysbnn.load_packed``) it

1. writes ``<out>/<name>/<name>.h`` and ``.c`` (``pysbnn.export_c``);
2. compiles them with the system C compiler (``-std=c99 -Wall -Wextra -Werror
   -pedantic -O2``) and runs them over the whole test set: the predictions
   must equal ``packed.predict`` on every image;
3. cross-compiles them for a Cortex-M4 (``-mcpu=cortex-m4 -mthumb -Os``) and
   runs ``--mcu-images`` test images under ``qemu-system-arm -M mps2-an386``;
4. prints flash (text + rodata of the model's object, code and weights) and
   RAM (data + bss + stack: estimated by ``-fstack-usage`` on x86, measured
   by stack painting on the Cortex-M4), the binary weights' flash next to
   their h(p) bound, and instructions per image: x86 from valgrind callgrind
   (repeatable), Cortex-M4 from QEMU's ``-icount``.

``--synthetic`` adds untrained 784-512-512-10 MLPs with those fractions of
ones (sizes depend on the ones, not on training). Exit status 1 if any
prediction differs. What the numbers mean: docs/mcu.md.
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np

import pysbnn
from pysbnn.export import build, elf
from pysbnn.export.synthetic import random_packed_mlp


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=os.path.join("runs", "mnist_sbnn"),
                    help="the --out directory of a mnist_sbnn.py run")
    ap.add_argument("--out", default=None, help="where the C files go (default: <runs>/c)")
    ap.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--optimize", choices=["size", "speed"], default="size")
    ap.add_argument("--mcu-images", type=int, default=200, help="test images run under QEMU")
    ap.add_argument("--count-images", type=int, default=10, help="images counted by callgrind")
    ap.add_argument("--synthetic", default="", help="densities of random 784-512-512-10 MLPs, e.g. 0.5,0.05")
    args = ap.parse_args(argv)
    args.out = args.out or os.path.join(args.runs, "c")
    try:
        args.synthetic = [float(p) for p in args.synthetic.split(",") if p.strip()]
    except ValueError:
        ap.error(f"--synthetic must be comma-separated densities, got {args.synthetic!r}")
    return args


def models(args):
    """[(name, PackedModel)]: the run's models (results.json order), then the synthetic ones."""
    names = []
    results = os.path.join(args.runs, "results.json")
    if os.path.exists(results):
        with open(results) as f:
            names = [r["name"] for r in json.load(f)]
    elif os.path.isdir(args.runs):
        names = sorted(f[:-len(".packed.npz")] for f in os.listdir(args.runs) if f.endswith(".packed.npz"))
    out = [(n, pysbnn.load_packed(os.path.join(args.runs, f"{n}.packed.npz"))) for n in names]
    out += [(f"random{100 * p:g}", random_packed_mlp((784, 512, 512, 10), p, seed=0)) for p in args.synthetic]
    return out


def test_set(args):
    loader = pysbnn.load_mnist if args.dataset == "mnist" else pysbnn.load_fashion_mnist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # the loader says it loudly once
        _, _, x, y = loader(args.data_dir)
    return x.reshape(len(x), -1), y


def host(export, out, x, packed, count):
    """Host build: flash/RAM of the object, agreement on every image, callgrind counts."""
    name = export.source.stem
    exe = build.build_host([export.source], out, model=name, inputs=export.inputs)
    preds = build.run_host(exe, x, export.inputs)
    obj = build.compile_object(export.source, out, target="host")
    s = elf.sizes(obj)
    row = {"x86_flash": s["text"] + s["rodata"],
           "x86_ram": s["data"] + s["bss"] + build.stack_estimate(obj),
           "host_agree": bool(np.array_equal(preds, packed.predict(x))), "preds": preds}
    if not build.missing_tools("valgrind"):
        row["x86_insns"] = build.instructions_per_image(exe, x[:count], name, export.inputs)
    return row


def mcu(export, out, x, packed):
    """Cortex-M4 build and QEMU run: flash/RAM of the object (stack measured), agreement."""
    name = export.source.stem
    obj = build.compile_object(export.source, out, target="mcu")
    s = elf.sizes(obj)
    info = {}
    preds, stack = build.run_mcu(build.build_mcu([export.source], out, model=name, inputs=export.inputs),
                                 x, export.inputs, info=info)
    return {"m4_flash": s["text"] + s["rodata"], "m4_ram": s["data"] + s["bss"] + stack,
            "m4_stack": stack, "m4_insns": info["mcu_instructions_per_image"],
            "m4_agree": bool(np.array_equal(preds, packed.predict(x)))}


def measure(name, packed, args, x, y):
    out = os.path.join(args.out, name)
    export = pysbnn.export_c(packed, out, name=name, optimize=args.optimize)
    row = {"name": name, "ones": sum(p.ones for p in export.layers),
           "weights": sum(p.weights for p in export.layers),
           "stored": sum(p.weight_bytes for p in export.layers),
           "bound": sum(p.bound_bytes for p in export.layers),
           "forms": "/".join({"bitmap": "B", "golomb": "G", "rice_rows": "R"}[p.form] for p in export.layers)}
    row.update(host(export, out, x, packed, max(1, args.count_images)))
    row["accuracy"] = float((row.pop("preds") == y).mean())
    if not build.missing_tools("mcu_cc", "newlib", "qemu") and args.mcu_images > 0:
        row.update(mcu(export, out, x[:args.mcu_images], packed))
    return row


def cell(row, key, fmt="{:,.0f}"):
    return fmt.format(row[key]) if key in row else "-"


def print_table(rows, args):
    head = ("| model | ones | forms | weights B | h(p) B | x86 flash | x86 RAM | M4 flash | M4 RAM "
            "| x86 instr/img | M4 instr/img | acc | agree x86 / M4 |")
    print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for r in rows:
        agree = ("yes" if r["host_agree"] else "NO") + " / " + (
            "-" if "m4_agree" not in r else "yes" if r["m4_agree"] else "NO")
        print(f"| {r['name']} | {100 * r['ones'] / r['weights']:.2f} % | {r['forms']} | {r['stored']:,} "
              f"| {r['bound']:,} | {cell(r, 'x86_flash')} | {cell(r, 'x86_ram')} | {cell(r, 'm4_flash')} "
              f"| {cell(r, 'm4_ram')} | {cell(r, 'x86_insns')} | {cell(r, 'm4_insns')} "
              f"| {100 * r['accuracy']:.2f} % | {agree} |")
    print(f"\n(optimize=\"{args.optimize}\"; bytes. flash = text + rodata of the model's object (code and "
          "weights); RAM = data + bss + stack (x86: -fstack-usage estimate; M4: measured in QEMU).\n"
          " forms per layer: B bitmap, G golomb, R rice_rows. weights B = flash of the binary weights; "
          f"instr/img: x86 callgrind over {args.count_images} images, M4 QEMU -icount over "
          f"{args.mcu_images}; agree = predictions equal packed.predict on every image run.)")


def main(argv=None):
    args = parse_args(argv)
    reason = build.missing_tools("host_cc")
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    todo = models(args)
    if not todo:
        print(f"error: no *.packed.npz in {args.runs} (run examples/mnist_sbnn.py first)", file=sys.stderr)
        return 2
    for tool in ("mcu_cc", "newlib", "qemu", "valgrind"):
        if build.missing_tools(tool):
            print(f"note: {build.missing_tools(tool)}: its columns stay empty", file=sys.stderr)
    x, y = test_set(args)
    rows = []
    for name, packed in todo:
        print(f"{name}: exporting, compiling, running {len(x)} test images", flush=True)
        rows.append(measure(name, packed, args, x, y))
    print_table(rows, args)
    with open(os.path.join(args.out, "export_mcu.json"), "w") as f:
        json.dump(rows, f, indent=1)
    ok = all(r["host_agree"] and r.get("m4_agree", True) for r in rows)
    print("all predictions equal packed.predict" if ok else "PREDICTIONS DIFFER", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
