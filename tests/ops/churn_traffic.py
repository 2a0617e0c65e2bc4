"""The traffic behind the dashboard tests: one scikit-learn model server and the explicit SDK API
feeding a processor, so that every panel of the generated dashboards has data.

Used by ``tests/ops/test_grafana_e2e.py`` (processor directly) and
``tests/collector/test_prometheus_path.py`` (through the agent and gateway Collectors).

Example::

    send(server, proc, logger_endpoint=proc.grpc_endpoint, seed=11)   # returns once labels joined
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import requests

import otel_ml
from tests.support import ProcessorProcess, sdk_logger_provider, wait_for

MODEL = {"name": "churn", "task": "classification", "positive_label": "yes", "reference": {"first_n": 40},
         # ks features have q-values, income (psi) a distance score and its noise floor: both kinds are drawn
         "drift": {"default": {"method": "ks"}, "features": {"income": {"method": "psi"}}},
         "fairness": {"attributes": ["gender"], "min_group_size": 5}}
SERVER_ROWS, DIRECT_ROWS = 150, 60


def send(server, proc: ProcessorProcess, logger_endpoint: str, seed: int, timeout: float = 90) -> None:
    """150 predictions through ``server`` (inputs drift after the first 75) and a failing call, then 60
    through ``otel_ml.record_prediction`` (a NaN feature, a sensitive segment, labels sent twice), then
    the server's labels; returns once ``proc``'s labeled window holds every labeled prediction."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(SERVER_ROWS // 5):
        rows = [{"age": float(rng.normal(40 + (25 if i >= SERVER_ROWS // 10 else 0), 12)),
                 "income": float(rng.gamma(2, 2)), "visits": int(rng.integers(0, 20))} for _ in range(5)]
        ids += [(p["id"], p["label"]) for p in server.predict(rows)["predictions"]]
    with pytest.raises((requests.HTTPError, requests.ConnectionError)):  # a failing predict call: the error counter
        server.predict([{"age": "not a number"}])
    # The reference is the first 40 predictions to *arrive*: let the server's buffer ship its rows before the
    # direct records below (income and visits constant) arrive, or the reference could be those, and a
    # constant reference has no multivariate score.
    received = {"model": MODEL["name"], "signal": "prediction"}
    wait_for(lambda: (proc.sample("ml_records_received_total", received) or 0) >= SERVER_ROWS, timeout=timeout,
             what="the model server's predictions received")
    provider = sdk_logger_provider(logger_endpoint, "grpc")
    for i in range(DIRECT_ROWS):
        pid = otel_ml.record_prediction(
            "churn", "1", {"age": float(rng.normal(40, 12)) if i % 20 else math.nan, "income": 4.0, "visits": 3.0},
            label=str(rng.choice(["yes", "no"])), score=float(rng.uniform(0.5, 1)),
            segments={"gender": str(rng.choice(["f", "m"]))}, logger_provider=provider)
        if i < 5:   # replaced by the second label below
            otel_ml.record_label("churn", pid, "no", logger_provider=provider)
        otel_ml.record_label("churn", pid, str(rng.choice(["yes", "no"])), logger_provider=provider)
    provider.shutdown()
    for pid, label in ids:
        requests.post(f"{server.url}/label", json={"id": pid, "value": label if rng.random() < 0.8 else "no"},
                      timeout=10).raise_for_status()
    # every prediction is labeled (the first_n reference's too: the labeled window does not wait for it)
    labeled = SERVER_ROWS + DIRECT_ROWS
    wait_for(lambda: (proc.sample("ml_window_labeled", {"model": "churn"}) or 0) >= labeled, timeout=timeout,
             what="labels joined")
