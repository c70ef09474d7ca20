"""Fig. 2 of the paper: Hamming weights of the 3x3 binary kernels of a binarized
ResNet-18 trained without a sparsity constraint, at 95 % and at 99 % sparsity.

    python examples/fig2_kernel_histograms.py            # Fashion-MNIST, about 5 min on 2 cores
    python examples/fig2_kernel_histograms.py --quick    # smoke test, < 2 min
    python examples/fig2_kernel_histograms.py --dataset cifar10 --width 16 --epochs 20

Each 3x3 kernel of a binary conv is a 9-bit code with bit ``b = (w >= 0)``
(docs/conventions.md); its Hamming weight is its number of ones. Kernels of
weight 0 (K0) are skipped entirely at inference, kernels of weight 1 (K1) are
a shifted copy of one input plane, no convolution (Sec. 3.5, 4.1). The figure
shows the 5th, 10th and 15th of the 16 binary convs (rows) for the three
constraints (columns); the paper's claim is that K0 and K1 grow with sparsity.

Writes ``OUT/fig2.png`` and ``OUT/fig2.csv`` (columns ``layer, constraint,
hamming_weight, percent``; OUT is ``figures/`` by default), prints K0 / K1 of
every binary conv and the whole network's BOPs and BParams reductions
(Tables 2-3), and writes them to ``OUT/fig2_layers.csv``.

Trained models are saved, each as soon as it is done, in the models directory
(``--models``, default ``runs/fig2/``); a later run reuses every model there
that was trained with the same settings and trains only the missing ones, so
Ctrl-C never loses a finished model (an unfinished one resumes from its last
epoch checkpoint). ``--retrain`` ignores saved models.

The scale is far below the paper's (width 64, 300-500 epochs on CIFAR-10):
by default width 8, 10,000 Fashion-MNIST training images, batch 32, 8 epochs
(2,500 Adam steps). The three models train at once (``--jobs``, default 3 on
a multi-core machine), one process and one thread each, so the numbers do not
depend on ``--jobs``; a default run took 4 min 54 s on two shared cores
(docs/results.md). With
so few steps the reference code's recipe (latent weights U(+-1/sqrt(fan_in)),
gamma 0.07 at 95 %, 0.10 at 99 %) leaves the network near 50 % ones. The
defaults, latent weights U(+-1e-2), ``--gamma-95 0.5 --gamma-99 0.6`` and the
gamma rule's threshold ``min(0.002, EC/10)``, reach the targets within 0.2
point (the sweep is in docs/results.md).
"""

import argparse
import csv
import json
import os
import sys

# OpenBLAS's worker threads spin while they wait: on a shared two-core machine a
# two-thread GEMM ran 4-5x slower than a one-thread one whenever another process
# held a core (measured). Set OPENBLAS_NUM_THREADS yourself on an idle machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pysbnn import analysis  # noqa: E402
from pysbnn.entropy import fraction_of_ones_per_layer  # noqa: E402
from pysbnn.experiment import (DEFAULTS, Parser, add_training_arguments, cli, finish_args,  # noqa: E402
                               gamma_value, load_data, load_saved, positive_int, run_config, train_job)
from pysbnn.sweep import run_jobs  # noqa: E402
from pysbnn.resnet import binary_conv_layers, binary_conv_positions  # noqa: E402

#: (label, EC) of the three columns of Fig. 2.
CONSTRAINTS = (("none", None), ("95%", 0.05), ("99%", 0.01))
#: Binary conv layers shown, numbered 1..16 in forward order (paper: 5th, 10th, 15th).
SHOWN_LAYERS = (5, 10, 15)
CSV_COLUMNS = ("layer", "constraint", "hamming_weight", "percent")
LAYER_COLUMNS = ("layer", "constraint", "ones", "k0", "k1")
#: Three single-threaded processes on two cores trained the three default models
#: 1.7x faster than one after the other with two threads each (docs/results.md).
DEFAULT_JOBS = len(CONSTRAINTS) if (os.cpu_count() or 1) > 1 else 1


# ------------------------------------------------------------- statistics
def kernel_statistics(models, image_size):
    """Per constraint: Hamming-weight percentages of the shown layers, K0/K1 of
    every layer, and the network's BOPs / BParams reductions (``pysbnn.analysis``)."""
    stats = {}
    for label, model in models.items():
        weights = [c.params["weight"] for c in binary_conv_layers(model)]
        positions = binary_conv_positions(model, image_size)
        hist = {k: 100.0 * analysis.kernel_histogram(weights[k - 1])[1] / weights[k - 1][:, :, 0, 0].size
                for k in SHOWN_LAYERS}
        layers = [(ones,) + analysis.k0_k1(w)[:2] for ones, w in zip(fraction_of_ones_per_layer(weights), weights)]
        stats[label] = {"hist": hist, "layers": layers,
                        "bops_pr": analysis.bops_pr_k0k1(weights, positions),
                        "bparams_pr": analysis.bparams_pr(weights),
                        "k0": sum(analysis.k0_k1(w)[2] for w in weights) / sum(w[:, :, 0, 0].size for w in weights),
                        "k1": sum(analysis.k0_k1(w)[3] for w in weights) / sum(w[:, :, 0, 0].size for w in weights)}
    return stats


def write_csvs(stats, out):
    rows = [{"layer": k, "constraint": label, "hamming_weight": hw, "percent": f"{s['hist'][k][hw]:.4f}"}
            for label, s in stats.items() for k in SHOWN_LAYERS for hw in range(10)]
    with open(os.path.join(out, "fig2.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, "fig2_layers.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LAYER_COLUMNS)
        for label, s in stats.items():
            for k, (ones, k0, k1) in enumerate(s["layers"], start=1):
                w.writerow([k, label, f"{ones:.5f}", f"{k0:.5f}", f"{k1:.5f}"])


def print_report(stats, infos):
    labels = list(stats)
    print("\nK0 / K1 (% of kernels with Hamming weight 0 / 1) and ones (%) per binary conv layer")
    print("layer " + "".join(f"| {lab:^23}" for lab in labels))
    print("      " + "| ones    K0     K1     " * len(labels))
    for k in range(16):
        row = "".join(f"| {100 * s['layers'][k][0]:5.1f} {100 * s['layers'][k][1]:6.1f} "
                      f"{100 * s['layers'][k][2]:6.1f}  " for s in stats.values())
        mark = " <- Fig. 2" if k + 1 in SHOWN_LAYERS else ""
        print(f"{k + 1:5d} {row}{mark}")
    print("\nwhole network (16 binary convs)")
    print(f"{'constraint':>10} {'accuracy':>9} {'ones %':>7} {'K0 %':>6} {'K1 %':>6} "
          f"{'BOPs PR':>8} {'BParams PR':>11}")
    for label, s in stats.items():
        print(f"{label:>10} {100 * infos[label]['acc']:8.2f}% {100 * infos[label]['ones']:7.2f} "
              f"{100 * s['k0']:6.1f} {100 * s['k1']:6.1f} {-100 * s['bops_pr']:+7.1f}% "
              f"{-100 * s['bparams_pr']:+10.1f}%")
    print("Negative = fewer, as in the paper's tables. BOPs PR: binary operations of the K0 and K1 "
          "kernels,\nremoved (Table 2). BParams PR: 2 bits per kernel + 4 per K1 kernel + 9 per other "
          "kernel,\nagainst 9 bits per kernel (Table 3).")


def plot(stats, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(stats)
    fig, axes = plt.subplots(len(SHOWN_LAYERS), len(labels), figsize=(3.2 * len(labels), 2.5 * len(SHOWN_LAYERS)),
                             sharex=True, sharey=True, squeeze=False)
    names = {"none": "no constraint", "95%": "95 % sparsity", "99%": "99 % sparsity"}
    for r, k in enumerate(SHOWN_LAYERS):
        for c, label in enumerate(labels):
            ax = axes[r, c]
            pct = stats[label]["hist"][k]
            colors = ["tab:red", "tab:orange"] + ["tab:blue"] * 8
            ax.bar(np.arange(10), pct, color=colors)
            ax.set_ylim(0, 100)
            ax.set_xticks(range(10))
            ax.text(0.97, 0.93, f"K0 {pct[0]:.1f} %\nK1 {pct[1]:.1f} %", transform=ax.transAxes,
                    ha="right", va="top", fontsize=8)
            if r == 0:
                ax.set_title(names.get(label, label))
            if c == 0:
                ax.set_ylabel(f"layer {k}\n% of kernels")
            if r == len(SHOWN_LAYERS) - 1:
                ax.set_xlabel("Hamming weight")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------- training
def train_all(args, gammas, num_classes, channels):
    """The three models, ``({label: model}, {label: info})``: saved ones reused,
    the others trained at once in ``args.jobs`` processes, each single-threaded
    (so the numbers do not depend on ``--jobs``), and saved as each finishes."""
    models, infos, todo = {}, {}, []
    for i, (label, ec) in enumerate(CONSTRAINTS, start=1):
        tag = "none" if ec is None else f"ec{ec:g}"
        print(f"[{i}/{len(CONSTRAINTS)}] constraint {label}" + ("" if ec is None else
              f" (EC {ec:g}, gamma {gammas[label]:g})"), flush=True)
        config = run_config(args, "learned", ec, gammas[label], num_classes, channels)
        saved = None if args.retrain else load_saved(tag, config, args.models)
        if saved is None:
            todo.append(dict(tag=tag, label=label, config=config, models=args.models, retrain=args.retrain,
                             backend=args.backend, progress=True,
                             data=dict(dataset=args.dataset, data_dir=args.data_dir, train_size=args.train_size,
                                       test_size=args.test_size, seed=args.seed)))
        else:
            models[label], infos[label] = saved
    jobs = min(args.jobs, max(len(todo), 1))
    if todo:
        print(f"training {', '.join(j['tag'] for j in todo)} in {jobs} process(es), one thread each "
              f"(models saved in {args.models})", flush=True)
    for job, _ in run_jobs(train_job, todo, jobs):      # each job prints its own lines
        models[job["label"]], infos[job["label"]] = load_saved(job["tag"], job["config"], args.models,
                                                              log=lambda *a: None)
    return {label: models[label] for label, _ in CONSTRAINTS}, {label: infos[label] for label, _ in CONSTRAINTS}


# ------------------------------------------------------------------- main
def parse_args(argv):
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(p, models_default="runs/fig2")
    p.add_argument("--gamma-95", type=gamma_value, default=DEFAULTS["gamma_95"],
                   help="gamma of the 95%% run (reference code: 0.07)")
    p.add_argument("--gamma-99", type=gamma_value, default=DEFAULTS["gamma_99"],
                   help="gamma of the 99%% run (reference code: 0.10)")
    p.add_argument("--out", default="figures", help="where fig2.png and the CSVs go (default figures/)")
    p.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS,
                   help=f"models trained at once, one process and one thread each (default {DEFAULT_JOBS})")
    return finish_args(p.parse_args(argv), "runs/fig2")


def main(argv=None):
    args = parse_args(argv)
    xtr, ytr, xte, yte, channels, size, desc = load_data(args)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    gammas = {"none": 0.0, "95%": args.gamma_95, "99%": args.gamma_99}
    print(f"{desc}; ResNet-18 width {args.width}, {args.epochs} epoch(s), batch {args.batch_size}, "
          f"seed {args.seed}")
    models, infos = train_all(args, gammas, num_classes, channels)
    stats = kernel_statistics(models, size)
    os.makedirs(args.out, exist_ok=True)
    write_csvs(stats, args.out)
    print_report(stats, infos)
    title = (f"Binarized ResNet-18 (width {args.width}), learned {{alpha, beta}}; {desc}, "
             f"{args.epochs} epoch{'s' * (args.epochs > 1)}.\nRed: K0 (kernel skipped), "
             f"orange: K1 (shifted copy, no convolution).")
    plot(stats, os.path.join(args.out, "fig2.png"), title)
    with open(os.path.join(args.out, "fig2_run.json"), "w") as f:
        json.dump({"args": vars(args), "infos": infos}, f, indent=1)
    print(f"\nwrote {os.path.join(args.out, 'fig2.png')}, fig2.csv, fig2_layers.csv, fig2_run.json")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
