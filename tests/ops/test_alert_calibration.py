"""The minimum counts in dashboards/prometheus/thresholds.yaml keep each guarded model-quality
alert's condition true in at most 1 % of evaluations on a stable model, under the margins that
docs/runbook.md ("What a model-quality alert promises") states, by exact binomial sums; and each
minimum is needed (below it, the same model crosses 1 %).

The Wilson bound is the processor's (statsmodels' ``proportion_confint(method="wilson")``);
here it is computed in closed form for every count at once and held against scipy's
``binomtest(...).proportion_ci(method="wilson")``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm

from dashboards.prometheus import generate

THRESHOLDS = generate.load_thresholds()
RATE = 0.01          # the promise: about 1 % of evaluations
MARGIN = 0.05        # a stable model's usual level is this far on the safe side of its threshold
Z95 = norm.ppf(0.975)
Z_ONE_SIDED = norm.ppf(1 - RATE)


def wilson_upper(k: np.ndarray, n: int) -> np.ndarray:
    """Upper end of the 95 % Wilson score interval of k successes in n."""
    p, z2 = k / n, Z95 * Z95
    return (p + z2 / (2 * n) + Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)


def upper_bound_alert_rate(n: int, accuracy: float, threshold: float) -> float:
    """P(Wilson upper bound < threshold) for n labels of a model whose true accuracy is given."""
    k = np.arange(n + 1)
    return float(binom.pmf(k[wilson_upper(k, n) < threshold], n, accuracy).sum())


def baseline_alert_rate(accuracy: float, n_now: int, n_baseline: int, drop: float) -> float:
    """P(accuracy now < (1 - drop) x baseline) when both are estimates of the same accuracy."""
    k_base = np.arange(n_baseline + 1)
    below = np.ceil((1 - drop) * k_base / n_baseline * n_now) - 1  # largest count strictly below
    return float((binom.pmf(k_base, n_baseline, accuracy) * binom.cdf(below, n_now, accuracy)).sum())


@pytest.mark.parametrize("k, n", [(0, 1), (1, 3), (30, 40), (29, 30), (700, 1000), (5, 5)])
def test_wilson_upper_bound_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").high
    assert wilson_upper(np.array([k]), n)[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("metric, severity", [(m, s) for m in THRESHOLDS["performance"]["metrics"]
                                              if m in generate.INTERVAL_METRICS for s in ("warning", "critical")])
def test_threshold_alert_on_the_upper_bound(metric, severity):
    threshold = THRESHOLDS["performance"]["metrics"][metric][f"{severity}_below"]
    minimum = THRESHOLDS["performance"]["min_labeled"]
    accuracy = threshold + MARGIN
    counts = [*range(minimum, 500), *range(500, 10001, 250)]  # every small count; the rate falls with n
    worst = max(upper_bound_alert_rate(n, accuracy, threshold) for n in counts)
    assert worst <= RATE, f"{metric} < {threshold}: {worst:.4f} of evaluations at {accuracy} from {minimum} labels"
    below_minimum = max(upper_bound_alert_rate(n, accuracy, threshold) for n in range(1, minimum))
    assert below_minimum > RATE, "min_labeled is not what keeps the rate down"


def test_metrics_without_an_interval_need_enough_labels_for_the_margin():
    # a proportion's standard error is at most 0.5 / sqrt(n)
    minimum = THRESHOLDS["performance"]["min_labeled_without_interval"]
    assert Z_ONE_SIDED * 0.5 / math.sqrt(minimum) <= MARGIN


@pytest.mark.parametrize("accuracy", [0.5, 0.6, 0.75, 0.9, 0.99])
def test_baseline_alert_needs_its_labels(accuracy):
    baseline = THRESHOLDS["performance_baseline"]
    assert baseline["metrics"] == ["accuracy"], "the calibration below holds for accuracy (a proportion of all labels)"
    minimum, drop = baseline["min_labeled"], baseline["relative_drop"]
    rate = max(baseline_alert_rate(accuracy, minimum, minimum, drop),
               baseline_alert_rate(accuracy, 10 * minimum, minimum, drop))
    assert rate <= RATE, f"accuracy {accuracy}: {rate:.4f} of evaluations with {minimum} labels"
    if accuracy == 0.5:
        assert baseline_alert_rate(accuracy, 100, 100, drop) > RATE, "min_labeled is not what keeps the rate down"


def test_estimated_performance_window_is_large_enough_for_the_margin():
    # the estimate is a mean of per-row expected correctness in [0.5, 1]: standard error <= 0.25 / sqrt(n)
    minimum = THRESHOLDS["estimated_performance"]["min_window"]
    assert Z_ONE_SIDED * 0.25 / math.sqrt(minimum) <= MARGIN


@pytest.mark.parametrize("severity, stable_fraction", [("warning", 0.04), ("critical", 0.15)])
def test_ood_alert_window(severity, stable_fraction):
    ood = THRESHOLDS["ood_ratio"]
    above, minimum = ood[f"{severity}_above"], ood["min_window"]
    n = np.arange(minimum, 5000)
    worst = binom.sf(np.floor(above * n), n, stable_fraction).max()  # P(OOD rows > above x n)
    assert worst <= RATE, f"{severity}: {worst:.4f} with a stable OOD fraction of {stable_fraction}"
    small = np.arange(10, minimum)
    assert binom.sf(np.floor(above * small), small, stable_fraction).max() > RATE, "min_window does nothing"
