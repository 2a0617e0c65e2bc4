"""Fixtures: the MLInstrumentor with in-memory span and metric exporters, and its ML events
captured as the OTLP requests it ships (from a real SQLite buffer), parsed with
opentelemetry-proto: what a receiver would read."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_ml import semconv as sc
from otel_ml.instrumentation import MLInstrumentor


def py_value(v: Any) -> Any:
    """An OTLP AnyValue as Python (written here, not taken from otel_ml: an independent reading)."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [py_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: py_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class Event:
    """One received LogRecord."""

    event_name: str
    attributes: Dict[str, Any]
    timestamp: int
    observed_timestamp: int
    trace_id: int
    span_id: int
    flags: int
    resource: Dict[str, Any] = field(default_factory=dict)
    scope: tuple = ()


def parse_request(body: bytes) -> List[Event]:
    out = []
    for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
        resource = {kv.key: py_value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                out.append(Event(lr.event_name, {kv.key: py_value(kv.value) for kv in lr.attributes},
                                 lr.time_unix_nano, lr.observed_time_unix_nano, int.from_bytes(lr.trace_id, "big"),
                                 int.from_bytes(lr.span_id, "big"), lr.flags, resource,
                                 (sl.scope.name, sl.scope.version)))
    return out


def buffered_events(path: Any) -> List[Event]:
    """The events held in an otel-ml buffer file (runs of framed LogRecords), parsed."""
    import sqlite3

    from otel_ml import wire

    if not os.path.exists(path):
        return []
    with sqlite3.connect(path) as conn:
        runs = [p for (p,) in conn.execute("SELECT payload FROM records ORDER BY id")]
    return parse_request(wire.logs_request(b"", b"", runs)) if runs else []


class CaptureSender:
    """Accepts every request, like a receiver that answers OK, and keeps its bytes."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.requests: List[bytes] = []
        self.attempts = 0
        self._lock = threading.Lock()

    def send(self, body: bytes, timeout: Any = None) -> bool:
        with self._lock:
            self.attempts += 1
            if self.down:
                return False
            self.requests.append(body)
            return True

    def shutdown(self) -> None:
        pass

    def events(self) -> List[Event]:
        with self._lock:
            bodies = list(self.requests)
        return [e for body in bodies for e in parse_request(body)]


@dataclass
class Captured:
    instrumentor: MLInstrumentor
    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    sender: CaptureSender
    folder: str = ""                  # the temporary folder of the buffer, removed at the end

    def flush(self) -> None:
        assert self.instrumentor.force_flush(30000)

    def span_list(self, name: str = sc.SPAN_PREDICT) -> list:
        self.flush()
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def events(self, name: str = sc.EVENT_PREDICTION) -> List[Event]:
        self.flush()
        return [e for e in self.sender.events() if e.event_name == name]

    def metric_points(self, name: str) -> list:
        self.flush()
        data = self.metrics.get_metrics_data()
        points = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        points.extend(m.data.data_points)
        return points


def start(**options) -> Captured:
    spans, reader, sender = InMemorySpanExporter(), InMemoryMetricReader(), CaptureSender()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    mp = MeterProvider(metric_readers=[reader])
    inst = MLInstrumentor()
    options.setdefault("logging_bridge", False)
    folder = ""
    if "buffer_path" not in options:
        folder = tempfile.mkdtemp(prefix="otel-ml-test-")
        options["buffer_path"] = f"{folder}/buffer.db"
    inst.instrument(tracer_provider=tp, meter_provider=mp, sender=sender, **options)
    return Captured(inst, tp, spans, reader, sender, folder)


def stop(cap: Captured) -> None:
    if cap.instrumentor.is_instrumented_by_opentelemetry:
        cap.instrumentor.uninstrument()
    if cap.folder:
        shutil.rmtree(cap.folder, ignore_errors=True)


@pytest.fixture
def captured():
    cap = start(model_name="churn", model_version="3")
    yield cap
    stop(cap)


@pytest.fixture
def make_captured():
    made = []

    def _make(**options) -> Captured:
        cap = start(**options)
        made.append(cap)
        return cap

    yield _make
    for cap in made:
        stop(cap)
