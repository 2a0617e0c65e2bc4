"""Drift through the real processor and a real Prometheus (issue 6): a drifted feature is detected,
an undrifted one is not, and over many undrifted windows ks and chi2 fire at most at alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.support import PrometheusProcess, ProcessorProcess, grpc_export, otlp_logs_request, prediction, wait_for

pytestmark = pytest.mark.e2e

REF, WIN = 200, 200        # reference = the first 200 predictions; the window = the 200 after them
UNDRIFTED_MODELS = 40
ALPHA = 0.05


def _rows(model: str, rng: np.random.Generator, shift: float = 0.0, extra_category: float = 0.0) -> list:
    records = []
    for i in range(REF + WIN):
        later = i >= REF
        x = rng.normal(shift if later else 0.0, 1.0)
        y = rng.normal(0.0, 1.0)
        p = [0.5, 0.3, 0.2]
        if later and extra_category:
            p = [0.5 - extra_category, 0.3, 0.2 + extra_category]
        plan = str(rng.choice(["free", "pro", "team"], p=p))
        records.append(prediction(model, f"{model}-{i}", {"x": float(x), "y": float(y), "plan": plan}))
    return records


@pytest.fixture(scope="module")
def drift_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    names = ["drifted"] + [f"calm{i:02d}" for i in range(UNDRIFTED_MODELS)]
    models = [{"name": n, "reference": {"first_n": REF}, "window": {"size": WIN},
               "drift": {"default": {"method": "auto", "threshold": ALPHA}}} for n in names]
    with ProcessorProcess(tmp, models=models) as proc:
        rng = np.random.default_rng(20261125)
        grpc_export(proc.grpc_endpoint, otlp_logs_request(_rows("drifted", rng, shift=0.8, extra_category=0.25)))
        for n in names[1:]:
            grpc_export(proc.grpc_endpoint, otlp_logs_request(_rows(n, rng)))
        with PrometheusProcess(tmp, targets=[proc.metrics_endpoint]) as prom:
            wait_for(lambda: len(prom.query('ml_drift_detected{method=~"ks|chi2", feature!~"__.*"}')) == 3 * len(names),
                     timeout=90, what="drift of every feature of every model in Prometheus")
            yield prom


def test_drifted_features_detected_and_undrifted_one_not(drift_stack):
    prom = drift_stack
    assert prom.value('ml_drift_detected{model="drifted", feature="x", method="ks"}') == 1
    assert prom.value('ml_drift_detected{model="drifted", feature="plan", method="chi2"}') == 1
    assert prom.value('ml_drift_detected{model="drifted", feature="y", method="ks"}') == 0
    assert prom.value('ml_drift_pvalue{model="drifted", feature="x", method="ks"}') < ALPHA


def test_false_positive_rate_of_ks_and_chi2_over_undrifted_windows(drift_stack):
    prom = drift_stack
    for method, features in (("ks", 2), ("chi2", 1)):
        tests = UNDRIFTED_MODELS * features
        fired = prom.value(f'sum(ml_drift_detected{{model=~"calm.*", method="{method}", feature!~"__.*"}})')
        counted = prom.value(f'count(ml_drift_detected{{model=~"calm.*", method="{method}", feature!~"__.*"}})')
        assert counted == tests
        # At most alpha, with three binomial standard deviations of tolerance for the sample size.
        assert fired / tests <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / tests), (method, fired, tests)
