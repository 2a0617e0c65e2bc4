"""No trace of otel-ml's plumbing in the app's traces: with the real gRPC client instrumentation
(``opentelemetry-instrumentation-grpc``, which ``opentelemetry-bootstrap`` installs) and the
DB-API instrumentation of ``sqlite3`` enabled, the buffer's SQLite work and the OTLP/gRPC
shipments make no spans, while the app's own gRPC call, SQLite query and predict do."""

from __future__ import annotations

import sqlite3
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation import dbapi
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sklearn.linear_model import LogisticRegression

from otel_ml import semconv as sc
from otel_ml.instrumentation import MLInstrumentor
from otel_ml.senders import LOGS_EXPORT_METHOD, GrpcSender

from .conftest import parse_request


class _LogsReceiver:
    """A real OTLP/gRPC logs endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.bodies: list = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        service, method = LOGS_EXPORT_METHOD.strip("/").split("/")
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {
            method: grpc.unary_unary_rpc_method_handler(self._export)})])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, body: bytes, context) -> bytes:
        with self._lock:
            self.bodies.append(body)
        return b""


@pytest.fixture
def instrumented_app(tmp_path, monkeypatch):
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    # The gRPC client instrumentation traces with the global provider, as in an app run by
    # opentelemetry-instrument: this test's provider is the global one while it runs.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", tp)
    grpc_instrumentor = GrpcInstrumentorClient()
    grpc_instrumentor.instrument(tracer_provider=tp)
    dbapi.wrap_connect(__name__, sqlite3, "connect", "sqlite", tracer_provider=tp)
    receiver = _LogsReceiver()
    ml = MLInstrumentor()
    try:
        ml.instrument(tracer_provider=tp, sender=GrpcSender(f"127.0.0.1:{receiver.port}"),
                      buffer_path=str(tmp_path / "buffer.db"), logging_bridge=False, export_interval_ms=50)
        yield tp, spans, receiver, ml
    finally:
        if ml.is_instrumented_by_opentelemetry:
            ml.uninstrument()
        dbapi.unwrap_connect(sqlite3, "connect")
        grpc_instrumentor.uninstrument()
        receiver.server.stop(None)


def test_buffer_and_shipping_make_no_spans_in_the_apps_traces(instrumented_app, tmp_path):
    tp, spans, receiver, ml = instrumented_app
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 3))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    tracer = tp.get_tracer("app")
    with tracer.start_as_current_span("POST /predict"):
        for i in range(20):
            model.predict_proba(X[i:i + 1])
        # The app's own SQLite query and OTLP/gRPC call: the instrumentations are on.
        with sqlite3.connect(str(tmp_path / "app.db")) as conn:
            conn.cursor().execute("select 1").fetchall()
        with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
            channel.unary_unary(LOGS_EXPORT_METHOD)(b"", timeout=10)
    assert ml.force_flush(30000)

    shipped = [e for body in receiver.bodies for e in parse_request(body) if e.event_name == sc.EVENT_PREDICTION]
    assert len(shipped) == 20, "the rows were shipped over gRPC while instrumented"
    names = [s.name for s in spans.get_finished_spans()]
    assert names.count(sc.SPAN_PREDICT) == 20
    assert names.count(LOGS_EXPORT_METHOD) == 1, f"only the app's own call: {names}"
    db_spans = [s for s in spans.get_finished_spans() if s.attributes and s.attributes.get("db.system") == "sqlite"]
    assert len(db_spans) == 1 and "select 1" in str(db_spans[0].attributes.get("db.statement", db_spans[0].name)), \
        [(s.name, dict(s.attributes or {})) for s in db_spans]
