"""The parameter version: what caches derived from parameters check, and the
seed-to-Generator rule every initialiser uses."""

import numpy as np

_PARAMETER_VERSION = [0]


def parameters_changed():
    """Drop every cache derived from parameters (binarized weights of inference).

    The optimisers, ``load_model`` / checkpoint loading, ``astype`` and latent
    clipping call it; call it (or ``layer.parameters_changed()``) after
    editing parameter arrays in place by hand.
    """
    _PARAMETER_VERSION[0] += 1


def parameter_version():
    """A counter that :func:`parameters_changed` advances."""
    return _PARAMETER_VERSION[0]


def as_generator(rng):
    """``None``/int seed/Generator -> ``np.random.Generator``."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
