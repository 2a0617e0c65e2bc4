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
from scipy import stats
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
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(4, 200), st.integers(1, 100),
       st.booleans(), st.booleans())
def test_pca_reconstruction_matches_sklearn(seed, d, n_ref, n_win, correlated, with_nan):
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=(n_ref, d)), 2)
    if correlated:
        ref[:, 1] = ref[:, 0] * 2 + rng.normal(0, 0.1, n_ref)
    win = np.round(rng.normal(0.2, 1.3, size=(n_win, d)), 2)
    if with_nan:
        win[0, 0] = np.nan
        ref[1, -1] = np.nan
    model = PCAReconstruction.fit(ref)
    ref_c = ref[np.all(np.isfinite(ref), axis=1)]
    fit, base = ref_c[0::2], ref_c[1::2]           # DESIGN: rows 0, 2, 4, ... fit; 1, 3, 5, ... baseline
    win_c = win[np.all(np.isfinite(win), axis=1)]
    scaler = StandardScaler().fit(fit)
    z = scaler.transform(fit)
    full = PCA().fit(z)
    ratio = np.cumsum(full.explained_variance_ratio_)
    if np.any(np.abs(ratio - 0.65) < 1e-9) or not np.isfinite(ratio).all():
        return  # (a component count decided by rounding is not a meaningful comparison)
    k = int(np.argmax(ratio >= 0.65)) + 1
    if k == d:
        assert model is None   # every component kept: absent
        return
    pca = PCA(n_components=k).fit(z)

    def errors(x):
        zx = scaler.transform(x)
        return np.linalg.norm(zx - pca.inverse_transform(pca.transform(zx)), axis=1)

    base_err = errors(base).mean()
    if base_err < 1e-9:
        return  # reconstruction is exact up to rounding: the ratio is noise in both
    assert model is not None and model.n_components == k
    ours = model.score(win)
    if win_c.shape[0] == 0:
        assert ours is None
        return
    assert math.isclose(ours, errors(win_c).mean() / base_err, rel_tol=1e-7, abs_tol=1e-9)


def test_pca_reconstruction_detects_a_broken_correlation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 1))
    ref = np.hstack([x, x + rng.normal(0, 0.1, (2000, 1)), rng.normal(size=(2000, 1))])
    model = PCAReconstruction.fit(ref)
    y = rng.normal(size=(500, 1))
    same = np.hstack([y, y + rng.normal(0, 0.1, (500, 1)), rng.normal(size=(500, 1))])
    broken = np.hstack([y, -y, rng.normal(size=(500, 1))])
    floor = model.noise_floor(500, 0.01)
    assert model.score(same) < max(1.1, floor) <= model.score(broken)


def test_pca_floor_shrinks_with_the_window():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4000, 1))
    model = PCAReconstruction.fit(np.hstack([x, x + rng.normal(0, 0.5, (4000, 1)), rng.normal(size=(4000, 2))]))
    floors = [model.noise_floor(n, 0.01) for n in (64, 256, 1024, 8192)]
    assert floors == sorted(floors, reverse=True) and floors[0] > 1.1 > floors[-1] > 1.0


# -- fairness -------------------------------------------------------------------------------------
@st.composite
def fairness_rows(draw):
    n = draw(st.integers(1, 160))
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


def scipy_pvalue(table):
    """chi2_contingency's p-value; DESIGN's p = 1 where scipy has none (an all-zero row or column)."""
    t = np.asarray(table, dtype=float)
    if (t.sum(axis=0) == 0).any() or (t.sum(axis=1) == 0).any():
        return 1.0
    return stats.chi2_contingency(t, correction=False).pvalue


@SETTINGS
@given(fairness_rows())
def test_fairness_matches_fairlearn(rows):
    y_pred, groups, labeled, y_true, min_size = rows
    fair = fairness_metrics(y_pred, groups, y_true[labeled], y_pred[labeled], groups[labeled], min_size)
    names, counts = np.unique(groups.astype(str), return_counts=True)
    used = names[counts >= min_size]
    big = np.isin(groups.astype(str), used)
    if big.any():
        sf = pd.Series(groups[big])
        want_d = fl(flm.demographic_parity_difference, y_true[big], y_pred[big], sensitive_features=sf)
        want_r = fl(flm.demographic_parity_ratio, y_true[big], y_pred[big], sensitive_features=sf)
        table = [[np.sum(y_pred[groups == g]), np.sum(1 - y_pred[groups == g])] for g in used]
        want_p = scipy_pvalue(table)
    else:
        want_d = want_r = want_p = None
    for key, want in ((sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE, want_d), (sc.FAIR_DISPARATE_IMPACT_RATIO, want_r)):
        if want is None:
            assert key not in fair.metrics and key not in fair.pvalues
        else:
            assert_close(fair.metrics[key], want, key)
            assert_close(fair.pvalues[key], want_p, key + " p")
    for g in used:
        in_g = groups == g
        assert_close(fair.groups[(g, sc.GROUP_SELECTION_RATE)], flm.selection_rate(y_true[in_g], y_pred[in_g]))
    # equalized odds: groups with min_size labeled positives AND min_size labeled negatives
    lt, lp, lg = y_true[labeled], y_pred[labeled], groups[labeled]
    eo_groups = [g for g in np.unique(lg.astype(str)) if np.sum((lg == g) & (lt == 1)) >= min_size
                 and np.sum((lg == g) & (lt == 0)) >= min_size]
    if eo_groups:
        sel = np.isin(lg.astype(str), eo_groups)
        want_eo = fl(flm.equalized_odds_difference, lt[sel], lp[sel], sensitive_features=pd.Series(lg[sel]))
        assert_close(fair.metrics[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE], want_eo)
        p1 = scipy_pvalue([[np.sum(lp[(lg == g) & (lt == 1)]), np.sum(1 - lp[(lg == g) & (lt == 1)])] for g in eo_groups])
        p0 = scipy_pvalue([[np.sum(lp[(lg == g) & (lt == 0)]), np.sum(1 - lp[(lg == g) & (lt == 0)])] for g in eo_groups])
        assert_close(fair.pvalues[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE], min(1.0, 2 * min(p1, p0)))
    else:
        assert sc.FAIR_EQUALIZED_ODDS_DIFFERENCE not in fair.metrics
        assert sc.FAIR_EQUALIZED_ODDS_DIFFERENCE not in fair.pvalues
    # per group: accuracy on >= min_size labeled rows, tpr on >= min_size positives, fpr on negatives
    for g in np.unique(lg.astype(str)):
        in_g = lg == g
        pos, neg = in_g & (lt == 1), in_g & (lt == 0)
        for metric, rows_used, want in (
                (sc.GROUP_ACCURACY, in_g, lambda s: np.mean(lt[s] == lp[s])),
                (sc.GROUP_TPR, pos, lambda s: flm.true_positive_rate(lt[s], lp[s], pos_label=1)),
                (sc.GROUP_FPR, neg, lambda s: flm.false_positive_rate(lt[s], lp[s], pos_label=1))):
            if np.sum(rows_used) >= min_size:
                assert_close(fair.groups[(g, metric)], want(in_g), f"{g} {metric}")
            else:
                assert (g, metric) not in fair.groups
    for v in (*fair.metrics.values(), *fair.pvalues.values(), *fair.groups.values()):
        assert math.isfinite(v)


def test_single_group_and_small_groups():
    g = np.array(["a"] * 40 + ["b"] * 3, dtype=object)
    y = np.array([1, 0] * 20 + [1, 1, 1])
    fair = fairness_metrics(y, g, y, y, g, 30)
    assert fair.metrics[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] == 0.0  # fairlearn with one group
    assert fair.metrics[sc.FAIR_DISPARATE_IMPACT_RATIO] == 1.0
    assert fair.pvalues[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] == 1.0  # one group: dof 0
    assert ("b", sc.GROUP_SELECTION_RATE) not in fair.groups           # fewer than 30 rows
    none = np.zeros(0, int)
    fair = fairness_metrics(np.zeros(40, int), g[:40], none, none, np.zeros(0, dtype=object), 30)
    assert sc.FAIR_DISPARATE_IMPACT_RATIO not in fair.metrics            # 0 / 0
    assert fair.pvalues[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] == 1.0    # nothing predicted positive
    assert sc.FAIR_EQUALIZED_ODDS_DIFFERENCE not in fair.metrics          # no labeled rows


def test_equalized_odds_needs_both_classes_per_group():
    # group b has 40 labeled rows but only 3 positives: its TPR (0/3 or 3/3) would dominate the gap
    g = np.array(["a"] * 100 + ["b"] * 40, dtype=object)
    t = np.array([1, 0] * 50 + [1] * 3 + [0] * 37)
    p = np.array([1, 0] * 50 + [0] * 3 + [0] * 37)
    fair = fairness_metrics(p, g, t, p, g, 30)
    assert fair.metrics[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE] == 0.0     # only group a qualifies
    assert ("b", sc.GROUP_TPR) not in fair.groups and ("b", sc.GROUP_FPR) in fair.groups


def test_fairness_pvalue_separates_chance_from_a_real_gap():
    rng = np.random.default_rng(8)
    g = np.repeat(np.array([f"g{i}" for i in range(10)], dtype=object), 30)
    fair_pred = (rng.uniform(size=g.size) < 0.5).astype(int)              # same rate in every group
    none = np.zeros(0, int)
    fair = fairness_metrics(fair_pred, g, none, none, np.zeros(0, dtype=object), 30)
    assert fair.pvalues[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] > 0.01
    biased = fair_pred.copy()
    biased[g == "g0"] = (rng.uniform(size=30) < 0.05).astype(int)         # one group's rate falls
    fair = fairness_metrics(biased, g, none, none, np.zeros(0, dtype=object), 30)
    assert fair.pvalues[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] < 0.01
    assert fair.metrics[sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE] > 0.3


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
    want0 = [not math.isnan(v) and (v < lo or v > hi) for v in x.tolist()]
    assert numeric_ood(x, lo, hi, 0.0).tolist() == want0
    w = 0.1 * (hi - lo)    # ood.margin 0.1: the range widened by a tenth of its width each side
    want = [not math.isnan(v) and (v < lo - w or v > hi + w) for v in x.tolist()]
    assert numeric_ood(x, lo, hi).tolist() == want
    c = np.array([None if v < -2 else f"c{int(abs(v))}" for v in np.nan_to_num(x).tolist()], dtype=object)
    cats = {"c0", "c1"}
    assert categorical_ood(c, cats).tolist() == [v is not None and v not in cats for v in c.tolist()]
    r = ood_ratio([numeric_ood(x, lo, hi), categorical_ood(c, cats)], n)
    if n == 0:
        assert r is None
    else:
        assert r == sum(a or b for a, b in zip(want, [v is not None and v not in cats for v in c.tolist()])) / n
