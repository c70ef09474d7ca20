"""Optimisers (Adam, SGD with momentum), the cosine schedule and latent-weight clipping.

An optimiser updates a model's parameters in place from its gradients:
``opt.step()`` after ``model.backward(...)``. Its state (moments, step count)
is a dict of arrays so checkpoints can save and restore it exactly.
"""

import math

import numpy as np

from .kernels.adam import adam_update
from .kernels.jit import check_backend
from .layers import parameters_changed


def _check(name, value, low, high=math.inf, low_open=False):
    ok = (value > low if low_open else value >= low) and value < high
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        lo = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {lo}{low}, {high}), got {value!r}")
    return float(value)


class Optimizer:
    """Base: holds the model, the learning rate and per-parameter state.

    ``post_step`` hooks are called as ``hook(model)`` after every update (e.g.
    :func:`clip_latent_weights`).
    """

    def __init__(self, model, lr, post_step=()):
        self.model = model
        self.lr = _check("lr", lr, 0.0, low_open=True)
        self.post_step = list(post_step)
        self.state = {}
        self.t = 0

    def step(self):
        self.t += 1
        for (name, p), (_, g) in zip(self.model.named_parameters(), self.model.named_grads()):
            self._update(name, p, g)
        for hook in self.post_step:
            hook(self.model)
        parameters_changed()

    def state_arrays(self):
        """State as flat ``{"name/slot": array}`` plus ``"__t__"``, for checkpoints."""
        out = {f"{n}/{slot}": a for n, slots in self.state.items() for slot, a in slots.items()}
        out["__t__"] = np.array(self.t)
        return out

    def load_state_arrays(self, arrays):
        self.t = int(arrays.pop("__t__"))
        self.state = {}
        for key, a in arrays.items():
            name, slot = key.rsplit("/", 1)
            self.state.setdefault(name, {})[slot] = a.copy()


class SGD(Optimizer):
    """SGD with (optionally Nesterov) momentum and L2 weight decay.

    .. math:: v \\leftarrow \\mu v + g + \\lambda_{wd} w, \\quad w \\leftarrow w - lr\\, v
    """

    def __init__(self, model, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False, post_step=()):
        super().__init__(model, lr, post_step)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        self.nesterov = bool(nesterov)

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            slots = self.state.setdefault(name, {"v": np.zeros_like(p)})
            v = slots["v"]
            v *= self.momentum
            v += g
            g = g + self.momentum * v if self.nesterov else v
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

    .. math:: m \\leftarrow \\beta_1 m + (1-\\beta_1) g,\\;
              v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2,\\;
              w \\leftarrow w - lr\\, \\hat m / (\\sqrt{\\hat v} + \\epsilon)
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, post_step=(),
                 backend="auto"):
        super().__init__(model, lr, post_step)
        self.beta1 = _check("betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = _check("betas[1]", betas[1], 0.0, 1.0)
        self.eps = _check("eps", eps, 0.0, low_open=True)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        #: ``"auto" | "numba" | "numpy"``: the one-pass kernel or the NumPy formula
        #: of :mod:`pysbnn.kernels.adam` (the same bits either way)
        self.backend = check_backend(backend)

    def _update(self, name, p, g):
        slots = self.state.get(name)
        if slots is None:
            slots = self.state[name] = {"m": np.zeros_like(p), "v": np.zeros_like(p)}
        adam_update(p, g, slots["m"], slots["v"], self.lr, self.beta1, self.beta2, self.eps, self.t,
                    self.weight_decay, self.backend)


def cosine_lr(lr0, epoch, epochs, lr_min=0.0):
    """Cosine annealing: ``lr_min + (lr0 - lr_min) (1 + cos(pi e / E)) / 2``."""
    if epochs < 1 or not 0 <= epoch <= epochs:
        raise ValueError(f"epoch must lie in [0, epochs={epochs}], got {epoch}")
    return lr_min + (lr0 - lr_min) * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def clip_latent_weights(model, bound=1.5):
    """Clip every latent binary weight to ``[-bound, bound]`` in place.

    Layers list their latent weights in ``latent_params`` (binary layers do);
    other parameters, including a learned domain's tau and phi, are untouched,
    as in the reference code.
    """
    for _, layer in model.named_layers():
        for key in getattr(layer, "latent_params", ()):
            np.clip(layer.params[key], -bound, bound, out=layer.params[key])
    parameters_changed()
