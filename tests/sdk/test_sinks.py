"""Where ML events go besides otel-ml's own OTLP path: the app's LoggerProvider, an SDK exporter,
and the explicit API with and without otel-ml active (docs/instrumentation.md)."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import semconv as sc
from otel_ml.instrumentation import MLInstrumentor

from .conftest import start, stop

X = np.arange(40.0).reshape(20, 2)
MODEL = LogisticRegression().fit(X, [0, 1] * 10)


def _expected_rows(rows, proba):
    classes = [str(c) for c in MODEL.classes_]
    return [{sc.feature_key("x0"): r[0], sc.feature_key("x1"): r[1], sc.ML_OUTPUT_LABEL: classes[int(np.argmax(p))],
             sc.ML_OUTPUT_SCORE: p.max(), **{sc.probability_key(c): v for c, v in zip(classes, p)}}
            for r, p in zip(rows.tolist(), proba)]


def test_the_apps_logger_provider_receives_the_same_events(tmp_path):
    exporter = InMemoryLogRecordExporter()
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tp = TracerProvider()
    inst = MLInstrumentor()
    inst.instrument(tracer_provider=tp, logger_provider=lp, model_name="lp", model_version="1", logging_bridge=False)
    try:
        with tp.get_tracer("t").start_as_current_span("request") as request:
            proba = MODEL.predict_proba(X[:3])
        ids = otel_ml.last_prediction_ids()
        assert inst.force_flush(30_000)
        records = [r.log_record for r in exporter.get_finished_logs()]
        preds = [r for r in records if r.event_name == sc.EVENT_PREDICTION]
        assert [r.attributes[sc.ML_PREDICTION_ID] for r in preds] == ids
        for r, want in zip(preds, _expected_rows(X[:3], proba)):
            assert {k: r.attributes[k] for k in want} == want
            assert r.trace_id == request.get_span_context().trace_id and r.span_id != request.get_span_context().span_id
            assert r.timestamp and r.observed_timestamp >= r.timestamp
        assert [r.attributes[sc.ML_AUDIT_ACTION] for r in records if r.event_name == sc.EVENT_AUDIT] == [
            sc.AUDIT_MODEL_LOAD]
        assert inst.pipeline.outbox is None, "no disk buffer on this path"
    finally:
        inst.uninstrument()


def test_a_custom_log_exporter_gets_each_batch_decoded(tmp_path):
    exporter = InMemoryLogRecordExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "exp"}))
    inst = MLInstrumentor()
    inst.instrument(tracer_provider=tp, log_exporter=exporter, buffer_path=str(tmp_path / "b.db"),
                    model_name="exp", model_version="2", logging_bridge=False)
    try:
        proba = MODEL.predict_proba(X[:2])
        assert inst.force_flush(30_000)
        got = [r for r in exporter.get_finished_logs() if r.log_record.event_name == sc.EVENT_PREDICTION]
        assert len(got) == 2
        assert {(r.resource.attributes["service.name"], r.instrumentation_scope.name) for r in got} == {
            ("exp", sc.INSTRUMENTATION_NAME)}
        for r, want in zip(got, _expected_rows(X[:2], proba)):
            assert {k: r.log_record.attributes[k] for k in want} == want
    finally:
        inst.uninstrument()


@pytest.mark.parametrize("active", [True, False])
def test_record_functions_with_and_without_otel_ml_active(active, tmp_path):
    exporter = InMemoryLogRecordExporter()
    own = LoggerProvider()
    own.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    cap = start(model_name="m", model_version="1") if active else None
    try:
        pid = otel_ml.record_prediction("api", "4", {"age": 42, "plan": "pro"}, label="yes", score=0.8,
                                        segments={"gender": "f"}, probabilities={"yes": 0.8, "no": 0.2})
        otel_ml.record_label("api", pid, "no")
        otel_ml.record_audit(sc.AUDIT_CONFIG_CHANGE, "api", "4", "threshold", actor="bob")
        otel_ml.record_label("api", pid, 1.0, logger_provider=own)      # an explicit provider always wins
        want = {sc.ML_MODEL_NAME: "api", sc.ML_MODEL_VERSION: "4", sc.ML_PREDICTION_ID: pid,
                sc.ML_MODEL_TASK: sc.TASK_CLASSIFICATION, sc.feature_key("age"): 42, sc.feature_key("plan"): "pro",
                sc.ML_OUTPUT_LABEL: "yes", sc.ML_OUTPUT_SCORE: 0.8, sc.segment_key("gender"): "f",
                sc.probability_key("yes"): 0.8, sc.probability_key("no"): 0.2}
        if active:
            (pred,) = cap.events()
            assert pred.attributes == want
            (label,) = cap.events(sc.EVENT_LABEL)
            assert label.attributes == {sc.ML_MODEL_NAME: "api", sc.ML_PREDICTION_ID: pid, sc.ML_LABEL_VALUE: "no"}
            audits = [dict(a.attributes) for a in cap.events(sc.EVENT_AUDIT) if a.attributes[sc.ML_MODEL_NAME] == "api"]
            assert len(audits) == 1 and len(audits[0].pop(sc.ML_AUDIT_ID)) == 32
            assert audits == [{sc.ML_AUDIT_ACTION: sc.AUDIT_CONFIG_CHANGE, sc.ML_AUDIT_ACTOR: "bob",
                               sc.ML_MODEL_NAME: "api", sc.ML_MODEL_VERSION: "4", sc.ML_AUDIT_DETAIL: "threshold"}]
        (explicit,) = [r.log_record for r in exporter.get_finished_logs()]
        assert explicit.event_name == sc.EVENT_LABEL and explicit.attributes[sc.ML_LABEL_VALUE] == 1.0
    finally:
        if cap is not None:
            stop(cap)
