"""pysbnn.stats: the numbers of Table 1's intervals and paired tests."""

import math

import numpy as np
import pytest

from pysbnn.stats import paired_test, summarize, verdict


def test_summary_of_three_values_by_hand():
    s = summarize([1.0, 2.0, 6.0])
    assert (s.n, s.mean) == (3, 3.0)
    assert s.sd == pytest.approx(math.sqrt(7.0))
    half = 4.302652729749462 * math.sqrt(7.0) / math.sqrt(3.0)     # t_{2, 0.975}
    assert (s.low, s.high) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-12)
    assert summarize([1.0, 2.0, 6.0], confidence=0.5).high < s.high


def test_degenerate_summaries():
    one = summarize([4.0])
    assert one.mean == 4.0 and all(math.isnan(v) for v in (one.sd, one.low, one.high))
    flat = summarize([2.0, 2.0])
    assert (flat.sd, flat.low, flat.high) == (0.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="values"):
        summarize([])
    with pytest.raises(ValueError, match="values"):
        summarize([1.0, float("nan")])


def test_paired_test_is_the_t_test_of_the_differences():
    a, b = np.array([80.1, 81.0, 79.5, 80.7]), np.array([77.0, 79.9, 76.1, 78.8])
    t = paired_test(a, b)
    d = a - b
    assert t.mean == pytest.approx(d.mean())
    assert t.t == pytest.approx(d.mean() / (d.std(ddof=1) / 2))
    s = summarize(d)
    assert (t.low, t.high) == pytest.approx((s.low, s.high))
    assert 0 < t.p < 0.05
    with pytest.raises(ValueError, match="pair up"):
        paired_test([1.0, 2.0], [1.0])
    assert math.isnan(paired_test([1.0], [0.0]).p)


def test_verdicts():
    assert verdict(paired_test([3.0, 4.0, 3.5], [1.0, 1.2, 0.9])) == "reproduced"
    assert verdict(paired_test([3.0, 4.0, 3.5], [1.0, 1.2, 0.9]), claimed_sign=-1) == "not reproduced"
    assert verdict(paired_test([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])) == "not separable at this scale"
    assert verdict(paired_test([1.0], [0.0])) == "not separable at this scale"
