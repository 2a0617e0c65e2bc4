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

Each distinct table is computed once (scipy's two-sided search takes milliseconds on a loaded
core; a stable feature's tables recur: with no missing value on either side, p = 1 every cycle).

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

from scipy import stats

from otel_ml import semconv as sc
from otel_ml_processor.stats.decisions import DEFAULT_ALPHA
from otel_ml_processor.stats.drift_types import (
    CATEGORICAL, NUMERIC, PVALUE, DriftScore, DriftTest, FeatureReference, FeatureWindow,
)

__all__ = ["fisher_pvalue", "prepare", "compute", "TEST"]

#: Memoized tables kept (each is one float).
MEMO_SIZE = 65536

_memo: dict = {}
_memo_lock = threading.Lock()


def fisher_pvalue(ref_missing: int, ref_rows: int, win_missing: int, win_rows: int) -> float:
    """Two-sided Fisher exact p-value of (missing, present) x (reference, window)."""
    key = (int(ref_missing), int(ref_rows), int(win_missing), int(win_rows))
    hit = _memo.get(key)
    if hit is None:
        table = [[key[0], key[1] - key[0]], [key[2], key[3] - key[2]]]
        hit = float(stats.fisher_exact(table).pvalue)
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
