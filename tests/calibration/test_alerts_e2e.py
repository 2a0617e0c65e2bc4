"""Issue 11, the project test: the shipped model-quality alerts, evaluated by a real Prometheus on
a real processor's output, keep their promise on stable models and catch changed ones.

Real processes: ``otel-ml processor`` (console script) fed over OTLP/gRPC on loopback (a thin
encoder, tests/calibration/wire.py), Prometheus scraping it every second with the shipped
recording rules and a copy of the shipped alerts whose ``for:`` is 2s (generate.py's test copy;
expressions as shipped, checked below). Each alert's condition is the shipped alerts file's
``expr``, run as an instant query after every feeding step (tests/calibration/stack.py).

Stable models (tests/calibration/streams.py: every row from the distribution of the model's
reference; numeric features of several shapes including integer counts, categorical ones up to
40 levels, a boolean, a fairness attribute of 7 groups down to 3 % of rows with the same
positive rate in every group, accuracy about 0.9, labels one step late), in cohorts (COHORTS):
the first_n default reference (1 000 predictions) with windows growing to a full 2 000 and
sliding; 1 000-row reference files with windows growing to a full 500 and sliding; low-traffic
models whose windows stay between 100 and 160 rows; 5 000-row reference files with 200-row
windows; a 300-level (Zipf) categorical feature. Every setting not named is the default.

The tolerance, and why (per alert and severity): the evaluations of one model are correlated
(one reference, overlapping windows), so the independent units are the models, not the
evaluations. With X_m the share of model m's evaluations in which the condition was true (in
[0, 1], mean at most 1 % if the promise holds), Hoeffding's bound for independent variables in
[0, 1] gives P(mean X >= x) <= exp(-M KL(x || 0.01)) for M models, whatever the correlation
inside a model. The test fails when that bound is below 0.001: a calibrated pipeline fails it
once in a thousand runs (per alert); the rate it tells apart from 1 % is printed with the table
(about 6 % for 80 models). Finer rates are the statistical tests' job (tests/stats: 2 016
independent windows per family); this one shows that the real pipeline delivers them.
"""

from __future__ import annotations

import math

import pytest
import yaml

from dashboards.prometheus import generate
from otel_ml import semconv as sc
from tests.calibration import streams
from tests.calibration.stack import (
    CalibrationRun, Cohort, expected_labeled, expected_window, shipped_alerts,
)
from tests.support import wait_for

pytestmark = pytest.mark.e2e

PROMISE = 0.01          # about 1 % of evaluations (DESIGN.md, "Decisions")
FAIL_BELOW = 0.001      # the chance that a calibrated pipeline fails one alert's check
GROWING = (100, 200, 400, 800, 1400, 2000, 2600)
SLIDING_500 = (100, 200, 300, 500, 650, 800, 1000)

COHORTS = [
    Cohort("firstn", 8, 2000, GROWING),
    Cohort("refile", 48, 500, SLIDING_500, reference_file=1000),
    Cohort("lowtraffic", 12, 2000, (100, 110, 120, 130, 140, 150, 160), reference_file=1000),
    Cohort("bigref", 8, 200, (100, 140, 200, 300, 400, 500, 600), reference_file=5000),
    Cohort("highcard", 4, 2000, GROWING, high_cardinality=True),
]
CHANGED = [Cohort(change.replace("_", ""), 1, 500, SLIDING_500, reference_file=1000, change=change)
           for change in streams.CHANGES]
#: what each change must raise: (alert, severities)
CAUGHT_BY = {
    "numeric_shift": ("MLFeatureDrift", ("warning",)),
    "category_mix": ("MLFeatureDrift", ("warning",)),
    "out_of_range": ("MLOODRatioHigh", ("warning", "critical")),
    "selection_drop": ("MLFairnessGap", ("warning",)),
    "accuracy_drop": ("MLPerformanceBelowThreshold", ("warning", "critical")),
    "prediction_shift": ("MLPredictionDrift", ("warning",)),
    "correlation_break": ("MLMultivariateDrift", ("warning",)),
    "confidence_drop": ("MLEstimatedPerformanceDrop", ("warning", "critical")),
}
#: an alert's condition can be true only where its own minimum count is met
ELIGIBLE = {
    "MLPerformanceBelowThreshold": lambda window, labeled: labeled >= 30,
    "MLEstimatedPerformanceDrop": lambda window, labeled: window >= 200,
}
#: the 1-day baseline (ending 1 h ago) has no data in a minutes-long run; see BENCHMARKS.md
NOT_MEASURED = {"MLPerformanceBelowBaseline"}


def kl(x: float, p: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(x) from Bernoulli(p)."""
    out = x * math.log(x / p) if x > 0 else 0.0
    return out + ((1 - x) * math.log((1 - x) / (1 - p)) if x < 1 else 0.0)


def hoeffding_tail(mean: float, units: int, p: float = PROMISE) -> float:
    """Bound on P(mean of ``units`` independent [0, 1] variables of mean p >= ``mean``)."""
    return 1.0 if mean <= p else math.exp(-units * kl(mean, p))


def detectable_rate(units: int) -> float:
    """The smallest mean rate this many models tell apart from the promise (bound = FAIL_BELOW)."""
    lo, hi = PROMISE, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if hoeffding_tail(mid, units) <= FAIL_BELOW else (mid, hi)
    return hi


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with CalibrationRun(tmp_path_factory.mktemp("calibration"), COHORTS + CHANGED) as calibration:
        measurement = calibration.measure()
        print("\ncalibration run:", ", ".join(f"{what} {seconds:.1f}s" for what, seconds in measurement.timings))
        yield calibration


@pytest.fixture
def run(stack):
    return stack.measurement


def stable_models(measurement) -> list:
    return [name for name, cohort in measurement.models.items() if not cohort.change]


def rates(measurement, alert: str, severity: str, models: list) -> tuple:
    """(per-model shares of evaluations with the condition true, evaluations, hits)."""
    eligible = ELIGIBLE.get(alert, lambda window, labeled: True)
    hits = measurement.hits[(alert, severity)]
    shares, evaluations, total = [], 0, 0
    for name in models:
        steps = [s for s in range(measurement.steps)
                 if eligible(measurement.window[(name, s)], measurement.labeled[(name, s)])]
        if steps:
            true = sum(name in hits[s] for s in steps)
            shares.append(true / len(steps))
            evaluations += len(steps)
            total += true
    return shares, evaluations, total


def test_test_copy_of_the_alerts_has_the_shipped_expressions(tmp_path):
    _, copy = generate.render_to(generate.load_thresholds(), tmp_path, for_override="2s")
    rules = [r for g in yaml.safe_load(copy.read_text())["groups"] for r in g["rules"]]
    assert [(r["alert"], r["labels"]["severity"], r["expr"]) for r in rules
            if r["alert"] in {a for a, _, _ in shipped_alerts()}] == shipped_alerts()
    assert {r["for"] for r in rules} == {"2s"}


def test_windows_hold_the_predictions_after_the_reference(run):
    """DESIGN.md: the first_n reference is not in the window; the labeled window is the last
    window.size labeled predictions (the reference's excluded), labels arriving one step late."""
    wrong = [(name, s, run.window[(name, s)], expected_window(cohort, s),
              run.labeled[(name, s)], expected_labeled(cohort, s))
             for name, cohort in run.models.items() for s in range(run.steps)
             if (run.window[(name, s)], run.labeled[(name, s)]) != (expected_window(cohort, s), expected_labeled(cohort, s))]
    assert not wrong, f"(model, step, window, expected, labeled, expected): {wrong[:10]}"


@pytest.mark.parametrize("alert, severity", [(a, s) for a, s, _ in shipped_alerts() if a not in NOT_MEASURED])
def test_stable_models_keep_the_promise(run, alert, severity):
    models = stable_models(run)
    shares, evaluations, hits = rates(run, alert, severity, models)
    mean = sum(shares) / len(shares)
    bound = hoeffding_tail(mean, len(shares))
    where = [(step, labels.get(sc.L_MODEL), {k: v for k, v in labels.items() if k in (sc.L_FEATURE, sc.L_ATTRIBUTE, sc.L_METRIC)}, value)
             for step, labels, value in run.detail.get((alert, severity), []) if labels.get(sc.L_MODEL) in models]
    print(f"\n{alert} {severity}: {hits} of {evaluations} evaluations ({hits / evaluations:.2%}), mean per model "
          f"{mean:.2%} over {len(shares)} models; Hoeffding bound {bound:.3g}; tells apart rates above "
          f"{detectable_rate(len(shares)):.1%}. True at: {where[:12]}")
    assert bound > FAIL_BELOW, (f"{alert} ({severity}) is true in {mean:.2%} of a stable model's evaluations "
                                f"({hits} of {evaluations}): more than {PROMISE:.0%} (bound {bound:.2g}); {where[:20]}")


def test_stable_ood_share_is_within_the_runbooks_premise(run):
    """docs/runbook.md: MLOODRatioHigh keeps 1 % while a stable window's OOD fraction is <= 4 %."""
    worst = {}
    for (name, s), value in run.ood.items():
        if not run.models[name].change and not run.models[name].high_cardinality and value is not None:
            worst[name] = max(worst.get(name, 0.0), value)
    assert worst and max(worst.values()) <= 0.04, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.xfail(strict=True, reason="a 300-level categorical feature keeps about 8 % of a stable window "
                   "unseen by a 1 000-row reference: the OOD rule counts the reference's sampling gaps "
                   "(reported to the lead: needs a processor change, not a threshold)")
def test_stable_ood_share_with_a_high_cardinality_feature(run):
    ood = [value for (name, s), value in run.ood.items() if run.models[name].high_cardinality]
    assert ood and max(ood) <= 0.04, f"OOD ratio of the high-cardinality models: {min(ood):.3f} to {max(ood):.3f}"


@pytest.mark.parametrize("change", list(CAUGHT_BY))
def test_changed_streams_are_caught(stack, change):
    run = stack.measurement
    alert, severities = CAUGHT_BY[change]
    model = f"{change.replace('_', '')}-00"
    for severity in severities:
        true_at = [s for s in range(run.steps) if model in run.hits[(alert, severity)][s]]
        print(f"\n{change}: {alert} ({severity}) true at steps {true_at} "
              f"(windows {[run.window[(model, s)] for s in true_at]})")
        assert run.steps - 1 in true_at, f"{streams.CHANGES[change]}: {alert} ({severity}) not true at the end"
        # the test copy's for: is 2s: the condition held since the last step, so the alert fires
        wait_for(lambda: model in stack.firing(alert, severity), timeout=30, interval=0.5,
                 what=f"{alert} ({severity}) firing for {model}")
