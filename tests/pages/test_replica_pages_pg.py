"""Any replica serves any model's page (DESIGN.md, "Scale beyond one machine"; issue 15).

Real processes on loopback: two ``otel-ml processor`` replicas on one throwaway PostgreSQL,
each model's predictions sent to one replica over OTLP/gRPC (as the Collector's load-balancing
exporter routes them). Then:

1. each replica's ``/`` lists both models with the replica that computes each;
2. replica B serves the page of A's model with exactly A's figures (the drift scores on the page
   are A's ``/metrics`` values), and A serves B's;
3. with A stopped, B still serves A's model from the database, marked stale once older than
   three compute intervals; an unknown model or version is a 404 as on one processor.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import otel_ml
from otel_ml import semconv as sc
from tests.postgres import PostgresCluster
from tests.support import ProcessorProcess, http_get, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

FIRST_N, N = 20, 80        # each model's reference: its first 20 predictions
INTERVAL = 1.0             # compute.interval (s): the pages call a snapshot stale after 3 of them
OWNERS = {"alpha": "replica-a", "beta": "replica-b"}


@pytest.fixture(scope="module")
def pg():
    with PostgresCluster() as cluster:
        yield cluster


def _send(endpoint: str, model: str, shift: float, seed: int) -> None:
    """N predictions over OTLP/gRPC: the first FIRST_N as the reference, the rest moved by ``shift``."""
    rng = np.random.default_rng(seed)
    provider = sdk_logger_provider(endpoint, "grpc")
    for i in range(N):
        moved = i >= FIRST_N
        features = {"x": float(rng.normal(shift if moved else 0.0, 1.0)),
                    "plan": str(rng.choice(["basic", "pro"], p=[0.2, 0.8] if moved else [0.7, 0.3]))}
        otel_ml.record_prediction(model, "1", features, label=str(rng.integers(0, 2)), score=0.8,
                                  prediction_id=f"{model}-{i}", logger_provider=provider)
    provider.shutdown()     # returns once every batch was answered (stored)


def _metric_scores(proc: ProcessorProcess, model: str) -> dict:
    """(feature, method) -> ml_drift_score of ``model`` on ``proc``'s /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.labels[sc.L_FEATURE], s.labels[sc.L_METHOD]): s.value
            for f in text_string_to_metric_families(proc.metrics_text()) for s in f.samples
            if s.name == sc.M_DRIFT_SCORE and s.labels[sc.L_MODEL] == model}


def _get(proc: ProcessorProcess, path: str) -> tuple:
    status, body = http_get(f"http://{proc.metrics_endpoint}{path}")
    return status, body.decode()


def _page_scores(html: str) -> dict:
    """(feature, method) -> score of the page's drift table (the exact float, ``data-score``)."""
    return {(f, m): float(s) for f, m, s in
            re.findall(r'<tr id="f-\d+" data-feature="([^"]*)" data-method="([^"]*)" data-score="([^"]*)"', html)}


def _index(proc: ProcessorProcess) -> dict:
    """(model, version) -> (owner, stale) of ``proc``'s /."""
    status, html = _get(proc, "/")
    assert status == 200
    return {(m, v): (o, s == "1") for m, v, o, s in
            re.findall(r'<tr data-model="([^"]*)" data-version="([^"]*)" data-owner="([^"]*)" data-stale="([01])"',
                       html)}


def _computed(proc: ProcessorProcess, model: str) -> bool:
    return (proc.sample(sc.M_WINDOW_PREDICTIONS, {sc.L_MODEL: model}) == N - FIRST_N
            and {f for f, _m in _metric_scores(proc, model)} >= {"x", "plan"})


def test_any_replica_serves_any_models_page_from_the_database(tmp_path, pg):
    url = pg.create_database("pages")
    models = [{"name": m, "task": "classification", "reference": {"first_n": FIRST_N}} for m in OWNERS]
    a = ProcessorProcess(tmp_path / "a", models=models, db_url=url, interval=f"{INTERVAL:g}s",
                         env={sc.ENV_REPLICA_ID: OWNERS["alpha"]}).start()
    b = ProcessorProcess(tmp_path / "b", models=models, db_url=url, interval=f"{INTERVAL:g}s",
                         env={sc.ENV_REPLICA_ID: OWNERS["beta"]}).start()
    try:
        _send(a.grpc_endpoint, "alpha", 2.0, seed=1)
        _send(b.grpc_endpoint, "beta", 1.0, seed=2)
        wait_for(lambda: _computed(a, "alpha") and _computed(b, "beta"), timeout=90, what="both models computed")
        assert not _metric_scores(b, "alpha") and not _metric_scores(a, "beta")     # each on its owner only
        figures = {"alpha": _metric_scores(a, "alpha"), "beta": _metric_scores(b, "beta")}

        # 1. Either replica's index: both models, each with its owner, fresh.
        fresh = {("alpha", "1"): (OWNERS["alpha"], False), ("beta", "1"): (OWNERS["beta"], False)}
        for proc in (a, b):
            wait_for(lambda proc=proc: _index(proc) == fresh, what=f"both models on {proc.metrics_endpoint}/")

        # 2. Either replica's page of either model: the owner's exact figures (the window no
        #    longer changes, so every later cycle computes the same ones).
        for proc in (a, b):
            for model, owner in OWNERS.items():
                status, page = _get(proc, f"/models/{model}")
                assert status == 200 and f'computed by <span data-owner="{owner}">' in page
                assert _page_scores(page) == figures[model], (proc.metrics_endpoint, model)

        # 3. The owner stops: its last snapshot is still served, marked stale once old.
        assert a.stop() == 0
        stale = wait_for(lambda: (lambda p: p if p[0] == 200 and 'id="stale"' in p[1] else None)(
            _get(b, "/models/alpha")), timeout=30, what="alpha's page marked stale on B")[1]
        assert f"{OWNERS['alpha']}, may be down" in stale and _page_scores(stale) == figures["alpha"]
        assert _index(b) == {("alpha", "1"): (OWNERS["alpha"], True), ("beta", "1"): (OWNERS["beta"], False)}
        status, page = _get(b, "/models/beta")
        assert status == 200 and 'id="stale"' not in page and _page_scores(page) == figures["beta"]

        for path in ("/models/nope", "/models/alpha?version=9"):
            status, page = _get(b, path)
            assert status == 404 and 'href="../models/alpha"' in page and 'href="../models/beta"' in page
    finally:
        a.stop()
        b.stop()
