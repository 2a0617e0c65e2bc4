"""Label-free estimates on awkward rows (issue 21): what NannyML's oracle data never has.
Missing and unseen values are data, not crashes; rows that cannot be estimated are left out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_ml import semconv as sc
from otel_ml_processor.stats import sampling_error
from otel_ml_processor.stats.cbpe_multiclass import MulticlassCBPE, needs_calibration
from otel_ml_processor.stats.dle import DLE

CLASSES = ["a", "b", "c"]


def _multiclass(rng, n):
    p = rng.dirichlet([2, 2, 2], n)
    labels = np.array([rng.choice(CLASSES, p=row) for row in p], dtype=object)
    return p, labels, np.array(CLASSES, dtype=object)[p.argmax(axis=1)]


def test_multiclass_leaves_out_rows_without_every_probability_and_follows_its_definition():
    rng = np.random.default_rng(1)
    p, labels, preds = _multiclass(rng, 800)
    cbpe = MulticlassCBPE.fit(CLASSES, p, labels, preds)
    wp, _, wpred = _multiclass(rng, 300)
    holed = wp.copy()
    holed[:20, 1] = np.nan                      # a class probability not sent
    wpred_holed = wpred.copy()
    wpred_holed[20:30] = None                   # no predicted label: still counts for roc_auc
    est, rows = cbpe.estimate(holed, wpred_holed)
    assert rows[sc.PERF_ACCURACY] == 270 and rows[sc.PERF_ROC_AUC] == 280
    # accuracy by its definition: the calibrated, renormalised probability of the predicted class
    q = cbpe.calibrate(wp[30:])
    col = np.array([CLASSES.index(c) for c in wpred[30:]])
    assert est[sc.PERF_ACCURACY] == pytest.approx(float(np.mean(q[np.arange(270), col])), rel=1e-12)
    # macro precision from the expected per-class counts
    precision = [np.sum(q[:, k] * (col == k)) / np.sum(col == k) for k in range(3)]
    assert est[sc.PERF_PRECISION] == pytest.approx(float(np.mean(precision)), rel=1e-12)
    bounds = cbpe.intervals(est, rows)
    for metric, value in est.items():
        assert 0 <= bounds[(metric, sc.BOUND_LOWER)] <= value <= bounds[(metric, sc.BOUND_UPPER)] <= 1
    assert cbpe.estimate(np.full((5, 3), np.nan), wpred[:5]) == ({}, {})


def test_calibration_is_skipped_where_nannyml_skips_it_and_applied_to_overconfident_scores():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.95, 3000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert not needs_calibration(np.zeros(p.size, dtype=int), p)      # one class only
    assert not needs_calibration(y, np.where(y == 1, 0.6, 0.4) + rng.uniform(0, 0.01, p.size))  # AUROC > 0.999
    sharp = np.where(p > 0.5, 0.5 + (p - 0.5) * 0.2 + 0.4, p * 0.2)   # far from the label rates
    assert needs_calibration(y, np.clip(sharp, 0, 1))


def test_dle_handles_missing_numbers_missing_text_and_unseen_categories():
    rng = np.random.default_rng(3)
    n = 600
    x = rng.normal(0, 1, n)
    plan = rng.choice(["free", "pro"], n).astype(object)
    pred = 2 * x
    label = pred + rng.normal(0, 1, n) * np.where(plan == "pro", 3.0, 1.0)
    dle = DLE.fit({"x": x, "plan": plan}, pred, label)
    assert dle is not None and dle.categories == {"plan": ["free", "pro"]}
    wx = rng.normal(0, 1, 50)
    wx[:5] = np.nan
    wplan = np.array(["pro"] * 40 + [None] * 5 + ["team"] * 5, dtype=object)   # missing and unseen
    wpred = 2 * np.nan_to_num(wx)
    wpred[-1] = np.nan                          # no prediction: left out
    est, rows = dle.estimate({"x": wx, "plan": wplan}, wpred)
    assert rows == 49 and set(est) == {sc.PERF_MAE, sc.PERF_RMSE}
    assert all(math.isfinite(v) and v >= 0 for v in est.values())
    # the "pro" rows' error is 3x larger: the estimate sees it
    free, _ = dle.estimate({"x": wx[5:40], "plan": np.array(["free"] * 35, dtype=object)}, wpred[5:40])
    pro, _ = dle.estimate({"x": wx[5:40], "plan": np.array(["pro"] * 35, dtype=object)}, wpred[5:40])
    assert pro[sc.PERF_MAE] > 2 * free[sc.PERF_MAE]
    # a feature the window never sent is missing in every row, not an error
    assert dle.estimate({"x": wx}, wpred)[1] == 49
    assert DLE.fit({"x": x}, pred, np.full(n, np.nan)) is None


def test_interval_is_three_sampling_errors_clipped():
    assert sampling_error.interval(0.9, 0.5, 100) == (pytest.approx(0.75), 1.0)
    assert sampling_error.interval(10.0, 30.0, 4, upper_limit=None) == (0.0, 55.0)
    assert sampling_error.interval(0.5, None, 100) is None
    assert sampling_error.interval(0.5, 0.1, 0) is None
    # binary accuracy's coefficient is the std of the reference's correctness (NannyML's)
    y, yp = np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])
    assert sampling_error.binary_coefficients(y, yp)[sc.PERF_ACCURACY] == pytest.approx(np.std([1, 0, 1, 0]))


def test_binary_interval_without_reference_labels_comes_from_the_window():
    from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
    from otel_ml_processor.compute.reference import prepare_reference, reference_from_window
    from otel_ml_processor.compute.window import WindowBuffer

    rng = np.random.default_rng(4)
    buf = WindowBuffer("m", "1", sc.TASK_CLASSIFICATION, size=1000)
    for i in range(1000):
        p = float(rng.uniform(0.05, 0.95))
        buf.append(dict(prediction_id=str(i), timestamp=float(i), features={"x": float(rng.normal())},
                        output_label="1" if p >= 0.5 else "0", output_value=None, score=max(p, 1 - p),
                        probabilities={}, segments={}, label=None))          # no label anywhere
    w = buf.snapshot()
    spec = ModelSpec(positive_label="1")
    m = compute_model_metrics(w, prepare_reference(reference_from_window(w, 400), spec), spec)
    est = m.estimated_performance[sc.PERF_ACCURACY]
    right = np.maximum(w.score, 1 - w.score)     # uncalibrated: each row's chance of being right
    half = 3 * math.sqrt(float(np.sum(right * (1 - right)))) / right.size   # Poisson-binomial SE of the count / n
    assert est == pytest.approx(float(np.mean(right)), rel=1e-12)
    assert m.estimated_performance_interval[(sc.PERF_ACCURACY, sc.BOUND_LOWER)] == pytest.approx(est - half, rel=1e-12)
    assert m.estimated_performance_interval[(sc.PERF_ACCURACY, sc.BOUND_UPPER)] == pytest.approx(est + half, rel=1e-12)
    assert (sc.PERF_PRECISION, sc.BOUND_LOWER) not in m.estimated_performance_interval   # needs reference labels


def test_reference_file_probability_columns_are_read_and_checked(tmp_path):
    from otel_ml_processor.compute.reference import ReferenceError, load_reference_file

    good = tmp_path / "ref.csv"
    good.write_text("x,__prediction__,__label__,__probability_a__,__probability_b__\n1,a,a,0.7,0.3\n2,b,a,0.4,\n")
    ref = load_reference_file(str(good), features=["x"])     # the probability columns are not features
    assert sorted(ref.probabilities) == ["a", "b"]
    assert ref.probabilities["a"].tolist() == [0.7, 0.4] and math.isnan(ref.probabilities["b"][1])
    bad = tmp_path / "bad.csv"
    bad.write_text("x,__probability_a__\n1,high\n")
    with pytest.raises(ReferenceError, match="__probability_a__ must hold numbers"):
        load_reference_file(str(bad))


def test_a_deferred_fit_never_blocks_nor_breaks_the_cycle():
    import threading

    from otel_ml_processor.compute.deferred import Deferred

    assert Deferred(lambda: 1 / 0, "broken").result(timeout=30) is None     # logged, no estimate
    gate = threading.Event()
    slow = Deferred(lambda: gate.wait(30) and "fitted", "slow")
    assert slow.ready() is None              # the engine reads this: no estimate yet, no wait
    gate.set()
    assert slow.result(timeout=30) == "fitted" and slow.ready() == "fitted"
