"""Per-feature histograms of the compute cycle (compute/histograms.py) against independent counts:
``np.histogram`` for the numeric bins, a plain loop for the OOD bars and the categories."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.histograms import (
    CATEGORICAL, NUMERIC, NUMERIC_BINS, categorical_histogram, numeric_histogram,
)
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _bar(x: float, lo: float, hi: float) -> int:
    """The documented rule, one value at a time: 0 below, 1..NUMERIC_BINS inside, NUMERIC_BINS + 1 above."""
    if x < lo:
        return 0
    if x > hi:
        return NUMERIC_BINS + 1
    return 1 + min(NUMERIC_BINS - 1, math.floor((x - lo) * (NUMERIC_BINS / (hi - lo))))


@settings(max_examples=150, deadline=None)
@given(ref=st.lists(finite, min_size=1, max_size=60),
       cur=st.lists(finite | st.sampled_from([float("nan"), float("inf"), -float("inf")]), max_size=60),
       margin=st.sampled_from([0.0, 0.1, 0.5]))
def test_numeric_bars_follow_the_documented_rule_and_np_histogram(ref, cur, margin):
    r, c = np.array(ref), np.array(cur)
    h = numeric_histogram("x", r, c, margin=margin)
    lo, hi = min(ref), max(ref)
    span = hi - lo
    lo, hi = (lo - 0.5, hi + 0.5) if span == 0 or not math.isfinite(NUMERIC_BINS / span) else (lo - margin * span, hi + margin * span)
    assert h.kind == NUMERIC and len(h.edges) == NUMERIC_BINS + 1
    assert (h.edges[0], h.edges[-1]) == (lo, hi)
    present = [x for x in cur if math.isfinite(x)]
    assert h.n_reference == len(ref) and h.n_window == len(present)
    width = (hi - lo) / NUMERIC_BINS
    for values, fractions in ((ref, h.reference), (present, h.window)):
        n = len(values)
        counts = [round(f * n) for f in fractions] if n else [0] * len(fractions)
        assert counts == np.bincount([_bar(x, lo, hi) for x in values], minlength=NUMERIC_BINS + 2).tolist()
        # np.histogram agrees wherever no value sits within rounding of an inner edge
        inside = [x for x in values if lo <= x <= hi]
        if all(min(abs(x - e) for e in h.edges[1:-1]) > 1e-9 * width for x in inside):
            assert counts[1:-1] == np.histogram(inside, bins=np.array(h.edges))[0].tolist()
    # the reference never lies outside its own bounds; the window's OOD fraction is the two end bars
    assert h.reference[0] == h.reference[-1] == 0
    if present:
        ood = sum(x < lo or x > hi for x in present) / len(present)
        assert h.ood_window == pytest.approx(ood, abs=1e-12)
        assert sum(h.window) == pytest.approx(1.0)


@settings(max_examples=150, deadline=None)
@given(ref=st.lists(st.sampled_from("abcdefghijklmn"), min_size=1, max_size=80),
       cur=st.lists(st.sampled_from("abcxyz") | st.none(), max_size=80), top=st.integers(1, 6))
def test_categorical_top_other_unseen_equal_a_plain_count(ref, cur, top):
    h = categorical_histogram("plan", np.array(ref, dtype=object), np.array(cur, dtype=object), top=top)
    rc = Counter(ref)
    order = sorted(rc, key=lambda k: (-rc[k], k))
    shown = order[:top]
    assert h.kind == CATEGORICAL and list(h.categories) == shown
    present = [x for x in cur if x is not None]
    wc = Counter(present)
    exp_ref = [rc[k] for k in shown] + [sum(rc[k] for k in order[top:]), 0]
    exp_win = [wc[k] for k in shown] + [sum(wc[k] for k in order[top:]), sum(v for k, v in wc.items() if k not in rc)]
    assert [round(f * len(ref)) for f in h.reference] == exp_ref
    assert [round(f * len(present)) for f in h.window] == exp_win if present else all(f == 0 for f in h.window)


def test_numeric_values_with_few_distinct_values_are_labeled_as_numbers():
    h = categorical_histogram("n", np.array([1.0, 1.0, 2.0, 0.5]), np.array([2.0, 3.0, np.nan]))
    assert h.categories == ("1", "0.5", "2") and h.window == (0.0, 0.0, 0.5, 0.0, 0.5)


def _window(n: int, features: dict, labels=None) -> WindowData:
    return WindowData(
        model="m", model_version="1", task="classification",
        prediction_ids=np.array([str(i) for i in range(n)], dtype=object), timestamps=np.arange(n, dtype=float),
        features=features, output_label=np.array(["1" if i % 3 else "0" for i in range(n)], dtype=object),
        output_value=np.full(n, np.nan), score=np.full(n, 0.8), probabilities={}, segments={},
        label=np.full(n, None, dtype=object) if labels is None else labels)


def test_engine_fills_feature_histograms_in_the_snapshot():
    rng = np.random.default_rng(3)
    n = 400
    ref = ReferenceData(features={"x": rng.normal(size=n), "plan": rng.choice(np.array(["a", "b", "c"], dtype=object), n),
                                  "flag": rng.choice([0.0, 1.0], n)},
                        prediction=np.array(["1", "0"] * (n // 2), dtype=object), task="classification")
    spec = ModelSpec(positive_label="1")
    prepared = prepare_reference(ref, spec)
    x = rng.normal(3, 1, n)
    x[:5] = np.nan
    plan = rng.choice(np.array(["a", "z"], dtype=object), n)
    m = compute_model_metrics(_window(n, {"x": x, "plan": plan, "flag": rng.choice([0.0, 1.0], n)}), prepared, spec)
    hx, hp, hf = m.feature_histograms["x"], m.feature_histograms["plan"], m.feature_histograms["flag"]
    assert hx.kind == NUMERIC and hx.n_window == n - 5
    # the chart's OOD bars hold the window's values beyond the reference's widened range
    lo, hi = hx.edges[0], hx.edges[-1]
    assert hx.ood_window == pytest.approx(np.count_nonzero((x > hi) | (x < lo)) / (n - 5))
    assert hp.kind == CATEGORICAL and set(hp.categories) == {"a", "b", "c"}
    assert hp.ood_window == pytest.approx(np.count_nonzero(plan == "z") / n)
    assert hf.kind == CATEGORICAL and hf.categories in (("0", "1"), ("1", "0"))   # 2 distinct values: categories
    pred = m.feature_histograms[sc.FEATURE_PREDICTION]
    assert pred.kind == CATEGORICAL and set(pred.categories) == {"0", "1"}
    # no reference yet: nothing to compare, no histogram
    assert compute_model_metrics(_window(n, {"x": x}), None, spec).feature_histograms == {}
