r"""What a packed binary layer computes from its integers, folded once at pack time.

A binary layer's kernels give two integers per output ``m`` and input ``b``:
``z'_bm = w01_m . x_b`` and ``q_b = 1 . x_b`` (Sec. 3.5). By Eq. 20 (corrected,
:func:`pysbnn.levels.sbnn_output`) the layer's output is
``z = eta z' + xi eta q``. Everything linear around it folds into the same
form, ``A_m (z'_bm + xi q_b) + C_m``:

* an input normalisation in front, ``x_n = a x + c`` (``Normalize``: a =
  1 / (scale std), c = -mean / std), so that the layer reads raw pixels:
  ``w . x_n = a eta (z' + xi q) + c eta (U_m + xi K)`` with U_m the ones of row m;
* a BatchNorm behind, ``s_m (z - mu_m) + beta_m`` with
  ``s_m = gamma_m / sqrt(var_m + eps)`` (inference statistics).

Then either the layer ends in float (:class:`Affine`: logits, or the input
of a float layer) or a sign follows (the next binary layer binarizes its
input) and only the bit ``A_m (z' + xi q) + C_m >= 0`` travels on, tested in
integers (:class:`pysbnn.kernels.threshold.FixedThreshold`).
"""

import math
from typing import NamedTuple

import numpy as np

from ..kernels.threshold import FixedThreshold
from ..levels import sbnn_output

#: |u_F| stays below 2^30: int32 arithmetic is exact with room for one add.
U_BITS = 30


class Affine(NamedTuple):
    """``out_m = A_m (z' + xi q) + C_m``: Eq. 20 with folded neighbours, float64."""
    A: np.ndarray       # (M,)
    xi: float
    C: np.ndarray       # (M,)


def affine_of(xi, eta, M, normalize=None, ones=None, K=None, bn=None):
    """Fold an input normalisation ``(a, c)`` and a BatchNorm into Eq. 20.

    Parameters
    ----------
    xi, eta : the layer's domain scalars (Eq. 4).
    M : outputs of the layer.
    normalize : ``(a, c)`` of a folded input normalisation, or None.
    ones : int (M,) ones per row (needed with ``normalize``); K : inputs per row.
    bn : a BatchNorm layer folded behind, or None.
    """
    a, c = normalize if normalize is not None else (1.0, 0.0)
    A = np.full(M, a * eta, np.float64)              # the z' coefficient of Eq. 20 ...
    C = np.zeros(M, np.float64)
    if c:                                            # ... and the offset c w . 1
        C += sbnn_output(np.asarray(ones, np.float64), float(K), xi, c * eta)
    if bn is not None:
        s = bn.params["gamma"].astype(np.float64) / np.sqrt(
            bn.buffers["running_var"].astype(np.float64) + bn.eps)
        A, C = s * A, s * (C - bn.buffers["running_mean"].astype(np.float64)) + bn.params["beta"]
    return Affine(A, float(xi), np.asarray(C, np.float64))


def affine_output(z_prime, q, aff):
    """``A (z' + xi q) + C`` as float32 (B, M): Eq. 20 with the folded BatchNorm."""
    return (sbnn_output(z_prime, np.asarray(q)[:, None], aff.xi, aff.A) + aff.C).astype(np.float32)


def fixed_threshold(aff, z_bound, q_bound):
    """The integer test of ``sign(A (z' + xi q) + C) >= 0`` (``kernels.threshold``).

    ``z_bound``, ``q_bound``: the largest ``|z'|`` and ``|q|`` the layer can see
    (e.g. 255 U_m and 255 K for uint8 pixels; U_m and K for +-1 inputs). ``F``
    is the largest number of fractional bits with ``|u_F| < 2^30`` over that
    range; ``XI`` keeps 30 significant bits of ``xi``.
    """
    A, C, xi = aff.A, aff.C, aff.xi
    bound = float(z_bound) + abs(xi) * float(q_bound) + 1.0
    F = max(0, min(U_BITS, U_BITS - math.ceil(math.log2(bound))))
    G = max(F, U_BITS - max(0, math.ceil(math.log2(abs(xi) + 1e-300))))
    XI = int(round(xi * 2.0 ** G))
    direction = np.sign(A).astype(np.int8)
    safe = np.where(A == 0, 1.0, A)
    scaled = -C / safe * 2.0 ** F                    # the threshold T on the 2^-F grid
    limit = float(2 ** U_BITS)
    T = np.where(direction > 0, np.ceil(np.clip(scaled, -limit, limit)),
                 -np.floor(np.clip(scaled, -limit, limit)))
    T = np.where(direction == 0, np.where(C >= 0, 0.0, 1.0), T)    # constant bits: 0 >= T
    return FixedThreshold(T.astype(np.int32), direction, int(F), XI, int(G))


def normalize_of(layer):
    """``(a, c)`` of a single-channel ``Normalize``: ``x_n = a x + c``; None otherwise."""
    if len(layer.mean) != 1:
        return None
    a = 1.0 / (layer.scale * layer.std[0])
    return a, -layer.mean[0] / layer.std[0]


def conv_bn(conv, bn):
    """A float conv followed by its BatchNorm (inference statistics) as one conv:
    ``(weight (C_out, C_in, k, k), bias (C_out,))`` float32, with ``s = gamma / sqrt(var + eps)``,
    ``W' = s W`` and ``b' = beta + s (b - mu)`` (computed in float64)."""
    s = bn.params["gamma"].astype(np.float64) / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
    w = conv.params["weight"].astype(np.float64) * s[:, None, None, None]
    b = bn.params["beta"] - s * bn.buffers["running_mean"]
    if "bias" in conv.params:
        b = b + s * conv.params["bias"]
    return w.astype(np.float32), b.astype(np.float32)
