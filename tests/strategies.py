"""Hypothesis strategies shared by the test suite (one file, as in MiniTorch).

Import with ``from strategies import ...`` (pytest puts ``tests/`` on sys.path).
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: Magnitude bound for generated weights: wide, but far from float64 overflow.
MAX_ABS = 1e6


def finite_floats(min_value=-MAX_ABS, max_value=MAX_ABS):
    """Finite float64 values in [min_value, max_value] (no NaN, no inf)."""
    return st.floats(min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=False)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5):
    """Array shapes such as dense (out, in) or conv (out, in, kh, kw)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def weight_arrays(shape=None, dtype=np.float64, max_abs=MAX_ABS):
    """Arbitrary finite weight arrays (any signs, zeros included) of a shape or of ``shapes()``."""
    elements = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False,
                         width=np.dtype(dtype).itemsize * 8)
    return hnp.arrays(dtype=dtype, shape=shapes() if shape is None else shape, elements=elements)


@st.composite
def mixed_sign_weights(draw, min_size=2, max_size=64, max_abs=MAX_ABS):
    """1-D float64 weights with at least one ``w >= 0`` and one ``w < 0``, shuffled."""
    n = draw(st.integers(min_size, max_size))
    k = draw(st.integers(1, n - 1))  # number of non-negative weights
    pos = draw(hnp.arrays(np.float64, k, elements=finite_floats(0.0, max_abs)))
    neg = draw(hnp.arrays(np.float64, n - k,
                          elements=finite_floats(-max_abs, -1e-300)))
    order = draw(st.permutations(range(n)))
    return np.concatenate([pos, neg])[list(order)]


@st.composite
def one_sided_weights(draw, min_size=1, max_size=64, max_abs=MAX_ABS):
    """1-D float64 weights all ``>= 0`` (p = 1) or all ``< 0`` (p = 0)."""
    n = draw(st.integers(min_size, max_size))
    if draw(st.booleans()):
        elements = finite_floats(0.0, max_abs)
    else:
        elements = finite_floats(-max_abs, -1e-300)
    return draw(hnp.arrays(np.float64, n, elements=elements))


def probabilities():
    """p in [0, 1]."""
    return st.floats(0.0, 1.0)


def entropies():
    """Entropy targets h* in [0, 1] bits/weight."""
    return st.floats(0.0, 1.0)


def expected_connections():
    """EC in (0, 1]."""
    return st.floats(0.0, 1.0, exclude_min=True)


def gammas():
    """gamma in [0, 1)."""
    return st.floats(0.0, 1.0, exclude_max=True)


def losses():
    """Positive finite losses, as a cross-entropy would give."""
    return st.floats(1e-6, 1e3)
