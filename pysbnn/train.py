"""The training loop: mini-batches, mixup, the sparsity penalty with the gamma
rule (Eq. 16-18), cosine annealing, progress, and atomic checkpoints with resume.

``fit`` and ``evaluate`` check their data against the model before any work
(:mod:`pysbnn.validation`), and ``fit`` stops with a :class:`DivergenceError`
naming the epoch and step as soon as the loss, a gradient or a parameter
becomes NaN or inf.

One ``seed`` fixes a whole run: the batch order, mixup and augmentation of
epoch ``e`` come from ``np.random.default_rng([seed, e])``, so a run resumed
from a checkpoint ends with the same weights as an uninterrupted one.
"""

import contextlib
import itertools
import math
import os
import time

import numpy as np

from . import entropy
from .binary import BinaryConv2d
from .functional import one_hot, softmax_cross_entropy
from .serialize import atomic_savez, encode_json, load_arrays, model_arrays, read_npz
from .optim import SGD, Adam, clip_latent_weights, cosine_lr
from .kernels.jit import blas_threads, num_threads
from .progress import Progress
from .validation import check_finite_model, check_labels, check_pair, check_positive_int, first_non_finite


def binary_layers(model):
    """``[(name, layer)]`` of the layers holding latent binary weights."""
    return [(n, l) for n, l in model.named_layers() if getattr(l, "latent_params", ())]


def latent_weights(model):
    """The latent weight arrays of all binary layers, in model order."""
    return [l.params[k] for _, l in binary_layers(model) for k in l.latent_params]


def sparsity_report(model):
    """Fraction of ones globally and per binary layer, and bits/weight h(p) (Eq. 6)."""
    ws = latent_weights(model)
    if not ws:
        return {}
    per_layer = {n: entropy.fraction_of_ones([l.params[k] for k in l.latent_params])
                 for n, l in binary_layers(model)}
    ones = entropy.fraction_of_ones(ws)
    return {"ones": float(ones), "bits_per_weight": float(entropy.binary_entropy(ones)),
            "ones_per_layer": per_layer}


class DivergenceError(ValueError):
    """``fit`` stopped: the loss, a gradient or a parameter became NaN or inf.

    ``epoch`` (0-based, as in the history) and ``step`` (1-based) say where.
    """

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch, self.step = epoch, step


def evaluate(model, x, y, batch_size=1000):
    """Mean cross-entropy and accuracy of ``model`` (inference mode) on ``(x, y)``.

    x : (n, ...) inputs as the model's first layer takes them; y : (n,) int labels.
    """
    x = model.check_input(x, "x")
    y = check_labels("y", y, len(x), model.num_classes(), "x")
    return _evaluate(model, x, y, check_positive_int("batch_size", batch_size))


def _evaluate(model, x, y, batch_size):
    total, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model._forward(x[i:i + batch_size], training=False)
        loss, _ = softmax_cross_entropy(logits, y[i:i + batch_size])
        total += loss * len(logits)
        correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
    return total / len(x), correct / len(x)


def random_crop_flip(x, rng, pad=4, flip=True):
    """Random crop after zero padding by ``pad`` pixels, and random horizontal flip.

    x : (n, h, w) or (n, h, w, c) images; returns an array of the same shape.
    """
    n, h, w = x.shape[:3]
    widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 3)
    xp = np.pad(x, widths)
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(h)                       # (n, h)
    cols = dx[:, None] + np.arange(w)                       # (n, w)
    if flip:
        flipped = rng.random(n) < 0.5
        cols[flipped] = cols[flipped, ::-1]
    return xp[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _make_optimizer(model, optimizer, lr, clip):
    hooks = [lambda m: clip_latent_weights(m, clip)] if clip else []
    if optimizer == "adam":
        return Adam(model, lr=lr, post_step=hooks)
    if optimizer == "sgd":
        return SGD(model, lr=lr, momentum=0.9, post_step=hooks)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def _save_checkpoint(path, model, opt, epoch, history, run_id):
    arrays = {f"model/{k}": v for k, v in model_arrays(model).items()}
    arrays.update({f"optim/{k}": v for k, v in opt.state_arrays().items()})
    meta = {"kind": "checkpoint", "format_version": 1, "epoch": epoch,
            "history": history, "run": run_id}
    arrays["__meta__"] = encode_json(meta)
    atomic_savez(path, arrays)


def _load_checkpoint(path, model, opt, run_id):
    meta, arrays = read_npz(path, "checkpoint")
    if meta.get("run") != run_id:
        raise ValueError(f"{path}: checkpoint of a different run ({meta.get('run')}), "
                         f"expected {run_id}; delete it or pass resume=False")
    load_arrays(model, {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}, path)
    opt.load_state_arrays({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})
    return meta["epoch"], meta["history"]


def _check_data(model, x, y, validation):
    """``x_train``, ``y_train`` and ``validation`` checked against the model (and each other)."""
    classes = model.num_classes()
    x = model.check_input(x, "x_train")
    y = check_labels("y_train", y, len(x), classes, "x_train")
    if validation is None:
        return x, y, None
    x_val, y_val = check_pair("validation", validation, ("x_val", "y_val"))
    xv = model.check_input(x_val, "validation[0] (x_val)")
    yv = check_labels("validation[1] (y_val)", y_val, len(xv), classes, "validation[0] (x_val)")
    return x, y, (xv, yv)


def _validate_fit_args(epochs, batch_size, mixup_alpha, target_ec, gamma):
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2, got {batch_size!r}")
    if not (mixup_alpha >= 0 and math.isfinite(mixup_alpha)):
        raise ValueError(f"mixup_alpha must be >= 0, got {mixup_alpha!r}")
    if target_ec is not None and not 0 < target_ec <= 1:
        raise ValueError(f"target_ec must lie in (0, 1], got {target_ec!r}")
    if not 0 <= gamma < 1:
        raise ValueError(f"gamma must lie in [0, 1), got {gamma!r}")


def fit(model, x_train, y_train, *, epochs=10, batch_size=128, optimizer="adam", lr=1e-3,
        schedule="cosine", seed=0, validation=None, mixup_alpha=0.0, augment=None,
        target_ec=None, gamma=0.0, penalty_threshold=1e-4, penalty_scaling="none", clip=1.5,
        checkpoint=None, resume=True, verbose=True, stream=None):
    """Train ``model`` in place with softmax cross-entropy; returns the per-epoch history.

    Parameters
    ----------
    model : Sequential producing logits (n, classes)
    x_train : (n, ...) inputs as the model's first layer takes them (e.g. uint8 images)
    y_train : (n,) int labels
    epochs, batch_size, lr : the usual; ``schedule`` is ``"cosine"`` or ``"constant"``
    optimizer : ``"adam"`` or ``"sgd"`` (momentum 0.9)
    seed : fixes batch order, mixup and augmentation of the whole run
    validation : optional ``(x_val, y_val)`` evaluated after every epoch
    mixup_alpha : Beta(alpha, alpha) mixup; 0 disables it
    augment : optional ``f(x_batch, rng) -> x_batch`` (e.g. :func:`random_crop_flip`)
    target_ec : expected-connections fraction EC of the sparsity penalty (Eq. 16);
        ``None`` trains without penalty
    gamma : the gamma rule's share of the penalty in the total loss (Eq. 18)
    penalty_threshold : lambda is 0 while ``j <= penalty_threshold`` (the
        reference code uses 1e-4); a larger value stops the 1/j growth of
        lambda that short runs overshoot with
    clip : latent binary weights are clipped to ``[-clip, clip]`` after every
        step (``None``/0 disables)
    checkpoint : path of an ``.npz`` checkpoint written atomically after every
        epoch; with ``resume=True`` an existing one is continued from

    Returns
    -------
    history : list of dicts, one per epoch (loss, accuracies, seconds, lr, and
        for binary models ones / bits_per_weight / lambda / target_ec / push,
        the penalty's push relative to the data gradient, see :func:`penalty_push`)

    Raises
    ------
    TypeError, ValueError : before any step, for data the model cannot take
        (shape, dtype, NaN/inf, labels outside ``[0, classes)``, a validation
        pair of unequal lengths) or a model holding NaN/inf, naming the argument
    DivergenceError : when the loss, a gradient or a parameter becomes NaN/inf,
        naming the epoch and step; the last checkpoint keeps a finite model
    """
    x_train, y_train, validation = _check_data(model, x_train, y_train, validation)
    check_finite_model(model, "fit")
    _validate_fit_args(epochs, batch_size, mixup_alpha, target_ec, gamma)
    if penalty_scaling not in PENALTY_SCALINGS:
        raise ValueError(f"penalty_scaling must be one of {PENALTY_SCALINGS}, got {penalty_scaling!r}")
    opt = _make_optimizer(model, optimizer, lr, clip)
    run_id = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "target_ec": target_ec, "gamma": gamma, "threshold": penalty_threshold,
              "penalty_scaling": penalty_scaling, "n": len(x_train)}
    history, start = [], 0
    if checkpoint and resume and os.path.exists(checkpoint):
        last, history = _load_checkpoint(checkpoint, model, opt, run_id)
        start = last + 1
    steps = len(x_train) // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(x_train)} training samples")
    num_classes = model.num_classes() or int(np.max(y_train)) + 1
    progress = Progress(epochs, steps, stream, verbose)
    with training_threads(model):
        for epoch in range(start, epochs):
            row = _train_epoch(model, opt, x_train, y_train, epoch, epochs, batch_size, lr, schedule,
                               seed, mixup_alpha, augment,
                               (target_ec, gamma, penalty_threshold, penalty_scaling),
                               progress, num_classes)
            if validation is not None:
                row["val_loss"], row["val_acc"] = _evaluate(model, *validation, batch_size=1000)
            history.append(row)
            if checkpoint:
                _save_checkpoint(checkpoint, model, opt, epoch, history, run_id)
            progress.epoch(row)
    return history


def training_threads(model):
    """The thread setting :func:`fit` trains ``model`` under (a context manager).

    A model with binary convolutions spends its step in numba-parallel kernels;
    it trains with BLAS on one thread (its float GEMMs are small), because
    OpenBLAS's spinning workers would take the core numba's second thread needs
    (:func:`pysbnn.kernels.jit.blas_threads`). Dense models are BLAS-bound and
    keep BLAS's threads. Serial numba (one thread) changes nothing.
    """
    convs = any(isinstance(layer, BinaryConv2d) for _, layer in model.named_layers())
    return blas_threads(1) if convs and num_threads() > 1 else contextlib.nullcontext()


def _train_epoch(model, opt, x, y, epoch, epochs, batch_size, lr, schedule, seed,
                 mixup_alpha, augment, penalty, progress, num_classes):
    t0 = time.perf_counter()
    target_ec = penalty[0]
    rng = np.random.default_rng([seed, epoch])
    opt.lr = cosine_lr(lr, epoch, epochs) if schedule == "cosine" else lr
    for _, layer in model.named_layers():
        if hasattr(layer, "set_epoch"):
            layer.set_epoch(epoch, epochs)
    order = rng.permutation(len(x))
    steps = len(x) // batch_size
    loss_sum = correct = seen = 0.0
    lam_sum, pushes = 0.0, []
    for i in range(steps):
        idx = order[i * batch_size:(i + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        if augment is not None:
            xb = model.check_input(augment(xb, rng), "augment(x_batch, rng)")
        targets = yb
        if mixup_alpha > 0:
            xb, targets = _mixup(xb, yb, rng, mixup_alpha, num_classes)
        logits = model._forward(xb, training=True)
        loss, dlogits = softmax_cross_entropy(logits, targets)
        model.backward_params(dlogits)          # the input images need no gradient
        # a NaN/inf loss gets no penalty (its lambda is undefined); the check stops the run
        penalized = target_ec is not None and math.isfinite(loss)
        lam, push = _apply_penalty(model, loss, *penalty) if penalized else (0.0, None)
        if push is not None:
            pushes.append(push)
        opt.step()
        _check_finite_step(model, loss, opt, epoch, epochs, i + 1, steps)
        loss_sum += loss * len(yb)
        correct += float((logits.argmax(axis=1) == yb).sum())
        seen += len(yb)
        lam_sum += lam
        progress.step(epoch, i + 1, loss)
    row = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
           "lr": opt.lr, "seconds": time.perf_counter() - t0}
    if target_ec is not None or latent_weights(model):
        row.update(sparsity_report(model))
        row["lambda"] = lam_sum / steps
        row["push"] = float(np.mean(pushes)) if pushes else 0.0
        row["target_ec"] = 1.0 if target_ec is None else float(target_ec)
    return row


def _check_finite_step(model, loss, opt, epoch, epochs, step, steps):
    """The divergence check, once per step after the update: the loss, every
    gradient, parameter and buffer must be finite, else :class:`DivergenceError`.

    Checkpoints are written at the end of an epoch only, so the last one still
    holds the finite model of the epoch before.
    """
    if math.isfinite(loss):
        found = first_non_finite(itertools.chain(
            ((f"gradient of {n!r}", g) for n, g in model.named_grads()),
            ((f"parameter {n!r}", p) for n, p in model.named_parameters()),
            ((f"buffer {n!r}", b) for n, b in model.named_buffers())))
        if found is None:
            return
        what = f"the {found[0]} holds NaN or inf"
    else:
        what = f"the loss is {loss}"
    raise DivergenceError(
        f"fit diverged at (Epoch {epoch + 1} / {epochs}), step {step} / {steps}: {what}. "
        f"Try a smaller lr (this epoch ran at lr={opt.lr:g}); with a sparsity target, "
        f"also a smaller gamma. A checkpoint, if any, holds the model of the last "
        f"finished epoch.", epoch, step)


def _mixup(xb, yb, rng, alpha, num_classes):
    """Mixup (Zhang et al. 2018): convex mix of the batch with a shuffled copy."""
    lam = rng.beta(alpha, alpha)
    perm = rng.permutation(len(xb))
    xf = xb.astype(np.float32)
    mixed = lam * xf + (1 - lam) * xf[perm]
    t = one_hot(yb, num_classes)
    return mixed, lam * t + (1 - lam) * t[perm]


#: How the penalty's gradient is shared out (``fit(penalty_scaling=...)``).
PENALTY_SCALINGS = ("none", "tau")


def penalty_scale(layer, scaling):
    r"""Factor on the penalty's gradient for one binary layer (Eq. 16 with the identity STE).

    ``"none"`` (default): 1, so every latent weight is pushed by
    :math:`\lambda / (2N)` whatever its layer's domain (the reference code).

    ``"tau"``: :math:`|\tau_\ell|`, the layer's current tau. Reasoning: the
    data gradient of a latent weight is
    :math:`\partial L/\partial w_q\,\tau\,\mathrm{ste}'`, the push is not
    scaled by tau; *if* :math:`\partial L/\partial w_q` did not depend on
    the domain, one gamma would push a small-tau domain (``sym``,
    ``alpha_beta``: tau ~ mean|w|, 0.005-0.2) 1/tau times harder, relative to
    its data, than ``learned`` (tau ~ 1), and multiplying the push by tau
    restores one ratio (under Adam, which is invariant to a parameter's
    gradient scale, the same as dividing the STE by tau).

    That premise fails when a BatchNorm follows the layer, as after every
    binary conv of :func:`pysbnn.resnet.resnet18`: the loss is then invariant
    to the scale of ``w_q``, so :math:`\partial L/\partial w_q \propto 1/\tau`
    and the data gradient of the latent weights does not depend on tau at all
    (``tests/test_penalty_scaling.py`` pins it). There ``"tau"`` weakens the
    small-tau domains' penalty instead of levelling it, so it stays off by
    default. What does change the balance there is the offset
    :math:`\phi/\tau`: a common term :math:`\phi\,\mathbf 1 \cdot \mathbf x`
    that BatchNorm divides out shrinks the data gradient; the history's
    ``push`` (:func:`penalty_push`) measures the balance each domain has.
    """
    if scaling == "none":
        return 1.0
    if scaling == "tau":
        return abs(float(layer.tau_phi()[0]))
    raise ValueError(f"penalty_scaling must be one of {PENALTY_SCALINGS}, got {scaling!r}")


def penalty_push(pushes, data_grads):
    """The penalty's push relative to the data: median over layers of ``push_l / rms(g_l)``.

    ``pushes``: the per-weight push of each layer (lambda/(2N) times
    :func:`penalty_scale`); ``data_grads``: each layer's data gradient before
    the penalty is added. Adam moves a weight by about
    ``lr * mean(g + push) / rms(g + push)``, so this ratio, not lambda, says
    how hard the penalty acts on a layer; 1 means the push is as large as a
    typical data gradient. Layers without data gradient are skipped.
    """
    ratios = [p / r for p, g in zip(pushes, data_grads)
              if (r := float(np.sqrt(np.mean(np.square(g, dtype=np.float64))))) > 0]
    return float(np.median(ratios)) if ratios else 0.0


def _apply_penalty(model, loss, target_ec, gamma, threshold, scaling="none"):
    """Add ``lambda * dj/dw`` (Eq. 16-18) to every latent weight's gradient.

    Returns ``(lambda, push)``, push = :func:`penalty_push` (None when lambda = 0).
    """
    pairs = [(l, k) for _, l in binary_layers(model) for k in l.latent_params]
    j, _, grads = entropy.sparsity_penalty([l.params[k] for l, k in pairs], target_ec)
    lam = entropy.gamma_lambda(loss, j, gamma, threshold)
    if not lam:
        return lam, None
    scales = [penalty_scale(layer, scaling) for layer, _ in pairs]
    push = penalty_push([lam * float(g.flat[0]) * s for g, s in zip(grads, scales)],
                        [layer.grads[key] for layer, key in pairs])
    for (layer, key), g, s in zip(pairs, grads, scales):
        layer.grads[key] += (lam * s * g).astype(layer.grads[key].dtype, copy=False)
    return lam, push
