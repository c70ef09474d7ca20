"""Reusable pieces of the ResNet-18 example scripts (Fig. 2, Table 1).

Command-line options shared by the scripts, the dataset and subset they
train on, and :func:`train_or_load`: a model cache keyed by the whole
training configuration, so that an interrupted or repeated run reuses every
model it already finished (and resumes an unfinished one from its epoch
checkpoint).
"""

import argparse
import functools
import hashlib
import json
import os
import sys
import time

import numpy as np

from .data import load_cifar10, load_fashion_mnist, load_mnist
from .entropy import fraction_of_ones
from .recipe import RESNET_GAMMA, penalty_threshold
from .resnet import binary_conv_layers, resnet18
from .serialize import load_model, save_model
from .train import evaluate, fit, random_crop_flip

__all__ = ["DEFAULTS", "QUICK", "ArgumentError", "DataError", "Parser", "positive_int", "gamma_value",
           "positive_float", "add_training_arguments", "finish_args", "load_data", "run_config",
           "train_or_load", "load_saved", "train_job", "TaggedLines", "cli"]

DEFAULTS = dict(dataset="fashion", width=8, train_size=10000, test_size=10000, epochs=8,
                batch_size=32, lr=1e-3, init="uniform", init_scale=1e-2, gamma_95=RESNET_GAMMA[0.95],
                gamma_99=RESNET_GAMMA[0.99], augment=False, mixup=0.0)
QUICK = dict(width=4, train_size=512, test_size=256, epochs=1, batch_size=64)


# ------------------------------------------------------------ arguments
class ArgumentError(Exception):
    """A bad command-line value: reported as one line, exit status 2."""


class DataError(Exception):
    """The dataset cannot be found or read: reported as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`ArgumentError` (one line, exit 2)."""

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
    p.add_argument("--backend", choices=("auto", "numba", "numpy"), default="auto",
                   help="kernels of the training convolutions (numpy: the NumPy references)")
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
            xtr, ytr, xte, yte = load_cifar10(args.data_dir)
            name, channels = "CIFAR-10", 3
        else:
            xtr = None
            if args.dataset == "fashion":
                try:
                    xtr, ytr, xte, yte = load_fashion_mnist(args.data_dir)
                    name = "Fashion-MNIST"
                except FileNotFoundError as e:
                    print(f"Fashion-MNIST not found ({str(e).splitlines()[0]}); falling back to MNIST.",
                          file=sys.stderr)
            if xtr is None:
                xtr, ytr, xte, yte = load_mnist(args.data_dir)
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
def run_config(args, domain, ec, gamma, num_classes, in_channels, penalty_scaling="none"):
    """Everything that defines a trained model: a saved model is reused only if it matches.

    ``domain``: a name or a domain config dict (e.g. ``{"name": "sym", "grad": "ste"}``);
    ``penalty_scaling``: see :func:`pysbnn.train.penalty_scale`.
    """
    return {"dataset": args.dataset, "train_size": args.train_size, "width": args.width,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "init": args.init, "init_scale": args.init_scale, "augment": bool(args.augment),
            "mixup": args.mixup, "domain": domain, "target_ec": ec, "gamma": gamma,
            "penalty_threshold": penalty_threshold(ec), "penalty_scaling": penalty_scaling,
            "num_classes": num_classes, "in_channels": in_channels}


def train_or_load(tag, config, data, models_dir, retrain=False, log=print, backend="auto", verbose=True,
                  stream=None):
    """Load ``models_dir/tag.npz`` if it was trained with ``config``, else train and save it.

    ``data``: ``(x_train, y_train, x_test, y_test)``, or a function returning
    it (called only when a model has to be trained).
    Returns ``(model, info)``, ``info`` as :func:`_train_info` plus ``reused``.
    ``backend`` runs the training convolutions (it does not change the result
    beyond float rounding, so it is not part of ``config``); ``verbose``
    prints fit's progress, to ``stream`` if given (see ``fit``).
    Training writes an epoch checkpoint ``tag.ckpt.npz`` (resumed after an
    interruption) and deletes it once the model is saved.
    """
    path = os.path.join(models_dir, f"{tag}.npz")
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    ckpt = os.path.join(models_dir, f"{tag}-{digest}.ckpt.npz")       # one per configuration
    if not retrain:
        saved = load_saved(tag, config, models_dir, log)
        if saved is not None:
            return saved
    if retrain and os.path.exists(ckpt):
        os.remove(ckpt)
    xtr, ytr, xte, yte = data() if callable(data) else data
    model = resnet18(num_classes=config["num_classes"], in_channels=config["in_channels"],
                     width=config["width"], domain=config["domain"], seed=config["seed"],
                     init=config["init"], init_scale=config["init_scale"]).set_backend(backend)
    os.makedirs(models_dir, exist_ok=True)
    t0 = time.perf_counter()
    history = fit(model, xtr, ytr, epochs=config["epochs"], batch_size=config["batch_size"],
                  lr=config["lr"], seed=config["seed"], target_ec=config["target_ec"],
                  gamma=config["gamma"], penalty_threshold=config["penalty_threshold"],
                  penalty_scaling=config.get("penalty_scaling", "none"), mixup_alpha=config["mixup"],
                  augment=random_crop_flip if config["augment"] else None, checkpoint=ckpt,
                  verbose=verbose, stream=stream)
    seconds = time.perf_counter() - t0
    _, acc = evaluate(model, xte, yte)
    info = _train_info(model, history, acc, seconds, config)
    save_model(model, path, extra={"config": config, "info": info})
    if os.path.exists(ckpt):
        os.remove(ckpt)
    log(f"  test accuracy {acc:.4f}, ones {info['ones']:.4f}, {seconds:.0f} s; saved {path}")
    return model, dict(info, reused=False)


def load_saved(tag, config, models_dir, log=print):
    """``(model, info)`` of ``models_dir/tag.npz`` if it was trained with ``config``, else None.

    ``info`` is the saved one plus ``reused=True``; an unreadable file or one
    trained with other settings gives None (and a line to ``log``).
    """
    path = os.path.join(models_dir, f"{tag}.npz")
    if not os.path.exists(path):
        return None
    try:
        model = load_model(path)
    except ValueError as e:
        log(f"  cannot read {path} ({e}); retraining")
        return None
    if model.extra.get("config") != config:
        log(f"  {path} was trained with other settings; retraining")
        return None
    info = dict(model.extra["info"], reused=True)
    log(f"  reusing {path} (accuracy {info['acc']:.4f}, ones {info['ones']:.4f})")
    return model, info


def _train_info(model, history, acc, seconds, config):
    """What a sweep reports of one trained model (all JSON numbers).

    ``acc``, ``ones`` (fraction of ones of the binary convs), ``seconds``;
    ``push``: mean over the penalised epochs of the history's ``push``
    (:func:`pysbnn.train.penalty_push`, 0 without penalty); ``xi``: median
    over the binary convs of the final xi of Eq. 4 (-0.5 for {-beta, +beta},
    0 for {0, beta}); ``target_epoch``: first epoch (1-based) that ended
    within the gamma rule's threshold of the target, None if none did.
    """
    convs = binary_conv_layers(model)
    ones = fraction_of_ones([c.params["weight"] for c in convs])
    pushes = [row["push"] for row in history if row.get("push")]
    xis = [c.xi_eta()[0] for c in convs if c.tau_phi()[0] != 0]
    ec = config["target_ec"]
    reached = [row["epoch"] + 1 for row in history
               if ec is not None and row["ones"] <= ec + config["penalty_threshold"]]
    return {"acc": float(acc), "ones": float(ones), "seconds": seconds,
            "push": float(np.mean(pushes)) if pushes else 0.0,
            "xi": float(np.median(xis)) if xis else float("nan"),
            "target_epoch": reached[0] if reached else None}


@functools.lru_cache(maxsize=2)
def _subset(dataset, data_dir, train_size, test_size, seed):
    args = argparse.Namespace(dataset=dataset, data_dir=data_dir, train_size=train_size,
                              test_size=test_size, seed=seed)
    return load_data(args)[:4]


def train_job(job):
    """One training of a sweep, as a picklable function of a JSON-like ``job`` dict.

    ``job``: ``tag``, ``config`` (:func:`run_config`), ``data`` (``dataset``,
    ``data_dir``, ``train_size``, ``test_size``, ``seed`` of :func:`load_data`),
    ``models`` (directory), ``retrain``, ``backend``. Quiet; returns the
    ``info`` of :func:`train_or_load`. Everything random comes from the
    config's seed, so the result does not depend on the process that runs it.
    The data subset is loaded only when a model must be trained, and cached per process.
    With ``job["progress"]`` true it prints its lines and fit's per-epoch lines
    to stdout, each prefixed with ``[tag]`` (jobs running at once stay readable).
    """
    stream = TaggedLines(sys.stdout, job["tag"]) if job.get("progress") else None
    log = (lambda *a: stream.write(" ".join(map(str, a)) + "\n")) if stream else (lambda *a: None)
    _, info = train_or_load(job["tag"], job["config"], lambda: _subset(**job["data"]), job["models"],
                            job.get("retrain", False), log=log, backend=job.get("backend", "auto"),
                            verbose=stream is not None, stream=stream)
    return info


class TaggedLines:
    """A text stream that writes whole lines to ``stream``, each prefixed with
    ``[tag] ``, and flushes after each; not a terminal, so ``fit`` writes
    per-epoch lines and no progress bar."""

    def __init__(self, stream, tag):
        self.stream, self.prefix, self._pending = stream, f"[{tag}] ", ""

    def write(self, text):
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1]
            if line:
                self.stream.write(self.prefix + line + "\n")
        self.stream.flush()
        return len(text)

    def flush(self):
        self.stream.flush()


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


