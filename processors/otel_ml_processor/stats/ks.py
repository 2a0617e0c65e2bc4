"""``ks``: two-sample Kolmogorov-Smirnov, equal to ``scipy.stats.ks_2samp(reference, window)``.

Default arguments: two-sided, ``method="auto"``: the exact distribution when max(n1, n2) <=
10 000, else the asymptotic one (``scipy.stats.kstwo.sf(d, round(n1 n2 / (n1 + n2)))``). In
exact mode scipy rounds the statistic to a multiple of 1/lcm(n1, n2). Score = the statistic D,
p-value = the test's; decided on the Benjamini-Hochberg q-value (see the engine).

How it is fast: D is computed from the pre-sorted reference and the sorted window in one merge
(no scipy call per cycle). The p-value is a function of (n1, n2, D) alone, so it is memoized
under (n1, n2, round(D lcm(n1, n2))): on a miss ``scipy.stats.ks_2samp`` itself is called on the
two samples (public API only), and every later window of the same sizes with the same D reads
the same answer (with fixed sizes a few hundred values of D recur across features and cycles).
In asymptotic mode the p-value is ``scipy.stats.kstwo.sf``, exactly what ``ks_2samp`` returns.

Example::

    import numpy as np
    from otel_ml_processor.stats.ks import ks_statistic_pvalue

    d, p = ks_statistic_pvalue(np.arange(100.0), np.arange(50.0))   # both sorted
"""

from __future__ import annotations

import math
import threading

import numpy as np
from scipy import stats

from otel_ml import semconv as sc
from otel_ml_processor.stats._ecdf import merge
from otel_ml_processor.stats.decisions import DEFAULT_ALPHA
from otel_ml_processor.stats.drift_types import (
    NUMERIC, PVALUE, SMALL, DriftScore, DriftTest, FeatureReference, FeatureWindow,
)

#: scipy's ks_2samp ``MAX_AUTO_N``: exact p-values up to this sample size.
MAX_AUTO_N = 10000
#: Memoized exact answers kept (each is three numbers).
MEMO_SIZE = 65536

_memo: dict = {}
_memo_lock = threading.Lock()


def _statistic(ref_sorted: np.ndarray, win_sorted: np.ndarray) -> float:
    n1, n2 = ref_sorted.size, win_sorted.size
    m = merge(ref_sorted, win_sorted)
    last = m.last_of_ties()
    cddiffs = m.ref_le[last] / n1 - m.win_le[last] / n2
    min_s = float(np.clip(-cddiffs.min(), 0, 1))
    max_s = float(cddiffs.max())
    return min_s if min_s > max_s else max_s


def ks_statistic_pvalue(ref_sorted: np.ndarray, win_sorted: np.ndarray) -> tuple[float, float]:
    """(D, p) of ``ks_2samp(ref, win)`` from both samples sorted."""
    n1, n2 = int(ref_sorted.size), int(win_sorted.size)
    d = _statistic(ref_sorted, win_sorted)
    if max(n1, n2) > MAX_AUTO_N:
        en = round(n1 * n2 / (n1 + n2))
        return d, float(np.clip(stats.kstwo.sf(d, en), 0, 1))
    lcm = (n1 // math.gcd(n1, n2)) * n2
    key = (n1, n2, int(np.round(d * lcm)))
    hit = _memo.get(key)
    if hit is None:
        r = stats.ks_2samp(ref_sorted, win_sorted)
        hit = (float(r.statistic), float(r.pvalue))
        with _memo_lock:
            if len(_memo) >= MEMO_SIZE:
                _memo.clear()
            _memo[key] = hit
    return hit


def prepare(ref: FeatureReference, treatment: str) -> np.ndarray:
    """The reference's sorted values."""
    return ref.sorted


def compute(ref_sorted: np.ndarray, cur: FeatureWindow) -> DriftScore:
    d, p = ks_statistic_pvalue(ref_sorted, cur.sorted)
    return DriftScore(score=d, pvalue=p)


TEST = DriftTest(
    name=sc.METHOD_KS, kinds=frozenset({NUMERIC}), score_kind=PVALUE, default_threshold=DEFAULT_ALPHA,
    prepare=prepare, compute=compute, auto=frozenset({(NUMERIC, SMALL)}),
    description="two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp)",
)
