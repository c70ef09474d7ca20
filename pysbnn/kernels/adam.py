r"""Adam's update of one parameter in one pass (Kingma & Ba, 2015).

.. math::
    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad
    v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
    w \leftarrow w - \frac{lr}{c_1} \frac{m}{\sqrt{v / c_2} + \epsilon}

with the bias corrections ``c_k = 1 - beta_k^t``. NumPy spells it as ten
array passes with four temporaries (:func:`adam_numpy`, the reference, what
:class:`pysbnn.Adam` computes with ``backend="numpy"``); the kernel reads
``w, g, m, v`` once and writes ``w, m, v`` once, with the same operations in
the same order and precision, so both give the same bits. Measured: the
NumPy update was a third of a float MLP's training epoch; the kernel is
5x faster.
"""

import numpy as np

from .jit import Twins, resolve_backend


def adam_numpy(w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0):
    """The reference: ``w``, ``m``, ``v`` updated in place (all of ``w``'s dtype)."""
    if weight_decay:
        g = g + weight_decay * w
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    c1 = 1 - beta1 ** t
    c2 = 1 - beta2 ** t
    step = (lr / c1) * m / (np.sqrt(v / c2) + eps)
    w -= step.astype(w.dtype, copy=False)


def _one(w, m, v, i, gi, a, b1, d1, b2, d2, c2, eps):
    mi = m[i] * b1 + d1 * gi
    vi = v[i] * b2 + d2 * (gi * gi)
    m[i] = mi
    v[i] = vi
    w[i] = w[i] - a * mi / (np.sqrt(vi / c2) + eps)


def _adam(w, g, m, v, s):
    """Flat arrays; ``s = (lr / c1, beta1, 1 - beta1, beta2, 1 - beta2, c2, eps, wd)``
    in their dtype (read into locals first, so that the loop vectorises)."""
    a, b1, d1, b2, d2, c2, eps, wd = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
    if wd != 0:
        for i in range(w.shape[0]):
            _one(w, m, v, i, g[i] + wd * w[i], a, b1, d1, b2, d2, c2, eps)
    else:
        for i in range(w.shape[0]):
            _one(w, m, v, i, g[i], a, b1, d1, b2, d2, c2, eps)


# numpy's error model: the division then vectorises (under python's, numba checks
# the divisor first); the helper is inlined so that it compiles under it too
_TWINS = Twins({"adam": _adam}, helpers=(_one,), inline=(_one,), error_model="numpy")


def adam_update(w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0, backend="auto"):
    """One Adam step on parameter ``w`` with gradient ``g`` and moments ``m``, ``v``
    (all one shape; ``w``, ``m``, ``v`` updated in place; ``t`` the step count, from 1).

    The kernel runs when the four arrays are C-contiguous float32 or float64 of
    one dtype; otherwise, and for ``backend="numpy"``, :func:`adam_numpy`.
    Serial: it runs at memory speed, and a second thread measured slower
    (1.1 against 0.25 ms for 400 k float32 elements on a 2-core Zen 3).
    """
    dt = w.dtype
    fused = (resolve_backend(backend) == "numba" and dt in (np.float32, np.float64)
             and all(a.dtype == dt and a.flags.c_contiguous and a.shape == w.shape for a in (g, m, v)))
    if not fused:
        adam_numpy(w, g, m, v, lr, beta1, beta2, eps, t, weight_decay)
        return
    s = np.array([lr / (1 - beta1 ** t), beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta2 ** t, eps,
                  weight_decay], dt)
    _TWINS["adam"](w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), s)
