"""Each model's own name and version: ``otel_ml.model_context`` (the explicit API), the identity a
model server gives (``calls.server_model``, ``registry.serve``) and which one wins over
``OTEL_ML_MODEL_NAME``/``_VERSION``. The real servers are in ``tests/servers/``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import calls, registry
from otel_ml import semconv as sc

X = np.random.default_rng(3).normal(size=(40, 2))
Y = (X[:, 0] > 0).astype(int)


@pytest.fixture(scope="module")
def model():
    return LogisticRegression().fit(X, Y)


def _names(cap) -> list:
    return [(e.attributes[sc.ML_MODEL_NAME], e.attributes[sc.ML_MODEL_VERSION]) for e in cap.events()]


def test_model_context_names_the_rows_and_wins_over_the_environment(make_captured, monkeypatch, model):
    monkeypatch.setenv(sc.ENV_MODEL_NAME, "from-env")
    monkeypatch.setenv(sc.ENV_MODEL_VERSION, "9")
    cap = make_captured()
    with otel_ml.model_context(name="churn", version="3"):
        model.predict(X[:2])
        with otel_ml.model_context(name="price", version=4):
            model.predict(X[:1])
        model.predict(X[:1])
    model.predict(X[:1])
    assert _names(cap) == [("churn", "3")] * 2 + [("price", "4"), ("churn", "3"), ("from-env", "9")]


def test_model_context_keeps_the_ids_and_segments_around_it(make_captured, model):
    cap = make_captured()
    with otel_ml.prediction_context(ids=["a", "b"], segments={"gender": "f"}):
        with otel_ml.model_context(name="churn"):
            model.predict(X[:2])
    with otel_ml.model_context(name="churn", version="5"):
        with otel_ml.prediction_context(ids=["c"]):
            model.predict(X[:1])
    events = cap.events()
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == ["a", "b", "c"]
    assert [e.attributes.get(sc.segment_key("gender")) for e in events] == ["f", "f", None]
    assert _names(cap) == [("churn", "unknown")] * 2 + [("churn", "5")]


def test_a_servers_identity_names_rows_and_the_environment_overrides_it(make_captured, monkeypatch, model):
    cap = make_captured()
    with calls.server_model("iris", "v2"):
        model.predict(X[:1])
        with otel_ml.model_context(name="explicit", version="1"):
            model.predict(X[:1])
    with calls.server_model("no-version", None):
        model.predict(X[:1])
    assert _names(cap) == [("iris", "v2"), ("explicit", "1"), ("no-version", "unknown")]
    cap.instrumentor.uninstrument()

    monkeypatch.setenv(sc.ENV_MODEL_NAME, "from-env")
    cap = make_captured()
    with calls.server_model("iris", "v2"):
        model.predict(X[:1])
    # another name than the server's: the server's version is not that model's
    assert _names(cap) == [("from-env", "unknown")]
    monkeypatch.setenv(sc.ENV_MODEL_VERSION, "9")
    cap.instrumentor.uninstrument()
    cap = make_captured()
    with calls.server_model("iris", None):
        model.predict(X[:1])
    assert _names(cap) == [("from-env", "9")]


def test_a_model_loaded_by_a_server_keeps_its_tag(make_captured, monkeypatch):
    served = LogisticRegression().fit(X, Y)
    registry.serve(served, "iris_clf", "abc123")
    cap = make_captured()
    served.predict(X[:2])
    otel_ml.set_model(served, "renamed", "7")       # code wins over the server
    served.predict(X[:1])
    assert _names(cap) == [("iris_clf", "abc123")] * 2 + [("renamed", "7")]


def _uvicorn_server():
    import uvicorn

    async def app(scope, receive, send):  # never called: the server is not started
        raise AssertionError("not served")

    server = uvicorn.Server(uvicorn.Config(app))
    server.force_exit = True            # no connections, tasks or lifespan to wait for
    server.servers = []                 # set by startup(), which this test does not run
    return server


def test_uvicorn_shutdown_after_a_signal_ships_what_otel_ml_holds(make_captured, model):
    import asyncio
    import signal

    cap = make_captured(model_name="m", model_version="1", export_interval_ms=60_000)
    server = _uvicorn_server()
    model.predict(X[:3])
    asyncio.run(server.shutdown())          # stopped in code: otel-ml stays on
    assert cap.instrumentor.is_instrumented_by_opentelemetry and cap.sender.events() == []

    server._captured_signals.append(signal.SIGTERM)      # what uvicorn's handler records
    asyncio.run(server.shutdown())          # then uvicorn would raise SIGTERM again: no atexit
    assert not cap.instrumentor.is_instrumented_by_opentelemetry
    shipped = [e for e in cap.sender.events() if e.event_name == sc.EVENT_PREDICTION]
    assert len(shipped) == 3
