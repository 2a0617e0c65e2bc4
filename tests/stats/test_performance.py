"""Performance metrics against scikit-learn on the same rows (rel 1e-9, abs 1e-12)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from otel_ml import semconv as sc
from otel_ml_processor.stats.performance import binary_performance, multiclass_performance, regression_performance
from tests.stats.oracle import assert_matches

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def binary_rows(draw):
    n = draw(st.integers(0, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    one_class = draw(st.sampled_from([None, 0, 1]))
    y_true = rng.integers(0, 2, n) if one_class is None else np.full(n, one_class)
    y_pred = rng.integers(0, 2, n) if draw(st.booleans()) else np.full(n, draw(st.integers(0, 1)))
    decimals = draw(st.sampled_from([1, 2, 8]))
    lo, hi = draw(st.sampled_from([(0.0, 1.0), (0.0, 1.0), (-0.2, 1.0), (0.0, 1.3)]))
    p = np.round(rng.uniform(lo, hi, n), decimals)
    if draw(st.booleans()) and n:
        p[rng.integers(0, n)] = draw(st.sampled_from([0.0, 1.0]))
    return y_true, y_pred, p


@SETTINGS
@given(binary_rows())
def test_binary_matches_sklearn(rows):
    y_true, y_pred, p = rows
    ours = binary_performance(y_true, y_pred, p)
    if y_true.size == 0:
        assert ours == {}
        return
    assert_matches(ours, sc.PERF_ACCURACY, skm.accuracy_score(y_true, y_pred))
    assert_matches(ours, sc.PERF_PRECISION, skm.precision_score(y_true, y_pred, pos_label=1))
    assert_matches(ours, sc.PERF_RECALL, skm.recall_score(y_true, y_pred, pos_label=1))
    assert_matches(ours, sc.PERF_F1, skm.f1_score(y_true, y_pred, pos_label=1))
    from tests.stats.oracle import oracle
    assert_matches(ours, sc.PERF_ROC_AUC, oracle(skm.roc_auc_score, y_true, p))
    assert_matches(ours, sc.PERF_LOG_LOSS, oracle(skm.log_loss, y_true, p))
    assert_matches(ours, sc.PERF_BRIER, oracle(skm.brier_score_loss, y_true, p))


def test_binary_documented_absences():
    # one class: roc_auc and log_loss undefined; brier defined
    ours = binary_performance(np.array([1, 1]), np.array([1, 0]), np.array([0.9, 0.2]))
    assert sc.PERF_ROC_AUC not in ours and sc.PERF_LOG_LOSS not in ours
    assert ours[sc.PERF_BRIER] == skm.brier_score_loss([1, 1], [0.9, 0.2])
    # nothing predicted positive: precision is sklearn's 0.0, not absent
    assert binary_performance(np.array([0, 1]), np.array([0, 0]))[sc.PERF_PRECISION] == 0.0
    assert binary_performance(np.array([]), np.array([])) == {}


@st.composite
def multiclass_rows(draw):
    n = draw(st.integers(0, 40))
    k = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    classes = np.array([f"c{i}" for i in range(k)], dtype=object)
    return classes[rng.integers(0, k, n)], classes[rng.integers(0, draw(st.integers(1, k)), n)]


@SETTINGS
@given(multiclass_rows())
def test_multiclass_matches_sklearn(rows):
    y_true, y_pred = rows
    ours = multiclass_performance(y_true, y_pred)
    if y_true.size == 0:
        assert ours == {}
        return
    yt, yp = y_true.astype(str), y_pred.astype(str)
    assert_matches(ours, sc.PERF_ACCURACY, skm.accuracy_score(yt, yp))
    for key, fn in ((sc.PERF_PRECISION, skm.precision_score), (sc.PERF_RECALL, skm.recall_score),
                    (sc.PERF_F1, skm.f1_score)):
        from tests.stats.oracle import oracle
        assert_matches(ours, key, oracle(fn, yt, yp, average="macro"))


@st.composite
def regression_rows(draw):
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = np.round(rng.normal(0, 10, n), draw(st.sampled_from([0, 2, 10])))
    if draw(st.booleans()):
        y = np.full(n, 3.0)
    yp = y + np.round(rng.normal(0, 2, n), 1) if draw(st.booleans()) else y.copy()
    return y, yp


@SETTINGS
@given(regression_rows())
def test_regression_matches_sklearn(rows):
    from tests.stats.oracle import oracle
    y, yp = rows
    ours = regression_performance(y, yp)
    if y.size == 0:
        assert ours == {}
        return
    assert_matches(ours, sc.PERF_MAE, skm.mean_absolute_error(y, yp))
    assert_matches(ours, sc.PERF_RMSE, skm.root_mean_squared_error(y, yp))
    assert_matches(ours, sc.PERF_R2, oracle(skm.r2_score, y, yp))


# -- Wilson intervals (statsmodels is the oracle) --------------------------------------------------
@SETTINGS
@given(st.integers(0, 5000), st.integers(1, 5000))
def test_wilson_matches_statsmodels(count, nobs):
    from statsmodels.stats.proportion import proportion_confint

    from otel_ml_processor.stats.performance import wilson_interval
    count = min(count, nobs)
    lo, hi = wilson_interval(count, nobs)
    want_lo, want_hi = proportion_confint(count, nobs, alpha=0.05, method="wilson")
    np.testing.assert_allclose([lo, hi], [want_lo, want_hi], rtol=1e-9, atol=1e-12)
    assert 0.0 <= lo <= count / nobs + 1e-12 and count / nobs - 1e-12 <= hi <= 1.0


@SETTINGS
@given(binary_rows())
def test_binary_intervals_are_wilson_of_each_denominator(rows):
    from statsmodels.stats.proportion import proportion_confint

    from otel_ml_processor.stats.performance import binary_intervals
    y_true, y_pred, _ = rows
    ours = binary_intervals(y_true, y_pred)
    t, p = y_true.astype(bool), y_pred.astype(bool)
    for metric, count, nobs in ((sc.PERF_ACCURACY, np.sum(t == p), t.size),
                                (sc.PERF_PRECISION, np.sum(t & p), np.sum(p)),
                                (sc.PERF_RECALL, np.sum(t & p), np.sum(t))):
        if nobs == 0:
            assert (metric, "lower") not in ours and (metric, "upper") not in ours
            continue
        lo, hi = proportion_confint(int(count), int(nobs), alpha=0.05, method="wilson")
        np.testing.assert_allclose([ours[(metric, "lower")], ours[(metric, "upper")]], [lo, hi], rtol=1e-9, atol=1e-12)


def test_forty_labels_do_not_prove_a_drop():
    # DESIGN: the alerts compare the upper bound, so that 40 labels at 0.8 do not page for < 0.85
    from otel_ml_processor.stats.performance import wilson_interval
    lo, hi = wilson_interval(32, 40)
    assert lo < 0.8 < 0.85 < hi
