"""compute_model_metrics on windows built by WindowBuffer, against the oracles on the same rows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from fairlearn import metrics as flm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import prepare_reference, reference_from_window
from otel_ml_processor.compute.window import WindowBuffer
from tests.stats.oracle import assert_close, design_pooled_table, scipy_chi2

SETTINGS = settings(max_examples=25, deadline=None)


def oracle(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = float(fn(*a, **kw))
        except ValueError:
            return None
    return v if math.isfinite(v) else None


def check(ours: dict, key, want):
    if want is None:
        assert key not in ours, (key, ours.get(key))
    else:
        assert key in ours, (key, want)
        assert_close(ours[key], want, str(key))


def make_rows(seed: int, n: int, one_class: bool, label_share: float, shift: float):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p = float(np.round(rng.uniform(), 2))
        pred = "yes" if p >= 0.5 else "no"
        feats = {"x": float(np.round(rng.normal(shift if i >= n // 2 else 0), 1)),
                 "k": ["a", "b", "c"][int(rng.integers(0, 3))]}
        if rng.uniform() < 0.1:
            feats["x"] = None if rng.uniform() < 0.5 else float("nan")
        if rng.uniform() < 0.1:
            del feats["k"]
        label = None
        if rng.uniform() < label_share:
            label = "yes" if one_class or rng.uniform() < p else "no"
        probs = {"yes": p} if i % 3 else {}
        rows.append(dict(prediction_id=f"p{i}", timestamp=1000.0 + i, features=feats, output_label=pred,
                         output_value=None, score=max(p, 1 - p), probabilities=probs,
                         segments={"g": f"g{int(rng.integers(0, 3))}"} if rng.uniform() < 0.9 else {},
                         label=label))
    return rows


def window_of(rows, size=10000):
    buf = WindowBuffer("m", "1", "classification", size=size)
    for r in rows:
        buf.append(r)
    return buf.snapshot()


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(0, 90), st.booleans(), st.sampled_from([0.0, 0.5, 1.0]),
       st.sampled_from([0.0, 1.5]))
def test_binary_engine_matches_oracles(seed, n, one_class, label_share, shift):
    rows = make_rows(seed, n, one_class, label_share, shift)
    w = window_of(rows)
    spec = ModelSpec(positive_label="yes", fairness_attributes=("g",), fairness_min_group_size=5)
    ref_rows = make_rows(seed + 1, 60, False, 1.0, 0.0)
    ref = prepare_reference(reference_from_window(window_of(ref_rows), 60), spec)
    m = compute_model_metrics(w, ref, spec)
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["label", "output_label"])
    lab = df[df["label"].notna()] if n else df
    assert m.window_predictions == n and m.window_labeled == len(lab)
    y_true = (lab["label"] == "yes").astype(int).to_numpy()
    y_pred = (lab["output_label"] == "yes").astype(int).to_numpy()
    if len(lab):
        check(m.performance, "accuracy", skm.accuracy_score(y_true, y_pred))
        check(m.performance, "precision", oracle(skm.precision_score, y_true, y_pred))
        check(m.performance, "recall", oracle(skm.recall_score, y_true, y_pred))
        check(m.performance, "f1", oracle(skm.f1_score, y_true, y_pred))
        p_pos = np.array([r["probabilities"].get("yes", r["score"] if r["output_label"] == "yes" else 1 - r["score"])
                          for r in lab.to_dict("records")])
        check(m.performance, "roc_auc", oracle(skm.roc_auc_score, y_true, p_pos))
        check(m.performance, "log_loss", oracle(skm.log_loss, y_true, p_pos))
        check(m.performance, "brier", oracle(skm.brier_score_loss, y_true, p_pos))
        for metric, count, nobs in (("accuracy", np.sum(y_true == y_pred), len(y_true)),
                                    ("precision", np.sum(y_true & y_pred), np.sum(y_pred)),
                                    ("recall", np.sum(y_true & y_pred), np.sum(y_true))):
            if nobs:
                lo, hi = proportion_confint(int(count), int(nobs), alpha=0.05, method="wilson")
                check(m.performance_interval, (metric, "lower"), lo)
                check(m.performance_interval, (metric, "upper"), hi)
            else:
                assert (metric, "lower") not in m.performance_interval
    else:
        assert m.performance == {} and m.performance_interval == {}
    # drift of x (ks: reference of 60 rows) and k (chi2, sparse categories pooled), missing values
    # left out, and the missing-value test of each (Fisher exact on (missing, present) x
    # (reference, window)); all four decided together on Benjamini-Hochberg q-values < drift.alpha
    ref_x = np.array([r["features"].get("x") for r in ref_rows], dtype=float)
    win_x = np.array([r["features"].get("x") for r in rows], dtype=float)
    ref_x, win_x = ref_x[np.isfinite(ref_x)], win_x[np.isfinite(win_x)]
    drift = {(d.feature, d.method): d for d in m.drift}
    pvalues = {}
    if win_x.size:
        want = stats.ks_2samp(ref_x, win_x)
        assert_close(drift["x", "ks"].score, want.statistic)
        assert_close(drift["x", "ks"].pvalue, want.pvalue)
        pvalues["x", "ks"] = want.pvalue
    else:
        assert ("x", "ks") not in drift
    rk = [r["features"]["k"] for r in ref_rows if "k" in r["features"]]
    wk = [r["features"]["k"] for r in rows if "k" in r["features"]]
    if wk:
        cats = sorted(set(rk) | set(wk))
        table = design_pooled_table(np.array([rk.count(c) for c in cats]), np.array([wk.count(c) for c in cats]))
        stat, p = scipy_chi2(table)
        assert_close(drift["k", "chi2"].score, stat)
        assert_close(drift["k", "chi2"].pvalue, p)
        pvalues["k", "chi2"] = p
    for f, ref_present, win_present in (("x", ref_x.size, win_x.size), ("k", len(rk), len(wk))):
        if not n:
            assert (f, "missing") not in drift and f not in m.feature_missing_ratio
            continue
        fisher = stats.fisher_exact([[60 - ref_present, ref_present], [n - win_present, win_present]])
        assert_close(drift[f, "missing"].score, (n - win_present) / n)
        assert_close(m.feature_missing_ratio[f], (n - win_present) / n)
        assert_close(drift[f, "missing"].pvalue, fisher.pvalue)
        pvalues[f, "missing"] = fisher.pvalue
    if pvalues:
        q = multipletests(list(pvalues.values()), method="fdr_bh")[1]
        for f, qf in zip(pvalues, q):
            assert_close(drift[f].qvalue, qf, f"q {f}")
            assert drift[f].threshold == 0.01 and drift[f].detected == (qf < 0.01)
    # data quality
    assert m.data_quality.get(("x", "missing"), 0) == sum(1 for r in rows if r["features"].get("x", 0) is None)
    assert m.data_quality.get(("x", "nan"), 0) == sum(
        1 for r in rows if r["features"].get("x") is not None and math.isnan(r["features"]["x"]))
    assert m.data_quality.get(("k", "missing"), 0) == sum(1 for r in rows if "k" not in r["features"])
    # OOD: the reference's range widened by ood.margin (0.1) x its width on each side
    w = 0.1 * (ref_x.max() - ref_x.min())
    lo, hi = ref_x.min() - w, ref_x.max() + w
    x_ood = [v is not None and not math.isnan(v) and (v < lo or v > hi) for v in (r["features"].get("x") for r in rows)]
    k_ood = [r["features"].get("k") not in (None, *rk) for r in rows]
    if n:
        assert_close(m.feature_ood_ratio["x"], sum(x_ood) / n)
        assert_close(m.ood_ratio, sum(a or b for a, b in zip(x_ood, k_ood)) / n)
    else:
        assert m.ood_ratio is None and m.feature_ood_ratio == {}
    # fairness on rows with the attribute, groups of at least 5 rows
    seg = [r for r in rows if "g" in r["segments"]]
    if seg:
        g = pd.Series([r["segments"]["g"] for r in seg])
        yp = np.array([int(r["output_label"] == "yes") for r in seg])
        counts = g.value_counts()
        big = g.isin(counts[counts >= 5].index).to_numpy()
        if big.any():
            check(m.fairness, ("g", "demographic_parity_difference"),
                  oracle(flm.demographic_parity_difference, yp[big], yp[big], sensitive_features=g[big]))
            check(m.fairness, ("g", "disparate_impact_ratio"),
                  oracle(flm.demographic_parity_ratio, yp[big], yp[big], sensitive_features=g[big]))
        for grp, c in counts.items():
            assert m.group_predictions[("g", grp)] == c
        lseg = [r for r in seg if r["label"] is not None]
        if lseg:
            # equalized odds: groups with >= 5 labeled rows of each class
            lg = pd.Series([r["segments"]["g"] for r in lseg])
            lt = np.array([int(r["label"] == "yes") for r in lseg])
            lp = np.array([int(r["output_label"] == "yes") for r in lseg])
            ok = [gname for gname in lg.unique() if np.sum((lg == gname) & (lt == 1)) >= 5
                  and np.sum((lg == gname) & (lt == 0)) >= 5]
            sel = lg.isin(ok).to_numpy()
            check(m.fairness, ("g", "equalized_odds_difference"),
                  oracle(flm.equalized_odds_difference, lt[sel], lp[sel], sensitive_features=lg[sel])
                  if sel.any() else None)
    for v in (*m.performance.values(), *m.estimated_performance.values(), *m.fairness.values(),
              *m.group_performance.values(), *(d.score for d in m.drift), *m.performance_interval.values(),
              *m.fairness_pvalue.values(), *(d.threshold for d in m.drift)):
        assert math.isfinite(v)


def _regression_window():
    """150 regression predictions (y + 0.1) into a window of 100, every other one labeled y."""
    rng = np.random.default_rng(4)
    buf = WindowBuffer("r", "1", "regression", size=100)
    y = rng.normal(size=150)
    for i in range(150):
        buf.append(dict(prediction_id=str(i), timestamp=float(i), features={"x": float(y[i])}, output_label=None,
                        output_value=float(y[i] + 0.1), score=None, probabilities={}, segments={},
                        label=float(y[i]) if i % 2 else None))
    return buf.snapshot(), y


def test_regression_performance_and_prediction_drift():
    w, y = _regression_window()
    spec = ModelSpec()
    ref = prepare_reference(reference_from_window(w, 30), spec)
    m = compute_model_metrics(w, ref, spec)
    yt, yp = y[50:][1::2], y[50:][1::2] + 0.1
    assert_close(m.performance["mae"], skm.mean_absolute_error(yt, yp))
    assert_close(m.performance["rmse"], skm.root_mean_squared_error(yt, yp))
    assert_close(m.performance["r2"], skm.r2_score(yt, yp))
    pred = {d.feature: d for d in m.drift}["__prediction__"]
    want = stats.ks_2samp(y[50:80] + 0.1, y[50:] + 0.1)
    assert pred.method == "ks" and math.isclose(pred.score, want.statistic) and math.isclose(pred.pvalue, want.pvalue)


def test_multiclass_macro_averages_and_nothing_reference_based_without_a_reference():
    rng = np.random.default_rng(5)
    mc = WindowBuffer("c", "1", "classification", size=100)
    classes = ["a", "b", "c"]
    truth, guess = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    for i in range(80):
        mc.append(dict(prediction_id=str(i), timestamp=float(i), features={}, output_label=classes[guess[i]],
                       output_value=None, score=0.5, probabilities={}, segments={}, label=classes[truth[i]]))
    m = compute_model_metrics(mc.snapshot(), None, ModelSpec())
    yt = [classes[i] for i in truth]
    yp = [classes[i] for i in guess]
    assert_close(m.performance["f1"], skm.f1_score(yt, yp, average="macro"))
    assert_close(m.performance["precision"], skm.precision_score(yt, yp, average="macro"))
    assert m.drift == [] and m.ood_ratio is None and m.estimated_performance == {}


def test_empty_window_has_no_metrics():
    w, _ = _regression_window()
    spec = ModelSpec()
    empty = WindowBuffer("e", "1", "classification", size=10).snapshot()
    prepared = prepare_reference(reference_from_window(w, 30), spec)
    m = compute_model_metrics(empty, prepared, ModelSpec(positive_label="1"))
    assert m.window_predictions == 0 and m.performance == {} and m.drift == [] and m.ood_ratio is None


def test_group_cap_and_drift_detection_and_cbpe():
    rng = np.random.default_rng(9)
    buf = WindowBuffer("m", "1", "classification", size=3000)
    for i in range(3000):
        x = rng.normal(1.0 if i >= 1500 else 0.0)
        p = 1 / (1 + np.exp(-2 * x))
        pred = "1" if p >= 0.5 else "0"
        buf.append(dict(prediction_id=str(i), timestamp=float(i), features={"x": float(x), "z": float(rng.normal())},
                        output_label=pred, output_value=None, score=float(max(p, 1 - p)), probabilities={},
                        segments={"g": f"g{i % 60}"}, label="1" if rng.uniform() < p else "0"))
    w = buf.snapshot()
    spec = ModelSpec(positive_label="1", fairness_attributes=("g",), max_groups_per_attribute=50)
    ref = prepare_reference(reference_from_window(w, 1500), spec)
    m = compute_model_metrics(w, ref, spec)
    drift = {d.feature: d for d in m.drift if d.method != "missing"}
    assert drift["x"].method == "wasserstein" and drift["x"].detected
    assert drift["z"].method == "wasserstein" and not drift["z"].detected
    assert m.cardinality_limited == {"group": 10}
    assert sum(1 for (a, g) in m.group_predictions if a == "g") == 51
    assert m.group_predictions[("g", "__other__")] == 500
    # CBPE estimate follows the realized accuracy of this calibrated model
    assert abs(m.estimated_performance["accuracy"] - m.performance["accuracy"]) <= 0.02


def test_executor_gives_the_same_numbers():
    from concurrent.futures import ThreadPoolExecutor

    rows = make_rows(3, 200, False, 0.5, 1.0)
    w = window_of(rows)
    spec = ModelSpec(positive_label="yes", fairness_attributes=("g",), fairness_min_group_size=5)
    ref = prepare_reference(reference_from_window(window_of(make_rows(4, 100, False, 1.0, 0.0)), 100), spec)
    with ThreadPoolExecutor(2) as pool:
        assert compute_model_metrics(w, ref, spec, pool) == compute_model_metrics(w, ref, spec)


def test_feature_cap_counts_each_cut_feature_once():
    rows = [dict(prediction_id=str(i), timestamp=float(i), features={f"f{j}": float(i * j) for j in range(6)},
                 output_label="1", output_value=None, score=0.5, probabilities={}, segments={}, label=None)
            for i in range(20)]
    w = window_of(rows)
    spec = ModelSpec(max_features=4)
    ref = prepare_reference(reference_from_window(w, 20), spec)
    m = compute_model_metrics(w, ref, spec)
    assert m.cardinality_limited == {"feature": 2}
    assert {d.feature for d in m.drift if not d.feature.startswith("__")} == {"f0", "f1", "f2", "f3"}
    assert set(m.feature_ood_ratio) == {"f0", "f1", "f2", "f3"}
