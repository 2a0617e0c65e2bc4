"""``ks``: two-sample Kolmogorov-Smirnov, equal to ``scipy.stats.ks_2samp(reference, window)``.

Default arguments: two-sided, ``method="auto"``: the exact distribution when
max(n1, n2) <= 10 000, else the asymptotic one (``scipy.stats.kstwo.sf(d, round(n1 n2 / (n1 +
n2)))``); an exact computation that fails falls back to the asymptotic one, as scipy does. In
exact mode the statistic is rounded to a multiple of 1/lcm(n1, n2), as scipy does. The
statistic itself is computed from the pre-sorted reference (no scipy call per cycle). Score =
the statistic D, p-value = the test's; detected when p < threshold (default 0.05).

Example::

    import numpy as np
    from otel_ml_processor.stats.registry import FeatureReference, FeatureWindow
    from otel_ml_processor.stats.ks import ks_statistic_pvalue

    d, p = ks_statistic_pvalue(FeatureReference.build(np.arange(100.0)).sorted, np.sort(np.arange(50.0)))
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats

from otel_ml import semconv as sc
from otel_ml_processor.stats._ecdf import merge
from otel_ml_processor.stats.registry import NUMERIC, PVALUE, DriftScore, DriftTest, FeatureReference, FeatureWindow

try:  # the very function ks_2samp calls in exact mode (private: guarded)
    from scipy.stats._stats_py import _attempt_exact_2kssamp
except ImportError:  # pragma: no cover - scipy moved it; fall back to calling ks_2samp
    _attempt_exact_2kssamp = None

#: scipy's ks_2samp ``MAX_AUTO_N``: exact p-values up to this sample size.
MAX_AUTO_N = 10000


@lru_cache(maxsize=4096)
def _exact(n1: int, n2: int, h: int) -> tuple[bool, float, float]:
    """scipy's exact two-sided computation for D = h / lcm(n1, n2): a pure function of the three
    integers, so it is memoized — with fixed window and reference sizes the same few hundred
    values of h recur across features and cycles."""
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    return _attempt_exact_2kssamp(n1, n2, g, h / lcm, "two-sided")


def ks_statistic_pvalue(ref_sorted: np.ndarray, win_sorted: np.ndarray) -> tuple[float, float]:
    """(D, p) of ``ks_2samp(ref, win)`` from both samples sorted."""
    n1, n2 = ref_sorted.size, win_sorted.size
    m = merge(ref_sorted, win_sorted)
    last = m.last_of_ties()
    cddiffs = m.ref_le[last] / n1 - m.win_le[last] / n2
    min_s = float(np.clip(-cddiffs.min(), 0, 1))
    max_s = float(cddiffs.max())
    d = min_s if min_s > max_s else max_s
    g = math.gcd(n1, n2)
    mode = "exact" if max(n1, n2) <= MAX_AUTO_N else "asymp"
    prob = float("nan")
    if mode == "exact":
        if _attempt_exact_2kssamp is None:  # pragma: no cover
            r = stats.ks_2samp(ref_sorted, win_sorted)
            return float(r.statistic), float(r.pvalue)
        lcm = (n1 // g) * n2
        success, d, prob = _exact(n1, n2, int(np.round(d * lcm)))
        if not success:
            mode = "asymp"
    if mode == "asymp":
        mm, nn = sorted([float(n1), float(n2)], reverse=True)
        en = mm * nn / (mm + nn)
        prob = stats.kstwo.sf(d, np.round(en))
    return float(d), float(np.clip(prob, 0, 1))


def compute(ref: FeatureReference, cur: FeatureWindow, treatment: str) -> DriftScore:
    d, p = ks_statistic_pvalue(ref.sorted, cur.sorted)
    return DriftScore(score=d, pvalue=p)


TEST = DriftTest(
    name=sc.METHOD_KS, kinds=frozenset({NUMERIC}), score_kind=PVALUE, default_threshold=0.05,
    compute=compute, description="two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp)",
)
