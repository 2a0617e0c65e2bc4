"""The engine's decisions on whole windows: changed data is caught, stable data is not; the
labeled window; one type per feature however the values arrive."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData

SPEC = ModelSpec(positive_label="1", fairness_attributes=("group",), fairness_min_group_size=30)


def window_of(features: dict, pred=None, label=None, segments=None, score=None, start: int = 0) -> WindowData:
    n = len(next(iter(features.values()))) if features else len(pred)
    pred = np.full(n, "0", dtype=object) if pred is None else pred
    return WindowData(
        model="m", model_version="1", task="classification",
        prediction_ids=np.array([f"p{start + i}" for i in range(n)], dtype=object),
        timestamps=np.arange(start, start + n, dtype=float), features=features, output_label=pred,
        output_value=np.full(n, np.nan), score=np.full(n, 0.8) if score is None else score, probabilities={},
        segments=segments or {}, label=np.full(n, None, dtype=object) if label is None else label)


def numeric_data(rng, n: int, d: int = 50, shift: dict | None = None) -> dict:
    out = {f"f{i:02d}": rng.normal(0, 1, n) for i in range(d)}
    for k, v in (shift or {}).items():
        out[k] = out[k] + v
    return out


def drift_of(m, prefix="f"):
    # the distribution tests (each feature's missing-value test runs beside them)
    return {d.feature: d for d in m.drift if d.feature.startswith(prefix) and d.method != sc.METHOD_MISSING}


@pytest.mark.parametrize("ref_rows, method", [(1000, "ks"), (5000, "wasserstein")])
def test_a_shift_of_two_of_fifty_features_is_caught_and_nothing_else(ref_rows, method):
    rng = np.random.default_rng(ref_rows)
    prepared = prepare_reference(ReferenceData(features=numeric_data(rng, ref_rows)), SPEC)
    stable = compute_model_metrics(window_of(numeric_data(rng, 2000)), prepared, SPEC)
    assert {d.method for d in drift_of(stable).values()} == {method}
    assert not any(d.detected for d in stable.drift)
    shifted = compute_model_metrics(window_of(numeric_data(rng, 2000, shift={"f03": 0.5, "f17": 0.5})), prepared, SPEC)
    assert {f for f, d in drift_of(shifted).items() if d.detected} == {"f03", "f17"}


def test_small_windows_need_a_larger_change():
    # 100 rows: the floor (a 64-row window's noise) is well above 0.1, and a 0.5 sd shift on one
    # feature is within it; a 2 sd shift is not
    rng = np.random.default_rng(5)
    prepared = prepare_reference(ReferenceData(features=numeric_data(rng, 5000, d=10)), SPEC)
    m = compute_model_metrics(window_of(numeric_data(rng, 100, d=10, shift={"f01": 2.0})), prepared, SPEC)
    d = drift_of(m)
    assert d["f00"].threshold > 0.3 and d["f05"].threshold > 0.3
    assert d["f01"].detected and not any(x.detected for f, x in d.items() if f != "f01")


@pytest.mark.parametrize("ref_rows, method", [(800, "chi2"), (4000, "jensenshannon")])
def test_a_categorical_mix_change_is_caught(ref_rows, method):
    rng = np.random.default_rng(7)
    cats = np.array(["basic", "gold", "prémium plus"], dtype=object)
    ref = {"plan": rng.choice(cats, ref_rows, p=[0.6, 0.3, 0.1]), "x": rng.normal(size=ref_rows)}
    prepared = prepare_reference(ReferenceData(features=ref), SPEC)
    same = compute_model_metrics(window_of({"plan": rng.choice(cats, 3000, p=[0.6, 0.3, 0.1]),
                                            "x": rng.normal(size=3000)}), prepared, SPEC)
    moved = compute_model_metrics(window_of({"plan": rng.choice(cats, 3000, p=[0.3, 0.3, 0.4]),
                                             "x": rng.normal(size=3000)}), prepared, SPEC)
    assert drift_of(same, "plan")["plan"].method == method
    assert not drift_of(same, "plan")["plan"].detected and drift_of(moved, "plan")["plan"].detected


def test_out_of_range_inputs_raise_the_ood_ratio_and_stable_ones_do_not():
    rng = np.random.default_rng(9)
    prepared = prepare_reference(ReferenceData(features=numeric_data(rng, 1000)), SPEC)
    window = window_of(numeric_data(rng, 5000))
    stable = compute_model_metrics(window, prepared, SPEC)
    # without the margin, 50 features x 2/(n+1) flag about one row in ten
    no_margin = compute_model_metrics(window, prepared, ModelSpec(positive_label="1", ood_margin=0.0))
    assert stable.ood_ratio < 0.03 and no_margin.ood_ratio > 0.06
    x = numeric_data(rng, 5000)
    x["f07"][:500] = 25.0
    broken = compute_model_metrics(window_of(x), prepared, SPEC)
    assert broken.feature_ood_ratio["f07"] == pytest.approx(0.1, abs=0.002)
    assert broken.ood_ratio >= 0.1


def test_the_ood_floor_is_computed_from_the_reference_and_the_window_size():
    # a 300-level Zipf feature: a 1 000-row reference leaves ~8 % of fresh rows unseen
    rng = np.random.default_rng(12)
    levels = np.array([f"z{i:03d}" for i in range(300)], dtype=object)
    zipf = (lambda w: w / w.sum())(1.0 / np.arange(1, 301) ** 0.8)
    ref = {"merchant": rng.choice(levels, 1000, p=zipf), "income": rng.normal(10, 2, 1000)}
    prepared = prepare_reference(ReferenceData(features=ref), SPEC)
    window = window_of({"merchant": rng.choice(levels, 400, p=zipf), "income": rng.normal(10, 2, 400)})
    m = compute_model_metrics(window, prepared, SPEC)
    # by hand: Good-Turing on the reference's counts, the numeric leave-one-value-out count
    counts = np.unique(ref["merchant"], return_counts=True)[1]
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    x = np.sort(ref["income"])
    out = int(x[0] < x[1] - 0.1 * (x[-1] - x[1])) + int(x[-1] > x[-2] + 0.1 * (x[-2] - x[0]))
    p = n1 / 1000 + min(out / 1000, 2 / 1001)
    var = (n1 + 2 * n2 - n1 * n1 / 1000) / 1000 ** 2 + min(out / 1000, 2 / 1001) / 1000
    p_up = p + stats.norm.ppf(1 - SPEC.drift_alpha / 2) * np.sqrt(var)
    assert m.ood_ratio_floor == pytest.approx(stats.binom.ppf(1 - SPEC.drift_alpha / 2, 400, p_up) / 400, rel=1e-12)
    assert 0.05 < m.ood_ratio < m.ood_ratio_floor < 0.3
    # a larger window of the same model: a lower floor (less sampling noise), still above p+
    big = compute_model_metrics(window_of({"merchant": rng.choice(levels, 4000, p=zipf),
                                           "income": rng.normal(10, 2, 4000)}), prepared, SPEC)
    assert p_up < big.ood_ratio_floor < m.ood_ratio_floor
    # no reference, or an empty window: no floor (like the ratio)
    assert compute_model_metrics(window, None, SPEC).ood_ratio_floor is None
    assert compute_model_metrics(window_of({"merchant": levels[:0], "income": np.zeros(0)}), prepared,
                                 SPEC).ood_ratio_floor is None


def fairness_window(rng, n: int, low_group_rate: float) -> WindowData:
    groups = rng.choice(np.array([f"g{i}" for i in range(6)], dtype=object), n)
    rate = np.where(groups == "g0", low_group_rate, 0.5)
    pred = np.where(rng.uniform(size=n) < rate, "1", "0").astype(object)
    label = np.where(rng.uniform(size=n) < 0.5, "1", "0").astype(object)
    return window_of({"x": rng.normal(size=n)}, pred=pred, label=label, segments={"group": groups})


def test_a_groups_selection_rate_falling_is_significant_and_fair_groups_are_not():
    rng = np.random.default_rng(11)
    key = ("group", sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE)
    fair = compute_model_metrics(fairness_window(rng, 600, 0.5), None, SPEC)
    assert fair.fairness_pvalue[key] > 0.01
    unfair = compute_model_metrics(fairness_window(rng, 600, 0.1), None, SPEC)
    assert unfair.fairness_pvalue[key] < 0.01 and unfair.fairness[key] > 0.25
    assert unfair.group_performance[("group", "g0", sc.GROUP_SELECTION_RATE)] < 0.25


def test_falling_accuracy_puts_the_upper_bound_below_the_old_accuracy():
    rng = np.random.default_rng(13)

    def labeled(n, accuracy, start):
        truth = np.where(rng.uniform(size=n) < 0.5, "1", "0").astype(object)
        right = rng.uniform(size=n) < accuracy
        pred = np.where(right, truth, np.where(truth == "1", "0", "1")).astype(object)
        return window_of({"x": rng.normal(size=n)}, pred=pred, label=truth, start=start)

    good = compute_model_metrics(labeled(2000, 0.9, 0), None, SPEC)
    bad = compute_model_metrics(labeled(2000, 0.8, 0), None, SPEC)
    assert good.performance_interval[("accuracy", "lower")] < 0.9 < good.performance_interval[("accuracy", "upper")]
    assert bad.performance_interval[("accuracy", "upper")] < 0.85
    few = compute_model_metrics(labeled(40, 0.8, 0), None, SPEC)   # 40 labels prove nothing yet
    assert few.performance_interval[("accuracy", "upper")] > 0.9


def test_the_labeled_window_is_used_for_performance_and_equalized_odds():
    rng = np.random.default_rng(17)
    # the window: 300 recent predictions, 10 of them labeled; the labeled window: 400 older
    # labeled predictions (their labels came back after they left the window)
    win = fairness_window(rng, 300, 0.5)
    win.label[:] = None
    win.label[:10] = "1"
    old = fairness_window(rng, 400, 0.5)
    old.prediction_ids = np.array([f"old{i}" for i in range(400)], dtype=object)
    old.output_label[:] = old.label          # a perfect model on the labeled rows
    m = compute_model_metrics(win, None, SPEC, labeled=old)
    assert m.window_labeled == 400 and m.window_predictions == 300
    assert m.performance[sc.PERF_ACCURACY] == 1.0
    assert m.fairness[("group", sc.FAIR_EQUALIZED_ODDS_DIFFERENCE)] == 0.0
    # selection rates still come from the window
    sel = {g: v for (a, g, k), v in m.group_performance.items() if k == sc.GROUP_SELECTION_RATE}
    for g, v in sel.items():
        rows = win.segments["group"] == g
        assert v == np.mean(win.output_label[rows] == "1")
    # without it, the window's own labeled rows
    m2 = compute_model_metrics(win, None, SPEC)
    assert m2.window_labeled == 10


def test_booleans_from_a_csv_reference_match_otlp_booleans(tmp_path):
    # the public-dataset case: the file says True/False, the live values are OTLP bools (the
    # ingest writes them "true"/"false"), some clients send 1/0
    from otel_ml_processor.compute.reference import load_reference_file
    rng = np.random.default_rng(19)
    n = 2000
    smoker = rng.uniform(size=n) < 0.3
    age = rng.integers(18, 80, n)
    lines = ["smoker,age,region"] + [f"{s},{a},{r}" for s, a, r in zip(
        np.where(smoker, "True", "False"), age, rng.choice(["north east", "south-west", "Zürich"], n))]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepared = prepare_reference(load_reference_file(str(tmp_path / "ref.csv")), SPEC)
    assert prepared.features["smoker"].value_type == "boolean"
    w = 1000
    live = np.where(rng.uniform(size=w) < 0.3, "true", "false").astype(object)
    region = rng.choice(np.array(["north east", "south-west", "Zürich"], dtype=object), w)
    ages = rng.integers(18, 80, w).astype(float)            # 19 and 19.0 are one number
    m = compute_model_metrics(window_of({"smoker": live, "age": ages, "region": region}), prepared, SPEC)
    assert m.feature_ood_ratio == {"smoker": 0.0, "age": 0.0, "region": 0.0} and m.ood_ratio == 0.0
    assert not any(d.detected for d in m.drift)
    # numbers 1/0 for the boolean read as true/false; "maybe" is a data-quality issue, not a category
    mixed = np.where(rng.uniform(size=w) < 0.3, 1.0, 0.0)
    m = compute_model_metrics(window_of({"smoker": mixed, "age": ages, "region": region}), prepared, SPEC)
    assert m.feature_ood_ratio["smoker"] == 0.0 and not any(d.detected for d in m.drift)
    odd = live.copy()
    odd[:50] = "maybe"
    text_age = ages.astype(object)
    text_age[:20] = "unknown"
    m = compute_model_metrics(window_of({"smoker": odd, "age": text_age, "region": region}), prepared, SPEC)
    assert m.data_quality[("smoker", sc.ISSUE_TYPE_MISMATCH)] == 50
    assert m.data_quality[("age", sc.ISSUE_TYPE_MISMATCH)] == 20
    assert m.feature_ood_ratio["smoker"] == 0.0 and m.feature_ood_ratio["age"] == 0.0
    assert not any(d.detected for d in m.drift)


def test_multivariate_broken_correlation_is_caught():
    rng = np.random.default_rng(23)

    def rows(n, broken=False):
        z = rng.normal(size=n)
        return {"a": z + rng.normal(0, 0.3, n), "b": (-z if broken else z) + rng.normal(0, 0.3, n),
                "c": rng.normal(size=n)}

    prepared = prepare_reference(ReferenceData(features=rows(4000)), SPEC)
    mv = lambda m: next(d for d in m.drift if d.feature == sc.FEATURE_MULTIVARIATE)  # noqa: E731
    stable = mv(compute_model_metrics(window_of(rows(1000)), prepared, SPEC))
    broken = mv(compute_model_metrics(window_of(rows(1000, broken=True)), prepared, SPEC))
    assert not stable.detected and broken.detected and stable.threshold == broken.threshold >= 1.1
