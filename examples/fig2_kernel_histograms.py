"""Fig. 2 of the paper: Hamming weights of the 3x3 binary kernels of a binarized
ResNet-18 trained without a sparsity constraint, at 95 % and at 99 % sparsity.

    python examples/fig2_kernel_histograms.py            # Fashion-MNIST, about 9 min
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
(2,500 Adam steps); the run takes about 9 minutes on two shared cores. With
so few steps the reference code's recipe (latent weights U(+-1/sqrt(fan_in)),
gamma 0.07 at 95 %, 0.10 at 99 %) leaves the network near 50 % ones. The
defaults, latent weights U(+-1e-2), ``--gamma-95 0.5 --gamma-99 0.6`` and the
gamma rule's threshold ``min(0.002, EC/10)``, reach the targets within 0.2
point (the sweep is in docs/results.md).
"""

import argparse
import csv
import hashlib
import json
import os
import sys
import time

# OpenBLAS's worker threads spin while they wait: on a shared two-core machine a
# two-thread GEMM ran 4-5x slower than a one-thread one whenever another process
# held a core (measured). Set OPENBLAS_NUM_THREADS yourself on an idle machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pysbnn  # noqa: E402
from pysbnn import analysis, fastconv  # noqa: E402
from pysbnn.entropy import fraction_of_ones  # noqa: E402
from pysbnn.resnet import binary_conv_layers, binary_conv_positions, resnet18  # noqa: E402

#: (label, EC) of the three columns of Fig. 2.
CONSTRAINTS = (("none", None), ("95%", 0.05), ("99%", 0.01))
#: Binary conv layers shown, numbered 1..16 in forward order (paper: 5th, 10th, 15th).
SHOWN_LAYERS = (5, 10, 15)
CSV_COLUMNS = ("layer", "constraint", "hamming_weight", "percent")
LAYER_COLUMNS = ("layer", "constraint", "ones", "k0", "k1")

DEFAULTS = dict(dataset="fashion", width=8, train_size=10000, test_size=10000, epochs=8,
                batch_size=32, lr=1e-3, init="uniform", init_scale=1e-2, gamma_95=0.5,
                gamma_99=0.6, augment=False, mixup=0.0)
QUICK = dict(width=4, train_size=512, test_size=256, epochs=1, batch_size=64)


def penalty_threshold(ec):
    """The gamma rule's j threshold: lambda = 0 once ones <= EC + threshold.

    The reference's 1e-4 lets lambda ~ 1/j explode just above the target, and
    Adam's momentum then carries near-zero weights past it: short runs
    overshoot. ``min(0.002, EC / 10)`` (as examples/mnist_sbnn.py) stops the
    1/j growth in the last 0.2 point above the target.
    """
    return 1e-4 if ec is None else min(0.002, ec / 10)


# ------------------------------------------------------------ arguments
class ArgumentError(Exception):
    """A bad command-line value: reported as one line, exit status 2."""


class DataError(Exception):
    """The dataset cannot be found or read: reported as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgumentError(message)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def gamma_value(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"gamma must lie in [0, 1), got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_training_arguments(p, models_default):
    """Options shared with examples/table1_domains.py."""
    p.add_argument("--dataset", choices=("fashion", "mnist", "cifar10"), default=DEFAULTS["dataset"],
                   help="fashion: full Fashion-MNIST (falls back to the offline 5k MNIST subset "
                        "when absent); cifar10 needs the python batches on disk")
    p.add_argument("--data-dir", default=None, help="look for the dataset only here")
    p.add_argument("--width", type=positive_int, default=None,
                   help=f"channels of the first stage (default {DEFAULTS['width']}; paper: 64)")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"default {DEFAULTS['epochs']}")
    p.add_argument("--train-size", type=positive_int, default=None,
                   help=f"training images, a seeded random subset (default {DEFAULTS['train_size']})")
    p.add_argument("--test-size", type=positive_int, default=None,
                   help=f"test images evaluated (default {DEFAULTS['test_size']}, i.e. all)")
    p.add_argument("--batch-size", type=positive_int, default=None, help=f"default {DEFAULTS['batch_size']}")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="Adam, cosine annealing")
    p.add_argument("--init", choices=("uniform", "all_ones"), default=DEFAULTS["init"],
                   help="latent-weight init of the binary convs")
    p.add_argument("--init-scale", type=positive_float, default=DEFAULTS["init_scale"],
                   help="half-width of the uniform init (default 1e-2)")
    p.add_argument("--augment", action="store_true", help="random crop (pad 4) + horizontal flip")
    p.add_argument("--mixup", type=float, default=DEFAULTS["mixup"], help="mixup alpha (0: off)")
    p.add_argument("--seed", type=int, default=0, help="fixes the subset, the init and the training")
    p.add_argument("--models", default=None,
                   help=f"directory of saved models, reused and written (default {models_default}; "
                        "with --quick OUT/models)")
    p.add_argument("--retrain", action="store_true", help="ignore saved models")
    p.add_argument("--reference-conv", action="store_true",
                   help="use functional.conv2d (the slow reference) instead of pysbnn.fastconv")
    p.add_argument("--quick", action="store_true", help="tiny run for tests (< 2 minutes)")


def finish_args(args, models_default):
    """Fill the defaults (``--quick`` changes them) and check the combination."""
    base = dict(DEFAULTS, **QUICK) if args.quick else DEFAULTS
    if args.models is None:
        args.models = os.path.join(args.out, "models") if args.quick else models_default
    for key in ("width", "epochs", "train_size", "test_size", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    if args.mixup < 0:
        raise ArgumentError(f"--mixup must be >= 0, got {args.mixup}")
    if args.train_size < args.batch_size:
        raise ArgumentError(f"--train-size {args.train_size} is smaller than --batch-size {args.batch_size}")
    return args


# ------------------------------------------------------------------ data
def load_data(args):
    """``(x_train, y_train, x_test, y_test, in_channels, image_size, description)``.

    Subsets are drawn with ``args.seed``; training images are a random subset,
    test images the first ``test_size``.
    """
    try:
        if args.dataset == "cifar10":
            xtr, ytr, xte, yte = pysbnn.load_cifar10(args.data_dir)
            name, channels = "CIFAR-10", 3
        else:
            xtr = None
            if args.dataset == "fashion":
                try:
                    xtr, ytr, xte, yte = pysbnn.load_fashion_mnist(args.data_dir)
                    name = "Fashion-MNIST"
                except FileNotFoundError as e:
                    print(f"Fashion-MNIST not found ({str(e).splitlines()[0]}); falling back to MNIST.",
                          file=sys.stderr)
            if xtr is None:
                xtr, ytr, xte, yte = pysbnn.load_mnist(args.data_dir)
                name = "MNIST" if len(xtr) >= 60000 else f"MNIST {len(xtr) + len(xte):,}-image subset"
            channels = 1
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e).splitlines()[0]) from None
    rng = np.random.default_rng([args.seed, 12345])
    idx = np.sort(rng.permutation(len(xtr))[:args.train_size])
    xtr, ytr = xtr[idx], ytr[idx]
    xte, yte = xte[:args.test_size], yte[:args.test_size]
    desc = f"{name}: {len(xtr):,} training / {len(xte):,} test images"
    return xtr, ytr, xte, yte, channels, xtr.shape[1], desc


# ----------------------------------------------------------- train / load
def run_config(args, domain, ec, gamma, num_classes, in_channels):
    """Everything that defines a trained model: a saved model is reused only if it matches."""
    return {"dataset": args.dataset, "train_size": args.train_size, "width": args.width,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "init": args.init, "init_scale": args.init_scale, "augment": bool(args.augment),
            "mixup": args.mixup, "domain": domain, "target_ec": ec, "gamma": gamma,
            "penalty_threshold": penalty_threshold(ec), "num_classes": num_classes,
            "in_channels": in_channels}


def train_or_load(tag, config, data, models_dir, retrain=False, log=print):
    """Load ``models_dir/tag.npz`` if it was trained with ``config``, else train and save it.

    Returns ``(model, info)`` with ``info = {"acc", "ones", "seconds", "reused"}``.
    Training writes an epoch checkpoint ``tag.ckpt.npz`` (resumed after an
    interruption) and deletes it once the model is saved.
    """
    xtr, ytr, xte, yte = data
    path = os.path.join(models_dir, f"{tag}.npz")
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    ckpt = os.path.join(models_dir, f"{tag}-{digest}.ckpt.npz")       # one per configuration
    if os.path.exists(path) and not retrain:
        try:
            model = pysbnn.load_model(path)
        except ValueError as e:
            log(f"  cannot read {path} ({e}); retraining")
        else:
            if model.extra.get("config") == config:
                info = dict(model.extra["info"], reused=True)
                log(f"  reusing {path} (accuracy {info['acc']:.4f}, ones {info['ones']:.4f})")
                return model, info
            log(f"  {path} was trained with other settings; retraining")
    if retrain and os.path.exists(ckpt):
        os.remove(ckpt)
    model = resnet18(num_classes=config["num_classes"], in_channels=config["in_channels"],
                     width=config["width"], domain=config["domain"], seed=config["seed"],
                     init=config["init"], init_scale=config["init_scale"])
    os.makedirs(models_dir, exist_ok=True)
    t0 = time.perf_counter()
    pysbnn.fit(model, xtr, ytr, epochs=config["epochs"], batch_size=config["batch_size"],
               lr=config["lr"], seed=config["seed"], target_ec=config["target_ec"],
               gamma=config["gamma"], penalty_threshold=config["penalty_threshold"],
               mixup_alpha=config["mixup"],
               augment=pysbnn.random_crop_flip if config["augment"] else None,
               checkpoint=ckpt, verbose=True)
    seconds = time.perf_counter() - t0
    _, acc = pysbnn.evaluate(model, xte, yte)
    ones = fraction_of_ones([c.params["weight"] for c in binary_conv_layers(model)])
    info = {"acc": float(acc), "ones": float(ones), "seconds": seconds, "reused": False}
    pysbnn.save_model(model, path, extra={"config": config, "info": info})
    if os.path.exists(ckpt):
        os.remove(ckpt)
    log(f"  test accuracy {acc:.4f}, ones {ones:.4f}, {seconds:.0f} s; saved {path}")
    return model, info


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
        layers = [(analysis.ones_fraction(w),) + analysis.k0_k1(w)[:2] for w in weights]
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


# ------------------------------------------------------------------- main
def parse_args(argv):
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(p, models_default="runs/fig2")
    p.add_argument("--gamma-95", type=gamma_value, default=DEFAULTS["gamma_95"],
                   help="gamma of the 95%% run (reference code: 0.07)")
    p.add_argument("--gamma-99", type=gamma_value, default=DEFAULTS["gamma_99"],
                   help="gamma of the 99%% run (reference code: 0.10)")
    p.add_argument("--out", default="figures", help="where fig2.png and the CSVs go (default figures/)")
    return finish_args(p.parse_args(argv), "runs/fig2")


def main(argv=None):
    args = parse_args(argv)
    if not args.reference_conv:
        fastconv.enable()
    xtr, ytr, xte, yte, channels, size, desc = load_data(args)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    gammas = {"none": 0.0, "95%": args.gamma_95, "99%": args.gamma_99}
    print(f"{desc}; ResNet-18 width {args.width}, {args.epochs} epoch(s), batch {args.batch_size}, "
          f"seed {args.seed}")
    models, infos = {}, {}
    for i, (label, ec) in enumerate(CONSTRAINTS, start=1):
        tag = "none" if ec is None else f"ec{ec:g}"
        print(f"[{i}/{len(CONSTRAINTS)}] constraint {label}" + ("" if ec is None else
              f" (EC {ec:g}, gamma {gammas[label]:g})"), flush=True)
        config = run_config(args, "learned", ec, gammas[label], num_classes, channels)
        models[label], infos[label] = train_or_load(tag, config, (xtr, ytr, xte, yte), args.models,
                                                    args.retrain)
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


def cli(main_fn, argv=None):
    """Run ``main_fn``: bad arguments -> one line + exit 2; Ctrl-C -> exit 130, saved models kept."""
    try:
        return main_fn(argv)
    except ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished models are saved in the models directory "
              "(an unfinished one resumes from its last epoch); rerun to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli(main))
