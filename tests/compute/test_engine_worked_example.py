"""docs/metrics.md's worked example, number by number (the page must stay true)."""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import rows_to_window

ROWS = [(27, "gold", "f", "1", 0.8, "1"), (35, "basic", "m", "0", 0.7, "0"), (62, "gold", "f", "1", 0.9, "1"),
        (48, "gold", "m", "1", 0.6, "0"), (51, "premium", "f", "1", 0.7, None), (39, "basic", "m", "0", 0.8, "0"),
        (70, "gold", "f", "1", 0.9, "1"), (None, "gold", "m", "1", 0.6, None), (44, "basic", "f", "0", 0.9, "1"),
        (58, "gold", "m", "1", 0.7, "1")]


def test_worked_example():
    ref = ReferenceData(
        features={"age": np.array([25, 32, 41, 38, 29, 55, 47, 33, 60, 44], dtype=float),
                  "plan": np.array(["basic"] * 6 + ["gold"] * 4, dtype=object)},
        prediction=np.array(["1"] * 4 + ["0"] * 6, dtype=object),
        score=np.array([0.8, 0.7, 0.9, 0.6, 0.7, 0.8, 0.9, 0.6, 0.9, 0.7]),
        label=np.array(["1", "1", "1", "0", "0", "0", "0", "1", "0", "0"], dtype=object))
    window = rows_to_window("churn", "3", "classification", [dict(
        prediction_id=str(i), timestamp=float(i), features={"age": a, "plan": p}, output_label=o, output_value=None,
        score=s, probabilities={}, segments={"gender": g}, label=lab) for i, (a, p, g, o, s, lab) in enumerate(ROWS)])
    spec = ModelSpec(positive_label="1", fairness_attributes=("gender",), fairness_min_group_size=3)
    m = compute_model_metrics(window, prepare_reference(ref, spec), spec)
    a = pytest.approx
    assert (m.window_predictions, m.window_labeled) == (10, 8)
    assert m.performance == a({"accuracy": 0.75, "precision": 0.8, "recall": 0.8, "f1": 0.8, "roc_auc": 0.8,
                               "log_loss": 0.5737, "brier": 0.18125}, abs=5e-5)
    assert m.performance_interval[("accuracy", "lower")] == a(0.409, abs=5e-4)
    assert m.performance_interval[("accuracy", "upper")] == a(0.929, abs=5e-4)
    assert m.performance_interval[("precision", "lower")] == a(0.376, abs=5e-4)
    assert m.performance_interval[("recall", "upper")] == a(0.964, abs=5e-4)
    assert m.feature_ood_ratio == {"age": 0.1, "plan": 0.1} and m.ood_ratio == 0.2
    assert m.ood_ratio_floor == 0.9
    assert m.data_quality == {("age", "missing"): 1}
    d = {x.feature: x for x in m.drift if x.method != "missing"}
    assert (d["age"].method, d["age"].score, d["age"].pvalue) == ("ks", a(16 / 45), a(0.492, abs=5e-4))
    assert (d["plan"].method, d["plan"].score, d["plan"].pvalue) == ("chi2", a(0.8), a(0.371, abs=5e-4))
    miss = {x.feature: x for x in m.drift if x.method == "missing"}
    assert (miss["age"].score, miss["age"].pvalue) == (0.1, 1.0) and (miss["plan"].score, miss["plan"].pvalue) == (0, 1)
    assert m.feature_missing_ratio == {"age": 0.1, "plan": 0.0}
    # one BH family of four p-values: 0.371 x 4/1, 0.492 x 4/2, 1, 1 -> q = 0.984 for ks and chi2
    assert d["age"].qvalue == d["plan"].qvalue == a(0.984, abs=5e-4)
    assert miss["age"].qvalue == miss["plan"].qvalue == 1.0
    assert (d["__prediction__"].score, d["__prediction__"].qvalue) == (a(1.818, abs=5e-4), a(0.178, abs=5e-4))
    assert all(x.threshold == 0.01 and not x.detected for x in m.drift)
    assert m.fairness == a({("gender", "demographic_parity_difference"): 0.2, ("gender", "disparate_impact_ratio"): 0.75})
    assert m.fairness_pvalue[("gender", "demographic_parity_difference")] == a(0.490, abs=5e-4)
    assert ("gender", "equalized_odds_difference") not in m.fairness
    assert m.group_performance[("gender", "f", "tpr")] == 0.75 and ("gender", "f", "fpr") not in m.group_performance
    assert m.group_performance[("gender", "m", "fpr")] == a(1 / 3) and ("gender", "m", "tpr") not in m.group_performance
    assert m.estimated_performance["accuracy"] == a(0.9)
