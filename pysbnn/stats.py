r"""Summaries over seeds: mean, standard deviation, Student-t confidence interval,
and the paired t-test of two configurations trained with the same seeds.

Small on purpose, and all from :mod:`scipy.stats`. With n seeds the interval of
a mean is :math:`\bar x \pm t_{n-1, 1-a/2}\,s/\sqrt n`: with 3 seeds
``t = 4.30``, so only differences of about 2.5 standard deviations of the
per-seed differences can be told apart; :func:`verdict` says so in words.
"""

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = ["Summary", "PairedTest", "summarize", "paired_test", "verdict"]


class Summary(NamedTuple):
    """``n`` values: ``mean``, ``sd`` (ddof 1) and the ``confidence`` interval ``[low, high]``.

    ``sd``, ``low`` and ``high`` are NaN for one value (no spread to measure).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    confidence: float


class PairedTest(NamedTuple):
    """Paired t-test of ``a - b`` (same seeds): the mean difference, its interval, t and p."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    t: float
    p: float
    confidence: float


def _finite(values, name):
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be a non-empty list of finite numbers, got {values!r}")
    return x


def summarize(values, confidence=0.95):
    r"""Mean, sd and the Student-t interval of the mean of ``values`` (1-D, finite).

    .. math:: \bar x \pm t_{n-1,\,(1+c)/2}\;\frac{s}{\sqrt n}

    (``scipy.stats.t.interval``). A zero spread gives a zero-width interval.
    """
    x = _finite(values, "values")
    n, mean = x.size, float(np.mean(x))
    if n == 1:
        return Summary(1, mean, float("nan"), float("nan"), float("nan"), confidence)
    sd = float(np.std(x, ddof=1))
    if sd == 0:
        return Summary(n, mean, 0.0, mean, mean, confidence)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / np.sqrt(n))
    return Summary(n, mean, sd, float(low), float(high), confidence)


def paired_test(a, b, confidence=0.95):
    """Two-sided paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``).

    ``a[i]`` and ``b[i]`` come from the same seed ``i``. Returns the mean of
    ``a - b`` with its interval (the same as :func:`summarize` of the
    differences), t and p. Fewer than two pairs, or identical differences,
    give NaN for t, p and the interval's missing ends.
    """
    a, b = _finite(a, "a"), _finite(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up, got {a.size} and {b.size} values")
    s = summarize(a - b, confidence)
    if s.n < 2 or s.sd == 0:
        return PairedTest(s.n, s.mean, s.sd, s.low, s.high, float("nan"), float("nan"), confidence)
    res = stats.ttest_rel(a, b)
    return PairedTest(s.n, s.mean, s.sd, s.low, s.high, float(res.statistic), float(res.pvalue),
                      confidence)


def verdict(test, claimed_sign=+1):
    """Words for a claim that ``a - b`` has ``claimed_sign``, from its interval.

    ``"reproduced"`` when the whole interval has the claimed sign,
    ``"not reproduced"`` when it has the other one (the data contradict the
    claim), ``"not separable at this scale"`` when it contains 0 (or with
    fewer than two seeds).
    """
    low, high = test.low * claimed_sign, test.high * claimed_sign
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not separable at this scale"
    low, high = min(low, high), max(low, high)
    if low > 0:
        return "reproduced"
    if high < 0:
        return "not reproduced"
    return "not separable at this scale"
