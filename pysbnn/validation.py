"""Checks at the boundary of the public API: bad input gets a clear error
naming the argument, before any work is done, never a deep NumPy traceback.

Every entry point (``fit``, ``evaluate``, ``predict``, ``forward`` of models
and packed models, ``pack``, ``save_model``) calls these functions; nothing
below the boundary checks again. A model describes what it takes as an
:class:`InputSpec` (``Layer.input_spec``, cached by ``Layer.check_input``);
this module knows no layer, so it sits on the lowest floor.

Errors: ``TypeError`` when an argument is not an array of the right kind
(strings, objects, complex or bool values, float labels), ``ValueError`` when
it has the wrong shape, a value out of range or NaN/inf. The message names
the argument, what was expected and what was received.
"""

import math
from typing import NamedTuple

import numpy as np


def check_positive_int(name, value):
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def conv_geometry(in_channels, out_channels, kernel_size, stride, padding):
    """Validated ``(in_channels, out_channels, kernel_size, stride, padding)`` of a convolution."""
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    return (check_positive_int("in_channels", in_channels),
            check_positive_int("out_channels", out_channels),
            check_positive_int("kernel_size", kernel_size),
            check_positive_int("stride", stride), int(padding))


class InputSpec(NamedTuple):
    """The shapes a model accepts for ``x`` (the batch axis ``n`` comes first).

    ranks : allowed ``x.ndim`` values, or None for any rank >= 1
    features : required number of values per sample, ``prod(x.shape[1:])`` (None: any)
    channels : required size of the channel (last) axis; rank-3 arrays are grey
        images (n, h, w) and count as one channel (None: any)
    min_side : smallest image height and width (rank-3/4 inputs of a convolution)
    """

    ranks: tuple = None
    features: int = None
    channels: int = None
    min_side: int = 1


#: What a model that fixes nothing takes: any array with a batch axis.
ANY = InputSpec()

_PATTERNS = {1: "(n,)", 2: "(n, f)", 3: "(n, h, w)", 4: "(n, h, w, c)"}


def describe(spec):
    """The shapes of ``spec`` in words, e.g. ``(n, h, w) or (n, h, w, c) with 784 values per sample``."""
    if spec.ranks is None:
        text = "(n, ...)"
    else:
        text = " or ".join(_PATTERNS.get(r, f"rank {r}") for r in spec.ranks)
    if spec.ranks == (2,) and spec.features is not None:
        return f"(n, {spec.features})"
    if spec.channels is not None:
        text = text.replace(", c)", f", {spec.channels})").replace("(n, f)", f"(n, {spec.channels})")
    conditions = []
    if spec.features is not None:
        conditions.append(f"{spec.features} values per sample")
    if spec.min_side > 1:
        conditions.append(f"h, w >= {spec.min_side}")
    return text + (" with " + " and ".join(conditions) if conditions else "")


def as_array(name, x):
    """``x`` as an ndarray of numbers (integers or floats), or a TypeError naming ``name``."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError):
            raise TypeError(f"{name} must be an array of numbers, got a ragged or "
                            f"unconvertible {type(x).__name__}") from None
    if x.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integers or floats (e.g. uint8 images, float32), "
                        f"got dtype {x.dtype}")
    return x


def _fits(shape, spec):
    ndim = len(shape)
    if ndim == 0 or (spec.ranks is not None and ndim not in spec.ranks):
        return False
    if spec.features is not None and math.prod(shape[1:]) != spec.features:
        return False
    if spec.channels is not None and (1 if ndim == 3 else shape[-1]) != spec.channels:
        return False
    return spec.min_side <= 1 or ndim < 3 or min(shape[1], shape[2]) >= spec.min_side


def check_finite(name, x):
    """Raise a ValueError naming ``name`` when the float array ``x`` holds NaN or inf."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite, got {int(bad.sum())} NaN/inf value(s) "
                         f"of {x.size}, the first at index {first} ({x[first]})")


def check_input(name, x, spec, min_samples=1):
    """``x`` checked against ``spec``: numbers, an accepted shape, at least
    ``min_samples`` samples, no NaN/inf. Returns ``x`` as an ndarray."""
    x = as_array(name, x)
    if not _fits(x.shape, spec):
        raise ValueError(f"{name} must have shape {describe(spec)}, got shape {x.shape}")
    if len(x) < min_samples:
        raise ValueError(f"{name} must hold at least {min_samples} sample(s), got shape {x.shape}")
    check_finite(name, x)
    return x


def check_labels(name, y, n, classes=None, x_name="x"):
    """Class ids ``y``: integers of shape ``(n,)`` in ``[0, classes)``. Returns ``y`` as an ndarray.

    ``classes`` None (a model whose output size is unknown) checks ``y >= 0`` only.
    """
    if not isinstance(y, np.ndarray):
        try:
            y = np.asarray(y)
        except (ValueError, TypeError):
            raise TypeError(f"{name} must be an array of integer class ids, got a ragged "
                            f"{type(y).__name__}") from None
    if y.dtype.kind not in "iu":
        whole = y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all()
        hint = " (they are whole numbers: pass y.astype(int))" if whole else ""
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}{hint}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one class id per sample of {x_name}, "
                         f"got shape {y.shape}")
    if n and (y.min() < 0 or (classes is not None and y.max() >= classes)):
        wanted = f"[0, {classes})" if classes is not None else ">= 0"
        raise ValueError(f"{name} must hold class ids in {wanted} (the model has "
                         f"{classes if classes is not None else 'an unknown number of'} outputs), "
                         f"got values in [{y.min()}, {y.max()}]")
    return y


def check_pair(name, value, parts=("x", "y")):
    """``value`` as a pair (e.g. ``validation=(x_val, y_val)``), or a TypeError naming ``name``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = type(value).__name__ + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        raise TypeError(f"{name} must be a pair ({parts[0]}, {parts[1]}), got a {got}")
    return value


def first_non_finite(named_arrays):
    """The first ``(name, array)`` of float arrays holding NaN or inf, or None."""
    for name, a in named_arrays:
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return name, a
    return None


def check_finite_model(model, where):
    """Refuse a model with a NaN/inf parameter or buffer: ValueError naming the layer.

    ``model``: anything with ``named_layers()`` yielding layers with ``params``
    and ``buffers`` dicts; ``where`` names the refusing call (``"pack"``).
    """
    for lname, layer in model.named_layers():
        found = first_non_finite(list(layer.params.items()) + list(layer.buffers.items()))
        if found is not None:
            key, a = found
            bad = int((~np.isfinite(a)).sum())
            raise ValueError(f"{where}: layer {lname or '(the model itself)'!r} "
                             f"({type(layer).__name__}) has a non-finite {key}: {bad} of {a.size} "
                             f"values are NaN or inf (a diverged or corrupted model); "
                             f"expected finite values")
