"""Scale-out: two processor replicas sharing one PostgreSQL (issue 5, item 6).

Each replica gets the predictions and labels of one model, as the Collector's
``loadbalancing`` exporter routes them by ``ml.model.name``; a real Prometheus scrapes both.
Each replica exports its own model's window and accuracy (equal to scikit-learn's on the rows
sent) and nothing of the other model; the one database holds both models' rows; a replica
that restarts rebuilds its model's window from the database.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sklearn.metrics import accuracy_score

import otel_ml
from otel_ml_processor.store.database import engine_url
from tests.support import PrometheusProcess, ProcessorProcess, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

N = {"alpha": 120, "beta": 90}


def _feed(endpoint: str, model: str, n: int, rng: np.random.Generator) -> tuple:
    provider = sdk_logger_provider(endpoint, "grpc")
    predicted = rng.choice(["0", "1"], n)
    truth = np.where(rng.random(n) < 0.7, predicted, np.where(predicted == "1", "0", "1"))
    ids = [otel_ml.record_prediction(model, "1", {"x": float(rng.normal())}, label=str(predicted[i]), score=0.9,
                                     logger_provider=provider) for i in range(n)]
    provider.force_flush()
    for i in range(n):
        otel_ml.record_label(model, ids[i], str(truth[i]), logger_provider=provider)
    provider.shutdown()
    return truth, predicted


def test_two_replicas_share_one_postgresql(tmp_path, pg_url):
    models = [{"name": m, "task": "classification", "reference": {"first_n": 50}} for m in N]
    rng = np.random.default_rng(11)
    with ProcessorProcess(tmp_path / "a", models=models, db_url=pg_url) as a, \
            ProcessorProcess(tmp_path / "b", models=models, db_url=pg_url) as b:
        replicas = {"alpha": a, "beta": b}
        sent = {m: _feed(replicas[m].grpc_endpoint, m, N[m], rng) for m in N}
        with PrometheusProcess(tmp_path, targets=[a.metrics_endpoint, b.metrics_endpoint]) as prom:
            for model, proc in replicas.items():
                expected = accuracy_score(*sent[model])
                target = f'instance="{proc.metrics_endpoint}",model="{model}"'

                def accuracy():
                    # on the whole labeled window: a partial one could match the number by chance
                    if prom.value(f'ml_window_labeled{{{target}}}') != N[model]:
                        return False
                    v = prom.value(f'ml_performance{{{target},metric="accuracy"}}')
                    return v is not None and math.isclose(v, expected, rel_tol=1e-9, abs_tol=1e-12)

                wait_for(accuracy, timeout=60, what=f"accuracy {expected} of {model} from its replica")
                assert prom.value(f'ml_window_predictions{{{target}}}') == N[model]
                assert prom.value(f'ml_window_labeled{{{target}}}') == N[model]
                assert prom.value(f'ml_labels_joined_total{{{target}}}') == N[model]
            # Each model is exported by exactly one replica: the one it is routed to.
            for model, proc in replicas.items():
                assert len(prom.query(f'ml_window_predictions{{model="{model}"}}')) == 1
                other = b if proc is a else a
                assert prom.query(f'ml_window_predictions{{instance="{other.metrics_endpoint}",model="{model}"}}') == []
    # A replica that restarts rebuilds its model's window from the shared database.
    with ProcessorProcess(tmp_path / "a2", models=models, db_url=pg_url) as again:
        expected = accuracy_score(*sent["alpha"])
        wait_for(lambda: again.sample("ml_window_labeled", {"model": "alpha"}) == N["alpha"], what="rebuilt window")
        assert again.sample("ml_window_predictions", {"model": "alpha"}) == N["alpha"]
        accuracy = wait_for(lambda: again.sample("ml_performance", {"model": "alpha", "metric": "accuracy"}),
                            what="accuracy after restart")
        assert math.isclose(accuracy, expected, rel_tol=1e-9, abs_tol=1e-12)
    engine = create_engine(engine_url(pg_url))
    with engine.connect() as conn:
        counts = dict(conn.execute(text("select model, count(*) from predictions group by model")).all())
        joined = dict(conn.execute(text(
            "select model, count(*) from labels where joined_at is not null group by model")).all())
    engine.dispose()
    assert counts == N and joined == N
