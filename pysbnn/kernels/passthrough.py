r"""Gradients that pass where the input lies in ``[-b, b]``: one pass instead of four.

HardTanh's backward and the clipped straight-through estimator of ``sign``
(Sec. 3.1) are the same operation,

.. math:: \partial x = \partial y \cdot \mathbf 1_{|x| \le b},

which NumPy spells ``dout * (np.abs(x) <= b)``: an absolute value, a
comparison, a cast and a product, each a pass over the array with its own
temporary. The kernel reads ``dout`` and ``x`` once and writes the result
once (measured: 5x faster on a ResNet's 1.6 M-element activations). The
binary convs' input-gradient kernels apply the same mask while they write
their result (``conv_input_grad``, ``conv_sign_tables``).
The NumPy expression above is the reference.

EDE's gradient (IR-Net; :class:`pysbnn.quantizers.EDE`) gets the same
treatment, :func:`ede_pass`:

.. math:: \partial x = \partial y \cdot k t \bigl(1 - \tanh^2(t x)\bigr)
          = \partial y \cdot \frac{4 k t\, e}{(1 + e)^2}, \qquad e = e^{-2 t |x|},

one pass in place of NumPy's five, split over numba's threads for large
arrays. In float32 the exponential is :func:`exp_nonpositive32`, which
vectorises (a call to ``expf`` does not; measured on a 2-core Zen 3, 200 k
float32 elements: NumPy 0.84 ms, the kernel with ``np.exp`` 0.79 ms and 11 %
of a one-thread width-8, batch-32 ResNet training step; interleaved, ``np.exp``
1.27-1.37 ms against :func:`exp_nonpositive32` 0.49-0.57 ms, 2.4-2.6x). The two forms are
equal in exact arithmetic; in float32 they agree to rounding (the reference,
``dout * EDE.grad(x)``, loses the tail to cancellation where ``tanh`` rounds
to 1, the kernel keeps it: both are then below ``1e-7 k t``).
"""

import numpy as np

from .intrinsics import float32_from_bits
from .jit import Twins, num_threads, resolve_backend

prange = range      # numba.prange in the parallel kernel (see jit.Twins)

#: elements per parallel chunk of :func:`ede_pass`
CHUNK = 1 << 14


def clip_pass_numpy(d, x, bound):
    """``d * (|x| <= bound)`` in NumPy."""
    return d * (np.abs(x) <= bound).astype(d.dtype)


def _clip_pass_flat(d, x, bound, out):
    for i in range(d.shape[0]):
        v = x[i]
        out[i] = d[i] if -bound <= v <= bound else 0.0


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)          # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI exact in 9 bits
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_MIN = np.float32(-87.33)               # ~ln 2^-126: below, e^y is subnormal and taken as 0
_INV_FACT = tuple(np.float32(1.0 / f) for f in (5040, 720, 120, 24, 6, 2, 1, 1))   # 1/7! .. 1/0!


def exp_nonpositive32(y):
    """``e^y`` for a float32 ``y <= 0``, within 2 ulp of ``exp`` (0 for ``y < -87.33``).

    ``y = n ln 2 + r`` with ``n = round(y / ln 2)``, ``|r| <= ln(2) / 2``
    (Cody-Waite: ``n ln 2`` subtracted in two parts so the first product is
    exact); ``e^r`` by its degree-7 Taylor polynomial (truncation below
    ``0.35^8 / 8! = 6e-9``); ``2^n`` from its exponent bits. Every step is
    arithmetic, so a loop over it vectorises. NaN stays NaN.
    """
    if y < _EXP_MIN:
        return np.float32(0.0)
    n = np.floor(y * _LOG2E + np.float32(0.5))
    r = (y - n * _LN2_HI) - n * _LN2_LO
    f7, f6, f5, f4, f3, f2, f1, f0 = _INV_FACT
    p = ((((((f7 * r + f6) * r + f5) * r + f4) * r + f3) * r + f2) * r + f1) * r + f0
    return p * float32_from_bits((np.int64(n) + 127) << 23)


def _exp_nonpositive(y):
    """``e^y`` for ``y <= 0``: :func:`exp_nonpositive32` in float32 (the branch
    is chosen when numba compiles), ``np.exp`` in float64."""
    if isinstance(y, np.float32):
        return exp_nonpositive32(y)
    return np.exp(y)


def _ede_span(d, x, a, c, out, lo, hi):
    """out = d * c e / (1 + e)^2, e = exp(a |x|), over [lo, hi); a = -2 t, c = 4 k t."""
    for i in range(lo, hi):
        e = _exp_nonpositive(a * np.abs(x[i]))
        out[i] = d[i] * (c * e / ((1 + e) * (1 + e)))


def _ede_serial(d, x, a, c, out):
    _ede_span(d, x, a, c, out, 0, d.shape[0])


def _ede_parallel(d, x, a, c, out):
    for k in prange((d.shape[0] + CHUNK - 1) // CHUNK):
        _ede_span(d, x, a, c, out, k * CHUNK, min((k + 1) * CHUNK, d.shape[0]))


_TWINS = Twins({"flat": _clip_pass_flat})
# numpy's error model: a division by zero is inf (as in NumPy), no divisor check
_EDE = Twins({"ede": _ede_serial, "ede_par": _ede_parallel},
             helpers=(exp_nonpositive32, _exp_nonpositive, _ede_span),
             inline=(exp_nonpositive32, _exp_nonpositive, _ede_span), error_model="numpy")


def clip_pass(d, x, bound=1.0, backend="auto"):
    """``d`` where ``-bound <= x <= bound``, else 0 (same shape and dtype as ``d``).

    ``x`` has the shape of ``d``. NaN in ``x`` gives 0, as the NumPy
    reference does.
    """
    if resolve_backend(backend) == "numpy" or d.shape != x.shape or not d.flags.c_contiguous:
        return clip_pass_numpy(d, x, bound)
    out = np.empty(d.shape, d.dtype)
    _TWINS["flat"](d.reshape(-1), np.ascontiguousarray(x, dtype=d.dtype).reshape(-1), d.dtype.type(bound),
                   out.reshape(-1))
    return out


def ede_pass(d, x, t, k, parallel=None):
    """``d * k t (1 - tanh^2(t x))`` by the kernel (same shape and dtype as ``d``):
    the chain rule through EDE with slope ``t`` and gain ``k``. ``d`` C-contiguous
    float, ``x`` of its shape; ``parallel``: split over numba's threads (default:
    from ``4 CHUNK`` elements when there are several). The reference is
    ``d * EDE.grad(x)`` (:func:`pysbnn.functional.sign_ste_backward` chooses)."""
    if d.shape != x.shape or not d.flags.c_contiguous:
        raise ValueError(f"ede_pass needs a C-contiguous d of x's shape, got {d.shape} and {x.shape}")
    if parallel is None:
        parallel = num_threads("numba", d.size, 4 * CHUNK) > 1
    out = np.empty(d.shape, d.dtype)
    f = d.dtype.type
    _EDE["ede_par" if parallel else "ede"](d.reshape(-1), np.ascontiguousarray(x, dtype=d.dtype).reshape(-1),
                                           f(-2.0 * t), f(4.0 * k * t), out.reshape(-1))
    return out
