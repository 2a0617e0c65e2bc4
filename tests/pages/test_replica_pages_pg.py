"""Any replica serves any model's page (DESIGN.md, "Scale beyond one machine"; issue 15).

Real processes on loopback: two ``otel-ml processor`` replicas on one throwaway PostgreSQL,
each model's predictions sent to one replica over OTLP/gRPC; each replica computes the model
whose lease it holds (one each: the leases spread). Then:

1. each replica's ``/`` lists both models with the replica that computes each;
2. each replica serves the page of the other's model with exactly its holder's figures (the drift
   scores on the page are the holder's ``/metrics`` values);
3. with one replica stopped, the other takes its model over and serves both pages, computed by
   itself now, with the same figures; an unknown model or version is a 404 as on one processor.
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
MODELS = ("alpha", "beta")


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
    """(feature, method) -> score of the page's drift table (the exact float, ``data-score``), and of
    its missing-values table (method ``missing``: the score is the window's missing fraction)."""
    scores = {(f, m): float(s) for f, m, s in
              re.findall(r'<tr id="f-\d+" data-feature="([^"]*)" data-method="([^"]*)" data-score="([^"]*)"', html)}
    scores.update({(f, "missing"): float(r) for f, r in
                   re.findall(r'<tr data-missing-feature="([^"]*)" data-ratio="([^"]*)"', html)})
    return scores


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
    models = [{"name": m, "task": "classification", "reference": {"first_n": FIRST_N}} for m in MODELS]
    a = ProcessorProcess(tmp_path / "a", models=models, db_url=url, interval=f"{INTERVAL:g}s",
                         env={sc.ENV_REPLICA_ID: "replica-a"}).start()
    b = ProcessorProcess(tmp_path / "b", models=models, db_url=url, interval=f"{INTERVAL:g}s",
                         env={sc.ENV_REPLICA_ID: "replica-b"}).start()
    names = {id(a): "replica-a", id(b): "replica-b"}
    try:
        _send(a.grpc_endpoint, "alpha", 2.0, seed=1)
        _send(b.grpc_endpoint, "beta", 1.0, seed=2)

        def one_each():
            held = {m: [p for p in (a, b) if _computed(p, m)] for m in MODELS}
            if all(len(v) == 1 for v in held.values()) and held["alpha"] != held["beta"]:
                return {m: v[0] for m, v in held.items()}
            return None

        holder = wait_for(one_each, timeout=90, what="both models computed, one on each replica")
        other = {m: (b if holder[m] is a else a) for m in MODELS}
        assert not any(_metric_scores(other[m], m) for m in MODELS)     # each on its holder only
        figures = {m: _metric_scores(holder[m], m) for m in MODELS}
        OWNERS = {m: names[id(holder[m])] for m in MODELS}

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

        # 3. alpha's holder stops (releasing its lease): the other takes alpha over, computes it
        #    from the database, and serves both pages, fresh, with the same figures.
        gone, left = holder["alpha"], other["alpha"]
        assert gone.stop() == 0
        both = {("alpha", "1"): (names[id(left)], False), ("beta", "1"): (names[id(left)], False)}
        wait_for(lambda: _index(left) == both, timeout=30, what="alpha taken over by the other replica")
        for model in MODELS:
            status, page = _get(left, f"/models/{model}")
            assert status == 200 and 'id="stale"' not in page and _page_scores(page) == figures[model]
        b = left

        for path in ("/models/nope", "/models/alpha?version=9"):
            status, page = _get(b, path)
            assert status == 404 and 'href="../models/alpha"' in page and 'href="../models/beta"' in page
    finally:
        a.stop()
        b.stop()
