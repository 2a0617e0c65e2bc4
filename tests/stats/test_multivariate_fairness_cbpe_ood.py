"""PCA reconstruction (sklearn), fairness (fairlearn), CBPE (sklearn isotonic + calibration
check), OOD (a plain loop)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd  # fairlearn squeezes a 1-row array to 0-d; a Series keeps it 1-d
from fairlearn import metrics as flm
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA
from sklearn.isotonic import IsotonicRegression
from sklearn.preprocessing import StandardScaler

from otel_ml import semconv as sc
from otel_ml_processor.stats import cbpe
from otel_ml_processor.stats.fairness import fairness_metrics
from otel_ml_processor.stats.multivariate import PCAReconstruction
from otel_ml_processor.stats.ood import categorical_ood, numeric_ood, ood_ratio
from tests.stats.oracle import assert_close

SETTINGS = settings(max_examples=30, deadline=None)


# -- multivariate -------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(3, 200), st.integers(1, 100),
       st.booleans(), st.booleans())
def test_pca_reconstruction_matches_sklearn(seed, d, n_ref, n_win, correlated, with_nan):
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=(n_ref, d)), 2)
    if correlated:
        ref[:, 1] = ref[:, 0] * 2 + rng.normal(0, 0.1, n_ref)
    win = np.round(rng.normal(0.2, 1.3, size=(n_win, d)), 2)
    if with_nan:
        win[0, 0] = np.nan
        ref[-1, -1] = np.nan
    model = PCAReconstruction.fit(ref)
    ref_c = ref[np.all(np.isfinite(ref), axis=1)]
    win_c = win[np.all(np.isfinite(win), axis=1)]
    scaler = StandardScaler().fit(ref_c)
    z = scaler.transform(ref_c)
    full = PCA().fit(z)
    ratio = np.cumsum(full.explained_variance_ratio_)
    if model is None or np.any(np.abs(ratio - 0.65) < 1e-9):
        return  # (a component count decided by rounding is not a meaningful comparison)
    k = int(np.argmax(ratio >= 0.65)) + 1
    assert model.n_components == k
    pca = PCA(n_components=k).fit(z)

    def mean_err(x):
        zx = scaler.transform(x)
        return np.linalg.norm(zx - pca.inverse_transform(pca.transform(zx)), axis=1).mean()

    ours = model.score(win)
    if win_c.shape[0] == 0:
        assert ours is None
        return
    ref_err = mean_err(ref_c)
    if ref_err < 1e-9:
        return  # reconstruction is exact up to rounding: the ratio is noise in both
    assert ours is not None
    assert math.isclose(ours, mean_err(win_c) / ref_err, rel_tol=1e-7, abs_tol=1e-9)


def test_pca_reconstruction_detects_a_broken_correlation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 1))
    ref = np.hstack([x, x + rng.normal(0, 0.1, (2000, 1)), rng.normal(size=(2000, 1))])
    model = PCAReconstruction.fit(ref)
    same = np.hstack([x[:500], x[:500] + rng.normal(0, 0.1, (500, 1)), rng.normal(size=(500, 1))])
    broken = np.hstack([x[:500], -x[:500], rng.normal(size=(500, 1))])
    assert model.score(same) < 1.1 <= model.score(broken)


# -- fairness -------------------------------------------------------------------------------------
@st.composite
def fairness_rows(draw):
    n = draw(st.integers(1, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 4))
    groups = np.array([f"g{i}" for i in rng.integers(0, k, n)], dtype=object)
    y_pred = rng.integers(0, 2, n) if draw(st.booleans()) else np.full(n, draw(st.integers(0, 1)))
    y_true = rng.integers(0, 2, n) if draw(st.booleans()) else np.full(n, draw(st.integers(0, 1)))
    labeled = rng.uniform(size=n) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    return y_pred, groups, labeled, y_true, draw(st.sampled_from([1, 5, 20]))


def fl(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = float(fn(*args, **kw))
    return v if math.isfinite(v) else None


@SETTINGS
@given(fairness_rows())
def test_fairness_matches_fairlearn(rows):
    y_pred, groups, labeled, y_true, min_size = rows
    fair, per_group = fairness_metrics(y_pred, groups, labeled, y_true, min_size)
    names, counts = np.unique(groups.astype(str), return_counts=True)
    big = np.isin(groups.astype(str), names[counts >= min_size])
    if big.any():
        sf = pd.Series(groups[big])
        want_d = fl(flm.demographic_parity_difference, y_true[big], y_pred[big], sensitive_features=sf)
        want_r = fl(flm.demographic_parity_ratio, y_true[big], y_pred[big], sensitive_features=sf)
    else:
        want_d = want_r = None
    for key, want in ((sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE, want_d), (sc.FAIR_DISPARATE_IMPACT_RATIO, want_r)):
        if want is None:
            assert key not in fair
        else:
            assert_close(fair[key], want, key)
    for g in names[counts >= min_size]:
        in_g = groups == g
        assert_close(per_group[(g, sc.GROUP_SELECTION_RATE)], flm.selection_rate(y_true[in_g], y_pred[in_g]))
    lg = groups[labeled]
    lnames, lcounts = np.unique(lg.astype(str), return_counts=True)
    lbig = labeled & np.isin(groups.astype(str), lnames[lcounts >= min_size])
    if lbig.any():
        want_eo = fl(flm.equalized_odds_difference, y_true[lbig], y_pred[lbig],
                     sensitive_features=pd.Series(groups[lbig]))
        assert_close(fair[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE], want_eo)
        for g in lnames[lcounts >= min_size]:
            sel = lbig & (groups == g)
            assert_close(per_group[(g, sc.GROUP_TPR)], flm.true_positive_rate(y_true[sel], y_pred[sel], pos_label=1))
            assert_close(per_group[(g, sc.GROUP_FPR)], flm.false_positive_rate(y_true[sel], y_pred[sel], pos_label=1))
            assert_close(per_group[(g, sc.GROUP_ACCURACY)], np.mean(y_true[sel] == y_pred[sel]))
    else:
        assert sc.FAIR_EQUALIZED_ODDS_DIFFERENCE not in fair
    for v in (*fair.values(), *per_group.values()):
        assert math.isfinite(v)


def test_single_group_and_small_groups():
    g = np.array(["a"] * 40 + ["b"] * 3, dtype=object)
    y = np.array([1, 0] * 20 + [1, 1, 1])
    fair, per_group = fairness_metrics(y, g, np.ones(43, bool), y, 30)
    assert fair[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] == 0.0  # fairlearn with one group
    assert fair[sc.FAIR_DISPARATE_IMPACT_RATIO] == 1.0
    assert ("b", sc.GROUP_SELECTION_RATE) not in per_group      # fewer than 30 rows
    fair, _ = fairness_metrics(np.zeros(40, int), g[:40], np.zeros(40, bool), y[:40], 30)
    assert sc.FAIR_DISPARATE_IMPACT_RATIO not in fair             # 0 / 0
    assert sc.FAIR_EQUALIZED_ODDS_DIFFERENCE not in fair          # no labeled rows


# -- CBPE -----------------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.sampled_from([1, 2, 6]))
def test_isotonic_calibrator_matches_sklearn(seed, n, decimals):
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(size=n), decimals)
    y = (rng.uniform(size=n) < s).astype(float)
    cal = cbpe.IsotonicCalibrator.fit(s, y)
    if y.min() == y.max():
        assert cal is None
        return
    q = rng.uniform(-0.2, 1.2, 50)
    want = IsotonicRegression(out_of_bounds="clip").fit(s, y).predict(q)
    np.testing.assert_allclose(cal.transform(q), want, rtol=1e-9, atol=1e-12)


def test_cbpe_expected_metrics_by_definition():
    rng = np.random.default_rng(5)
    p = np.round(rng.uniform(size=200), 2)
    yp = (p >= 0.5)
    est = cbpe.estimate(p, yp)
    tp, fp = p[yp].sum(), (1 - p[yp]).sum()
    fn, tn = p[~yp].sum(), (1 - p[~yp]).sum()
    assert_close(est[sc.PERF_ACCURACY], (tp + tn) / 200)
    assert_close(est[sc.PERF_PRECISION], tp / (tp + fp))
    assert_close(est[sc.PERF_RECALL], tp / (tp + fn))
    assert_close(est[sc.PERF_F1], 2 * tp / (2 * tp + fp + fn))
    # expected ROC AUC = expected pairwise concordance when probabilities are distinct: compare
    # with a brute-force double loop on distinct values
    p2 = rng.permutation(np.linspace(0.01, 0.99, 60))
    num = sum(p2[i] * (1 - p2[j]) * (1.0 if p2[i] > p2[j] else 0.0) for i in range(60) for j in range(60) if i != j)
    den = sum(p2[i] * (1 - p2[j]) for i in range(60) for j in range(60) if i != j)
    # the curve integrates over rows including each row with itself: correct the self-pairs
    self_pairs = np.sum(p2 * (1 - p2))
    auc = cbpe.expected_roc_auc(p2)
    assert math.isclose(auc, (num + 0.5 * self_pairs) / (den + self_pairs), rel_tol=1e-9)
    assert cbpe.estimate(np.array([]), np.array([])) == {}
    assert sc.PERF_PRECISION not in cbpe.estimate(np.array([0.3]), np.array([False]))


def test_cbpe_tracks_realized_accuracy_on_a_calibrated_model():
    rng = np.random.default_rng(11)

    def sample(n, shift):
        x = rng.normal(shift, 1, n)
        p_true = 1 / (1 + np.exp(-2 * x))          # the real P(y=1 | x)
        y = (rng.uniform(size=n) < p_true).astype(int)
        score = np.clip(p_true + rng.normal(0, 0.02, n), 0, 1)  # a nearly calibrated model
        return score, y

    s_ref, y_ref = sample(5000, 0.0)
    cal = cbpe.IsotonicCalibrator.fit(s_ref, y_ref)
    for shift in (0.0, 0.7, -1.0):  # covariate shift changes accuracy; CBPE follows it
        s, y = sample(5000, shift)
        yp = s >= 0.5
        est = cbpe.estimate(cal.transform(s), yp)[sc.PERF_ACCURACY]
        realized = float(np.mean(yp == y))
        assert abs(est - realized) <= 0.02, (shift, est, realized)


# -- OOD ------------------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(0, 50))
def test_ood_matches_a_loop(seed, n):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(0, 2, n), 1)
    if n:
        x[rng.integers(0, n)] = np.nan
    lo, hi = -1.0, 1.5
    want = [not math.isnan(v) and (v < lo or v > hi) for v in x.tolist()]
    assert numeric_ood(x, lo, hi).tolist() == want
    c = np.array([None if v < -2 else f"c{int(abs(v))}" for v in np.nan_to_num(x).tolist()], dtype=object)
    cats = {"c0", "c1"}
    assert categorical_ood(c, cats).tolist() == [v is not None and v not in cats for v in c.tolist()]
    r = ood_ratio([numeric_ood(x, lo, hi), categorical_ood(c, cats)], n)
    if n == 0:
        assert r is None
    else:
        assert r == sum(a or b for a, b in zip(want, [v is not None and v not in cats for v in c.tolist()])) / n
