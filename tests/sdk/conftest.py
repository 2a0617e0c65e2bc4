"""Fixtures: the MLInstrumentor with in-memory OTel exporters (spans, metrics, ML events)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_ml import semconv as sc
from otel_ml.instrumentation import MLInstrumentor


@dataclass
class Captured:
    instrumentor: MLInstrumentor
    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    logs: InMemoryLogRecordExporter

    def flush(self) -> None:
        assert self.instrumentor.force_flush(30000)

    def span_list(self, name: str = sc.SPAN_PREDICT) -> list:
        self.flush()
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def events(self, name: str = sc.EVENT_PREDICTION) -> list:
        self.flush()
        return [r.log_record for r in self.logs.get_finished_logs() if r.log_record.event_name == name]

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
    spans, logs, reader = InMemorySpanExporter(), InMemoryLogRecordExporter(), InMemoryMetricReader()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    mp = MeterProvider(metric_readers=[reader])
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    inst = MLInstrumentor()
    options.setdefault("logging_bridge", False)
    inst.instrument(tracer_provider=tp, meter_provider=mp, logger_provider=lp, **options)
    return Captured(inst, tp, spans, reader, logs)


@pytest.fixture
def captured():
    cap = start(model_name="churn", model_version="3")
    yield cap
    cap.instrumentor.uninstrument()


@pytest.fixture
def make_captured():
    made = []

    def _make(**options) -> Captured:
        cap = start(**options)
        made.append(cap)
        return cap

    yield _make
    for cap in made:
        if cap.instrumentor.is_instrumented_by_opentelemetry:
            cap.instrumentor.uninstrument()
