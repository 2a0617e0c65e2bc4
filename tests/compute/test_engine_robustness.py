"""Seeded garbage-in test: mixed types, NaN/inf, missing everything, tiny windows, odd configs —
the engine never raises and never returns a non-finite value."""

from __future__ import annotations

import math
import random

import pytest

from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import prepare_reference, reference_from_window
from otel_ml_processor.compute.window import WindowBuffer
from otel_ml_processor.stats.registry import DriftConfigError

VALUES = [None, 0, 1, 2.5, -3, float("nan"), float("inf"), "a", "b", True, False, "1", 10**20, 1e-300]


def random_rows(rnd: random.Random, k: int, prefix: str) -> list[dict]:
    def value():
        return rnd.choice(VALUES) if rnd.random() < 0.5 else rnd.gauss(0, 1)

    return [dict(
        prediction_id=f"{prefix}{i}", timestamp=rnd.random() * 100,
        features={f"f{j}": value() for j in range(rnd.randint(0, 4)) if rnd.random() < 0.8},
        output_label=rnd.choice([None, "1", "0", "a", 1]),
        output_value=rnd.choice([None, 1.0, float("nan"), "x", 2]),
        score=rnd.choice([None, 0.3, 0.9, 1.5, -0.1, float("nan")]),
        probabilities=rnd.choice([{}, {"1": rnd.random()}, {"1": None}, {"a": "x"}]),
        segments=rnd.choice([{}, {"g": rnd.choice(["u", "v", None, 3])}]),
        label=rnd.choice([None, "1", "0", 1.5, "a", float("nan")]),
    ) for i in range(k)]


@pytest.mark.parametrize("seed", range(4))
def test_engine_never_raises_nor_returns_non_finite(seed):
    rnd = random.Random(seed)
    for _ in range(60):
        task = rnd.choice(["classification", "regression"])
        buf = WindowBuffer("m", "1", task, size=rnd.randint(1, 30), max_age=rnd.choice([None, 50.0]))
        for r in random_rows(rnd, rnd.randint(0, 40), "r") + random_rows(rnd, rnd.randint(0, 40), "w"):
            buf.append(r)
        buf.set_label(f"w{rnd.randint(0, 40)}", rnd.choice(["1", None, 2.0]))
        w = buf.snapshot(now=rnd.choice([None, 100.0]))
        spec = ModelSpec(task=rnd.choice([None, task]), positive_label=rnd.choice([None, "1", "a"]),
                         fairness_attributes=("g",), fairness_min_group_size=rnd.choice([1, 3]),
                         drift_default_method=rnd.choice(["auto", "psi", "jensenshannon", "chi2"]),
                         max_features=rnd.choice([1, 500]), max_groups_per_attribute=rnd.choice([1, 50]))
        ref = None
        if len(w) and rnd.random() < 0.8:
            try:
                ref = prepare_reference(reference_from_window(w, rnd.randint(1, len(w))), spec)
            except DriftConfigError:
                pass  # e.g. chi2 as the default is fine, psi on a column of strings is not
        m = compute_model_metrics(w, ref, spec)
        numbers = [*m.performance.values(), *m.estimated_performance.values(), *m.fairness.values(),
                   *m.group_performance.values(), *m.feature_ood_ratio.values(),
                   *(d.score for d in m.drift), *(d.pvalue for d in m.drift if d.pvalue is not None)]
        assert all(math.isfinite(v) for v in numbers)
        assert m.ood_ratio is None or 0 <= m.ood_ratio <= 1
        assert m.window_predictions == len(w)
