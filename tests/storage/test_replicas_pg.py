"""Scale-out: two processor replicas sharing one PostgreSQL (DESIGN.md, "Scale beyond one machine").

Real processes on loopback: two ``otel-ml processor`` replicas on one throwaway PostgreSQL, fed
over OTLP/gRPC by the OTel SDK, labels sent both over OTLP and to the other replica
(``POST /v1/labels``), a real Prometheus scraping both. In order:

1. any replica stores any model (alpha's predictions go to both); each model version is computed
   by the holder of its lease, and the leases spread (each replica holds some); its labels reach
   the holder's window wherever they entered, and its accuracy there equals scikit-learn's on
   all the labeled rows after its reference; each model's computed series are on one replica only;
2. a replica stopped (SIGTERM releases its leases): the other computes every model, from the
   database, with the same values; started again, it takes some leases back;
3. the holder's last snapshot is in the database for any replica to read.
"""

from __future__ import annotations

import math

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


def _holders(db: Database) -> dict:
    return {v.model: v.owner for v in db.model_owners()}


def _exported_once(a: ProcessorProcess, b: ProcessorProcess) -> dict:
    """{model: the one replica exporting it}, or {} while a model is on both or on neither."""
    on_a, on_b = _models_computed(a), _models_computed(b)
    if on_a & on_b or on_a | on_b != set(N):
        return {}
    return {m: (a if m in on_a else b) for m in N}


def test_replicas_share_models_by_lease_and_labels_reach_the_holder(tmp_path, pg_url):
    models = [{"name": m, "task": "classification", "reference": {"first_n": FIRST_N}} for m in N]
    rng = np.random.default_rng(11)
    a = ProcessorProcess(tmp_path / "a", models=models, db_url=pg_url).start()
    b = ProcessorProcess(tmp_path / "b", models=models, db_url=pg_url).start()
    db = Database(pg_url)
    try:
        # alpha through both replicas (stateless ingest), one after the other: stored in this order
        sent = {"alpha": {**_predict(a.grpc_endpoint, "alpha", N["alpha"] // 2, rng),
                          **_predict(b.grpc_endpoint, "alpha", N["alpha"] - N["alpha"] // 2, rng,
                                     start=N["alpha"] // 2)},
                "gamma": _predict(a.grpc_endpoint, "gamma", N["gamma"], rng),
                "beta": _predict(b.grpc_endpoint, "beta", N["beta"], rng)}
        alpha = list(sent["alpha"].items())
        _label_otlp(a.grpc_endpoint, "alpha", dict(alpha[::2]))
        _label_http(b, "alpha", dict(alpha[1::2]))
        _label_http(a, "beta", sent["beta"])

        # 1. Leases spread; each model on its holder only, with every label in the holder's window.
        owner = wait_for(lambda: _exported_once(a, b) if len(set(_holders(db).values()) - {None}) == 2 else {},
                         what="three models over two replicas, each exported once")
        _accuracy_reached(owner["alpha"], "alpha", sent["alpha"])
        _accuracy_reached(owner["beta"], "beta", sent["beta"])
        with PrometheusProcess(tmp_path, targets=[a.metrics_endpoint, b.metrics_endpoint]) as prom:
            wait_for(lambda: len(prom.query("ml_window_predictions")) == 3, what="every model scraped")
            instance = {r["metric"]["model"]: r["metric"]["instance"] for r in prom.query("ml_window_predictions")}
            assert instance == {m: p.metrics_endpoint for m, p in owner.items()}
            for name in COMPUTED:
                for r in prom.query(name):
                    assert instance[r["metric"]["model"]] == r["metric"]["instance"], (name, r["metric"])
        assert owner["alpha"].sample("ml_window_predictions", {"model": "alpha"}) == N["alpha"] - FIRST_N

        # 2. One replica stops: the other computes everything, from the database, the same values.
        before = {m: owner[m].sample("ml_window_predictions", {"model": m}) for m in N}
        accuracy = owner["alpha"].sample("ml_performance", {"model": "alpha", "metric": "accuracy"})
        assert a.stop() == 0
        wait_for(lambda: _models_computed(b) == set(N), what="b computes every model")
        assert {m: b.sample("ml_window_predictions", {"model": m}) for m in N} == before
        assert b.sample("ml_performance", {"model": "alpha", "metric": "accuracy"}) == accuracy
        a.start()
        back = wait_for(lambda: _exported_once(a, b) if _models_computed(a) else {}, timeout=60,
                        what="a takes leases back, each model exported once")
        assert {m: back[m].sample("ml_window_predictions", {"model": m}) for m in N} == before

        # 3. The holder's last computed snapshot, readable by anyone from the database.
        holder = _holders(db)["alpha"]

        def snapshot():
            row = db.latest_snapshot("alpha", "1")
            return row if row is not None and row.owner == holder else None

        row = wait_for(snapshot, what="the holder's snapshot of alpha")
        metrics = load(row.metrics)
        assert isinstance(metrics, ModelMetrics) and metrics.window_predictions == N["alpha"] - FIRST_N
    finally:
        db.close()
        a.stop()
        b.stop()
