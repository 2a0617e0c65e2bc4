"""Seeded false-positive rate: over many undrifted windows, ks and chi2 detect at most alpha
(plus three binomial standard deviations of the count)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_ml_processor.stats.registry import FeatureReference, FeatureWindow, builtin_tests

WINDOWS = 400
ALPHA = 0.05


def limit(n: int, alpha: float) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("alpha", [ALPHA, 0.01])
def test_ks_false_positive_rate(alpha):
    rng = np.random.default_rng(20261125)
    test = builtin_tests()["ks"]
    ref = FeatureReference.build(rng.normal(size=800))
    hits = 0
    for _ in range(WINDOWS):
        res = test.compute(ref, FeatureWindow.build(rng.normal(size=rng.integers(50, 400))), "numeric")
        hits += test.detected(res, alpha)
    assert hits / WINDOWS <= limit(WINDOWS, alpha), hits


@pytest.mark.parametrize("alpha", [ALPHA, 0.01])
def test_chi2_false_positive_rate(alpha):
    rng = np.random.default_rng(7)
    cats = np.array(["a", "b", "c", "d", "e"], dtype=object)
    probs = [0.4, 0.3, 0.15, 0.1, 0.05]
    test = builtin_tests()["chi2"]
    ref = FeatureReference.build(rng.choice(cats, 1000, p=probs))
    hits = 0
    for _ in range(WINDOWS):
        res = test.compute(ref, FeatureWindow.build(rng.choice(cats, rng.integers(100, 500), p=probs)), "categorical")
        hits += test.detected(res, alpha)
    assert hits / WINDOWS <= limit(WINDOWS, alpha), hits


def test_a_drifted_window_is_detected():
    # the same tests do fire on a real shift (so the rate tests above cannot pass vacuously)
    rng = np.random.default_rng(1)
    tests = builtin_tests()
    ref = FeatureReference.build(rng.normal(size=800))
    res = tests["ks"].compute(ref, FeatureWindow.build(rng.normal(0.5, 1, 300)), "numeric")
    assert tests["ks"].detected(res, ALPHA)
    cats = np.array(["a", "b", "c"], dtype=object)
    cref = FeatureReference.build(rng.choice(cats, 1000, p=[0.5, 0.3, 0.2]))
    res = tests["chi2"].compute(cref, FeatureWindow.build(rng.choice(cats, 300, p=[0.3, 0.3, 0.4])), "categorical")
    assert tests["chi2"].detected(res, ALPHA)
