"""Numerical gradient checks that students can call on their own layers.

The check follows HIPS/autograd's ``check_grads``: pick a random upstream
gradient ``g`` and the scalar ``f = sum(g * forward(x))``; pick a random
direction ``v`` over the input and every parameter; compare the directional
derivative from ``backward`` with the central finite difference
``(f(theta + eps v) - f(theta - eps v)) / (2 eps)``. Run it in float64.
"""

import numpy as np


def directional_check(f, args, grads, rng=None, eps=1e-6):
    """Compare analytic gradients of a scalar function with a finite difference.

    Parameters
    ----------
    f : callable taking the list ``args`` (arrays, perturbed in place) -> float
    args : list of float64 arrays, the point of evaluation
    grads : list of arrays, ``df/dargs`` as computed analytically
    rng : seed or ``np.random.Generator`` for the direction
    eps : finite-difference step

    Returns
    -------
    (analytic, numeric) : the two directional derivatives along a random unit direction
    """
    rng = np.random.default_rng(rng)
    dirs = [rng.standard_normal(a.shape) for a in args]
    norm = np.sqrt(sum(float((d * d).sum()) for d in dirs)) or 1.0
    dirs = [d / norm for d in dirs]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs))
    originals = [a.copy() for a in args]
    for a, d in zip(args, dirs):
        a += eps * d
    f_plus = f(args)
    for a, o, d in zip(args, originals, dirs):
        a[...] = o - eps * d
    f_minus = f(args)
    for a, o in zip(args, originals):
        a[...] = o
    return analytic, (f_plus - f_minus) / (2 * eps)


def check_layer_gradients(layer, x, training=True, rng=0, eps=1e-6, rtol=1e-6, atol=1e-9,
                          wrt_input=True, params=None):
    """Gradient-check ``layer.backward`` (input and parameters) in float64.

    Parameters
    ----------
    layer : a pysbnn Layer (a whole ``Sequential`` works too); cast to float64
    x : input array; cast to float64
    training : forward mode used (BatchNorm checks both)
    rng : seed for the upstream gradient and the direction
    wrt_input : include ``dx`` in the check (switch off for integer inputs)
    params : names of parameters to check (default: all of ``named_parameters``)

    Returns
    -------
    (analytic, numeric) directional derivatives; raises ``AssertionError`` when
    they differ by more than ``atol + rtol * |numeric|``.
    """
    rng = np.random.default_rng(rng)
    layer.astype(np.float64)
    x = np.array(x, dtype=np.float64)
    named = dict(layer.named_parameters())
    names = list(named) if params is None else list(params)
    out = layer.forward(x, training=training)
    g = rng.standard_normal(out.shape)
    dx = layer.backward(g)
    grads_by_name = dict(layer.named_grads())
    args = [named[n] for n in names] + ([x] if wrt_input else [])
    grads = [grads_by_name[n].copy() for n in names] + ([dx] if wrt_input else [])

    def f(_):
        layer.parameters_changed()          # the arrays were perturbed in place
        return float((g * layer.forward(x, training=training)).sum())

    analytic, numeric = directional_check(f, args, grads, rng, eps)
    if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
        raise AssertionError(f"gradient check failed for {layer!r}: analytic {analytic:.10g} "
                             f"vs numeric {numeric:.10g}")
    return analytic, numeric
