"""Scale-out: two processor replicas sharing one PostgreSQL (DESIGN.md, "Scale beyond one machine").

Real processes on loopback: two ``otel-ml processor`` replicas on one throwaway PostgreSQL, fed
over OTLP/gRPC by the OTel SDK as the Collector's load-balancing exporter routes them (each
model to one replica), labels sent both to the owner (OTLP) and to the other replica
(``POST /v1/labels``), a real Prometheus scraping both. In order:

1. each model version is owned by the replica that stored its predictions; its labels reach
   the owner's window wherever they entered, and its accuracy there equals scikit-learn's on
   all the labeled rows after its reference; each replica's computed series are its own models' only;
2. a restarted replica (same identity) rebuilds exactly the versions it owns;
3. when the other replica stores a newer prediction, ownership moves: the new owner's window
   holds the stored rows of both, and the former owner stops exporting the version at its next
   compute cycle; the owner's last snapshot is in the database for any replica to read.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import requests
from sklearn.metrics import accuracy_score

import otel_ml
from otel_ml_processor.compute.engine import ModelMetrics
from otel_ml_processor.compute.persist import load
from otel_ml_processor.store.database import Database
from tests.support import PrometheusProcess, ProcessorProcess, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

N = {"alpha": 120, "beta": 90, "gamma": 30}
FIRST_N = 20          # each model's reference: its first 20 predictions, in neither window
#: the series a replica computes for a model (ingest counters count what each replica received)
COMPUTED = ("ml_window_predictions", "ml_window_labeled", "ml_performance", "ml_last_computed_timestamp_seconds")


def _predict(endpoint: str, model: str, n: int, rng: np.random.Generator, start: int = 0) -> dict:
    """Send ``n`` predictions over OTLP/gRPC; returns id -> (predicted, truth)."""
    provider = sdk_logger_provider(endpoint, "grpc")
    rows = {}
    for i in range(start, start + n):
        predicted = str(rng.integers(0, 2))
        truth = predicted if rng.random() < 0.7 else str(1 - int(predicted))
        pid = otel_ml.record_prediction(model, "1", {"x": float(rng.normal())}, label=predicted, score=0.9,
                                        prediction_id=f"{model}-{i}", logger_provider=provider)
        rows[pid] = (predicted, truth)
    provider.shutdown()     # returns once every batch was answered (stored)
    return rows


def _label_otlp(endpoint: str, model: str, rows: dict) -> None:
    provider = sdk_logger_provider(endpoint, "grpc")
    for pid, (_predicted, truth) in rows.items():
        otel_ml.record_label(model, pid, truth, logger_provider=provider)
    provider.shutdown()


def _label_http(proc: ProcessorProcess, model: str, rows: dict) -> None:
    body = [{"model": model, "prediction_id": pid, "value": truth} for pid, (_p, truth) in rows.items()]
    answer = requests.post(f"{proc.http_url}/v1/labels", json=body, timeout=30).json()
    assert answer == {"accepted": len(body), "rejected": 0, "errors": []}


def _models_computed(proc: ProcessorProcess) -> set:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels["model"] for f in text_string_to_metric_families(proc.metrics_text())
            for s in f.samples if s.name in COMPUTED}


def _accuracy_reached(proc: ProcessorProcess, model: str, sent: dict):
    rows = sent     # every labeled prediction, the first_n reference's too (the labeled window does not wait)
    expected = accuracy_score([t for _p, t in rows.values()], [p for p, _t in rows.values()])

    def reached():
        # on the whole labeled window: a partial one could match the number by chance
        if proc.sample("ml_window_labeled", {"model": model}) != len(rows):
            return False
        v = proc.sample("ml_performance", {"model": model, "metric": "accuracy"})
        return v is not None and math.isclose(v, expected, rel_tol=1e-9, abs_tol=1e-12)

    return wait_for(reached, timeout=90, what=f"accuracy {expected} of {model} on {len(rows)} labeled rows")


def test_replicas_own_their_models_and_labels_reach_the_owner(tmp_path, pg_url):
    models = [{"name": m, "task": "classification", "reference": {"first_n": FIRST_N}} for m in N]
    rng = np.random.default_rng(11)
    a = ProcessorProcess(tmp_path / "a", models=models, db_url=pg_url).start()
    b = ProcessorProcess(tmp_path / "b", models=models, db_url=pg_url).start()
    try:
        sent = {"alpha": _predict(a.grpc_endpoint, "alpha", N["alpha"], rng),
                "gamma": _predict(a.grpc_endpoint, "gamma", N["gamma"], rng),
                "beta": _predict(b.grpc_endpoint, "beta", N["beta"], rng)}
        # Labels: alpha's half through its owner (OTLP), half posted to the other replica;
        # beta's all posted to the other replica; gamma's none.
        alpha = list(sent["alpha"].items())
        _label_otlp(a.grpc_endpoint, "alpha", dict(alpha[::2]))
        _label_http(b, "alpha", dict(alpha[1::2]))
        _label_http(a, "beta", sent["beta"])

        # 1. Each model on its owner only, with every label in the owner's window.
        _accuracy_reached(a, "alpha", sent["alpha"])
        _accuracy_reached(b, "beta", sent["beta"])
        with PrometheusProcess(tmp_path, targets=[a.metrics_endpoint, b.metrics_endpoint]) as prom:
            wait_for(lambda: len(prom.query("ml_window_predictions")) == 3, what="every model scraped")
            owner = {r["metric"]["model"]: r["metric"]["instance"] for r in prom.query("ml_window_predictions")}
            assert owner == {"alpha": a.metrics_endpoint, "gamma": a.metrics_endpoint, "beta": b.metrics_endpoint}
            for name in COMPUTED:
                for r in prom.query(name):
                    assert owner[r["metric"]["model"]] == r["metric"]["instance"], (name, r["metric"])
        assert a.sample("ml_window_predictions", {"model": "alpha"}) == N["alpha"] - FIRST_N
        db = Database(pg_url)
        owners = {(v.model, v.model_version): v.owner for v in db.model_owners()}
        assert owners[("alpha", "1")] == owners[("gamma", "1")] != owners[("beta", "1")]

        # 2. A restarted replica (same identity: host and endpoint) rebuilds its own versions only.
        before = {n: a.sample(n, {"model": "alpha", **({"metric": "accuracy"} if n == "ml_performance" else {})})
                  for n in COMPUTED[:3]}
        assert a.stop() == 0
        a.start()
        assert _models_computed(a) == {"alpha", "gamma"}       # computed once before it is ready
        after = {n: a.sample(n, {"model": "alpha", **({"metric": "accuracy"} if n == "ml_performance" else {})})
                 for n in COMPUTED[:3]}
        assert after == before

        # 3. Ownership moves with the latest stored prediction.
        moved = _predict(b.grpc_endpoint, "alpha", 10, rng, start=N["alpha"])
        stored_at = time.time()
        _label_http(a, "alpha", moved)                         # to the former owner
        everything = {**sent["alpha"], **moved}
        _accuracy_reached(b, "alpha", everything)              # A's rows and B's, every label
        # The former owner drops it at the first cycle that starts after the takeover: wait for
        # two of its cycles computed after that moment (gamma's timestamps), then look.
        cycles = set()

        def two_cycles_later():
            t = a.sample("ml_last_computed_timestamp_seconds", {"model": "gamma"})
            if t is not None and t > stored_at:
                cycles.add(t)
            return len(cycles) >= 2

        wait_for(two_cycles_later, timeout=60, what="two compute cycles of the former owner")
        assert _models_computed(a) == {"gamma"}
        assert _models_computed(b) == {"alpha", "beta"}
        info = {v.model: v for v in db.model_owners()}
        assert info["alpha"].owner == owners[("beta", "1")] and info["alpha"].takeovers == 1

        # The owner's last computed snapshot, readable by anyone from the database.
        def snapshot():
            row = db.latest_snapshot("alpha", "1")
            return row if row is not None and row.owner == info["alpha"].owner else None

        row = wait_for(snapshot, what="the new owner's snapshot of alpha")
        metrics = load(row.metrics)
        assert isinstance(metrics, ModelMetrics) and metrics.window_predictions == N["alpha"] - FIRST_N + 10
        db.close()
    finally:
        a.stop()
        b.stop()
