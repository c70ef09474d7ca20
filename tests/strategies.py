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


# ------------------------------------------------- bad inputs at the boundary
#: dtypes the public API refuses for inputs (TypeError): not integers or floats.
BAD_INPUT_DTYPES = (np.complex64, np.bool_, np.dtype("<U3"), np.object_, np.dtype("datetime64[s]"))


def wrong_shapes(good, accepts, max_dims=5, max_side=9):
    """Shapes ``(n, ...)`` the predicate ``accepts(shape)`` refuses: any rank (0 included)
    and size, or the ``good`` shape with one axis off by one, dropped or added."""
    n = st.integers(1, 4)
    near = st.one_of(
        st.tuples(n, st.integers(1, len(good) - 1), st.sampled_from([-1, 1])).map(
            lambda t: (t[0],) + tuple(s + t[2] * (i == t[1]) for i, s in enumerate(good) if i)),
        n.map(lambda k: (k,) + tuple(good[1:-1])),
        n.map(lambda k: (k,) + tuple(good[1:]) + (2,)))
    anything = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=1, max_side=max_side)
    return st.one_of(near, anything).filter(lambda shape: not accepts(shape))


@st.composite
def non_finite_arrays(draw, shape, dtypes=(np.float32, np.float64)):
    """Finite floats of ``shape`` with NaN, +inf or -inf at 1-3 random positions."""
    dtype = draw(st.sampled_from(dtypes))
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 255, width=np.dtype(dtype).itemsize * 8)))
    for _ in range(draw(st.integers(1, 3))):
        pos = tuple(draw(st.integers(0, s - 1)) for s in shape)
        x[pos] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x


@st.composite
def bad_labels(draw, n, classes):
    """Labels a model with ``classes`` outputs must refuse for ``n`` samples, and the
    error type: float/bool/str dtypes (TypeError), wrong shapes or out-of-range ids (ValueError)."""
    good = draw(hnp.arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    kind = draw(st.sampled_from(["float", "whole_float", "bool", "str", "shape", "range"]))
    if kind == "float":
        return good + draw(st.sampled_from([0.5, 0.25, -0.5])), TypeError
    if kind == "whole_float":
        return good.astype(draw(st.sampled_from([np.float32, np.float64]))), TypeError
    if kind == "bool":
        return good > 0, TypeError
    if kind == "str":
        return good.astype(str), TypeError
    if kind == "shape":
        shape = draw(st.sampled_from([(n, 2), (n, 1), (n - 1,), (n + 1,), (), (1, n)]))
        return np.resize(good, shape), ValueError
    bad = draw(st.sampled_from([-1, classes, classes + 7]))
    good[draw(st.integers(0, n - 1))] = bad
    return good, ValueError
