"""``missing``: does a feature arrive empty more often than in its reference? (DESIGN.md "Missing values")

A companion test: it runs on every input feature, beside the feature's distribution test (its
``method``), because a feature that starts arriving empty (a failed join upstream, a renamed
field) is the commonest silent failure, and the distribution tests only see present values.

- missing: a row whose value is absent, None, NaN or +-inf: in the window, exactly the rows
  counted by ``ml_data_quality_issues_total`` as issues ``missing`` + ``nan`` of the feature. A
  value unreadable as the feature's type (issue ``type_mismatch``) is left out of the
  distribution test too, but it is a value: it counts as present here. A feature that no window
  row sent is missing in every row (fraction 1).
- score = the window's missing fraction, missing / window rows (also exported as
  ``ml_feature_missing_ratio``);
- p-value = ``scipy.stats.fisher_exact([[ref_missing, ref_present], [win_missing,
  win_present]]).pvalue`` (two-sided, conditional on the margins: valid at any count, and it
  accounts for the reference's own sampling error); decided on the Benjamini-Hochberg q-value
  together with the model's other p-value tests (see the engine).

How it is fast: :func:`fisher_two_sided` is scipy's own two-sided algorithm (``fisher_exact`` in
scipy 1.17: P(X <= a), plus the far tail from the last point on the other side of the mode whose
hypergeometric pmf is at least pmf(a) x (1 + 1e-14); or the mirror case), on scipy's own
``hypergeom`` pmf / cdf / sf, with one change: that last point is located with log-gamma
(``scipy.special.gammaln``, one vectorized call over the far side) and then confirmed on
scipy's exact pmf around it (one call of a few points), where scipy runs a binary search of one
exact pmf call per step (about 15 calls of ~0.1-1 ms each for a 100 000-row table on a loaded
core). Where log-gamma's rounding could mislead (a point as probable as the table to ~1e-10,
e.g. the mirror point of a table with equal margins) the exact confirmation decides, and a
16-way search on the exact pmf is the fallback, so the p-value is scipy's (tests hold it to
``scipy.stats.fisher_exact`` at 1e-9). Each distinct table is computed once (a stable feature's
tables recur: with no missing value on either side, p = 1).

Example::

    import numpy as np
    from otel_ml_processor.stats import missing
    from otel_ml_processor.stats.drift_types import FeatureReference, FeatureWindow

    state = missing.prepare(FeatureReference.build(np.array([1.0, np.nan, 2.0, 3.0])), "numeric")
    r = missing.compute(state, FeatureWindow.build(np.array([np.nan, np.nan, 5.0])))
    r.score, r.pvalue        # 0.667 (2 of 3 rows), fisher_exact([[1, 3], [2, 1]]).pvalue
"""

from __future__ import annotations

import threading

import numpy as np
from scipy import special, stats

from otel_ml import semconv as sc
from otel_ml_processor.stats.decisions import DEFAULT_ALPHA
from otel_ml_processor.stats.drift_types import (
    CATEGORICAL, NUMERIC, PVALUE, DriftScore, DriftTest, FeatureReference, FeatureWindow,
)

__all__ = ["fisher_pvalue", "fisher_two_sided", "prepare", "compute", "TEST"]

#: Memoized tables kept (each is one float).
MEMO_SIZE = 65536

_memo: dict = {}
_memo_lock = threading.Lock()


#: Points of the pmf evaluated per step of the far-tail search (one vectorized call each).
SEARCH_WAYS = 16
#: scipy's relative tolerance for "as probable as the observed table"
_GAMMA = 1 + 1e-14


def _last_true(pred, lo: int, hi: int) -> int:
    """The largest x in [lo, hi] with pred(x) true, where pred is true on a prefix and pred(lo) is."""
    while hi > lo:
        xs = np.unique(np.linspace(lo, hi, min(SEARCH_WAYS, hi - lo + 1)).round().astype(np.int64))
        ok = pred(xs)
        j = int(np.flatnonzero(ok)[-1])
        if j == xs.size - 1:
            return int(xs[j])
        lo, hi = int(xs[j]), int(xs[j + 1]) - 1
    return lo


def _log_pmf(xs: np.ndarray, big_m: int, n1: int, n: int) -> np.ndarray:
    """log of the hypergeometric pmf (-inf outside the support), from log-gamma."""
    n2 = big_m - n1
    with np.errstate(invalid="ignore"):
        out = (special.gammaln(n1 + 1) - special.gammaln(xs + 1) - special.gammaln(n1 - xs + 1)
               + special.gammaln(n2 + 1) - special.gammaln(n - xs + 1) - special.gammaln(n2 - n + xs + 1)
               - special.gammaln(big_m + 1) + special.gammaln(n + 1) + special.gammaln(big_m - n + 1))
    return np.where((xs >= max(0, n - n2)) & (xs <= min(n, n1)), out, -np.inf)


def _tail_end(exact, approx, big_m: int, n1: int, n: int, lo: int, hi: int) -> int:
    """The largest x in [lo, hi] where ``exact(pmf)`` holds (true on a prefix, and at lo):
    located on the log-gamma pmf, confirmed on the exact one around it."""
    xs = np.arange(lo, hi + 1, dtype=np.int64)
    ok = np.flatnonzero(approx(_log_pmf(xs, big_m, n1, n)))
    g = lo + (int(ok[-1]) if ok.size else 0)
    near = np.arange(max(lo, g - 2), min(hi, g + 3) + 1, dtype=np.int64)
    holds = np.asarray(exact(near), dtype=bool)
    first_known = holds[0] or near[0] == lo
    inside = not holds[-1] or near[-1] == hi
    if first_known and inside and holds[0] and np.all(np.diff(holds.astype(np.int8)) <= 0):
        return int(near[np.flatnonzero(holds)[-1]])
    return _last_true(exact, lo, hi)


#: log-gamma's pmf is trusted where it is this far (in log) from the comparison it decides; its
#: rounding is ~1e-9 at 10^6 rows
_LOG_MARGIN = 1e-7


def _exact_two_sided(a: int, big_m: int, n1: int, n: int) -> float:
    """scipy's two-sided algorithm on scipy's exact pmf, the far tail's end confirmed exactly."""
    mode = int((n + 1) * (n1 + 1) / (big_m + 2))
    pexact, pmode = stats.hypergeom.pmf([a, mode], big_m, n1, n)
    if abs(pexact - pmode) / max(pexact, pmode) <= 1e-14:
        return 1.0
    bound = pexact * _GAMMA
    with np.errstate(divide="ignore"):
        log_bound = np.log(bound)
    if a < mode:
        plower = float(stats.hypergeom.cdf(a, big_m, n1, n))
        if stats.hypergeom.pmf(n, big_m, n1, n) > bound:
            return min(plower, 1.0)
        # the last x at or above the mode at least as probable as the table (pmf falls past the mode)
        guess = _tail_end(lambda xs: stats.hypergeom.pmf(xs, big_m, n1, n) >= bound,
                          lambda lp: lp >= log_bound, big_m, n1, n, mode, n)
        return min(plower + float(stats.hypergeom.sf(guess, big_m, n1, n)), 1.0)
    pupper = float(stats.hypergeom.sf(a - 1, big_m, n1, n))
    if stats.hypergeom.pmf(0, big_m, n1, n) > bound:
        return min(pupper, 1.0)
    # the last x up to the mode no more probable than the table (pmf rises to the mode)
    guess = _tail_end(lambda xs: stats.hypergeom.pmf(xs, big_m, n1, n) <= bound,
                      lambda lp: lp <= log_bound, big_m, n1, n, 0, mode)
    return min(pupper + float(stats.hypergeom.cdf(guess, big_m, n1, n)), 1.0)


def fisher_two_sided(a: int, b: int, c: int, d: int) -> float:
    """``scipy.stats.fisher_exact([[a, b], [c, d]]).pvalue`` (two-sided), with fewer scipy calls.

    The comparisons of pmf values are made on log-gamma where it is clearly on one side (by
    ``_LOG_MARGIN``); anything closer goes to :func:`_exact_two_sided` (scipy's exact pmf).
    """
    n1, n2, n = a + b, c + d, a + c
    if n1 == 0 or n2 == 0 or n == 0 or b + d == 0:
        return 1.0
    big_m = n1 + n2
    mode = int((n + 1) * (n1 + 1) / (big_m + 2))
    if a == mode:
        return 1.0
    lo, hi = (mode, n) if a < mode else (0, mode)
    xs = np.arange(lo, hi + 1, dtype=np.int64)
    lps = _log_pmf(xs, big_m, n1, n)
    lp_a = float(_log_pmf(np.array([a]), big_m, n1, n)[0])
    lp_mode = float(lps[mode - lo])
    if lp_mode - lp_a <= _LOG_MARGIN:
        return _exact_two_sided(a, big_m, n1, n)
    if a < mode:
        # far tail: x >= mode with pmf(x) >= pmf(a) (scipy's bound, pmf(a) x (1 + 1e-14))
        far, keep = lps - lp_a, lambda v: v >= 0
    else:
        far, keep = lp_a - lps, lambda v: v >= 0
    # scipy's early answer: the far end itself is kept out (a one-sided p-value)
    end = float(far[-1] if a < mode else far[0])
    if abs(end) <= _LOG_MARGIN:
        return _exact_two_sided(a, big_m, n1, n)
    if a < mode and end > 0:
        return min(float(stats.hypergeom.cdf(a, big_m, n1, n)), 1.0)
    if a >= mode and end < 0:
        return min(float(stats.hypergeom.sf(a - 1, big_m, n1, n)), 1.0)
    ok = np.flatnonzero(keep(far))
    g = int(ok[-1]) if ok.size else -1
    # certain when the last kept point and the next one are each clear of the bound
    if g < 0 or far[g] <= _LOG_MARGIN or (g + 1 < far.size and far[g + 1] >= -_LOG_MARGIN) \
            or np.any(np.abs(far) <= _LOG_MARGIN):
        return _exact_two_sided(a, big_m, n1, n)
    guess = lo + g
    if a < mode:
        return min(float(stats.hypergeom.cdf(a, big_m, n1, n)) + float(stats.hypergeom.sf(guess, big_m, n1, n)), 1.0)
    return min(float(stats.hypergeom.sf(a - 1, big_m, n1, n)) + float(stats.hypergeom.cdf(guess, big_m, n1, n)), 1.0)


def fisher_pvalue(ref_missing: int, ref_rows: int, win_missing: int, win_rows: int) -> float:
    """Two-sided Fisher exact p-value of (missing, present) x (reference, window)."""
    key = (int(ref_missing), int(ref_rows), int(win_missing), int(win_rows))
    hit = _memo.get(key)
    if hit is None:
        hit = fisher_two_sided(key[0], key[1] - key[0], key[2], key[3] - key[2])
        with _memo_lock:
            if len(_memo) >= MEMO_SIZE:
                _memo.clear()
            _memo[key] = hit
    return hit


def prepare(ref: FeatureReference, treatment: str) -> tuple[int, int]:
    """(missing rows, rows) of the reference."""
    return ref.missing, ref.rows


def compute(state: tuple[int, int], cur: FeatureWindow) -> DriftScore:
    ref_missing, ref_rows = state
    if cur.rows == 0:
        return DriftScore(score=float("nan"), pvalue=float("nan"))
    return DriftScore(score=cur.missing / cur.rows, pvalue=fisher_pvalue(ref_missing, ref_rows, cur.missing, cur.rows))


TEST = DriftTest(
    name=sc.METHOD_MISSING, kinds=frozenset({NUMERIC, CATEGORICAL}), score_kind=PVALUE,
    default_threshold=DEFAULT_ALPHA, prepare=prepare, compute=compute, companion=True,
    description="missing fraction of the window; two-sided Fisher exact test of (missing, present) x "
                "(reference, window) (scipy.stats.fisher_exact)",
)
