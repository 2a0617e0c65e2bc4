"""What otel-ml encodes by hand is OTLP any collector accepts: an instrumented model, its records
shipped over OTLP/gRPC to rotel (a real collector, Rust), which re-batches them and forwards
them (gzip) through a relay that parses each request with opentelemetry-proto, to the real
processor. Every prediction arrives with its features, outputs and trace context."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml.instrumentation import MLInstrumentor
from otel_ml.senders import GrpcSender
from tests.ops.test_rotel_hop import RecordingRelay, RotelAgent
from tests.support import ProcessorProcess, wait_for

pytestmark = pytest.mark.e2e


def test_records_encoded_by_otel_ml_pass_through_rotel_to_the_processor(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    models = [{"name": "rotel", "task": "classification"}]
    with ProcessorProcess(tmp_path, models=models) as proc, RecordingRelay(proc.grpc_endpoint) as relay, \
            RotelAgent(tmp_path, relay.endpoint) as agent:
        tp = TracerProvider()
        inst = MLInstrumentor()
        inst.instrument(tracer_provider=tp, sender=GrpcSender(f"127.0.0.1:{agent.grpc_port}"), logging_bridge=False,
                        buffer_path=str(tmp_path / "buffer.db"), model_name="rotel", model_version="2",
                        export_interval_ms=100)
        try:
            made = {}
            tracer = tp.get_tracer("test")
            for start in range(0, 60, 6):
                rows = X[start:start + 1 + start % 7]
                with tracer.start_as_current_span("request") as span, \
                        otel_ml.prediction_context(segments={"plan": f"p{start % 3}"}):
                    proba = model.predict_proba(rows)
                for pid, row, p in zip(otel_ml.last_prediction_ids(), rows, proba):
                    made[pid] = (row, p, format(span.get_span_context().trace_id, "032x"))
            assert inst.force_flush(60_000)

            def stored():
                with sqlite3.connect(proc.db_path) as conn:
                    conn.row_factory = sqlite3.Row
                    got = [dict(r) for r in conn.execute(
                        "SELECT prediction_id, model_version, features, segments, output_label, score, probabilities,"
                        " trace_id FROM predictions WHERE model = 'rotel'")]
                return got if len(got) >= len(made) else None

            rows = wait_for(stored, timeout=90, what=f"{len(made)} predictions through rotel")
            assert sorted(r["prediction_id"] for r in rows) == sorted(made)
            classes = [str(c) for c in model.classes_]
            for r in rows:
                row, p, trace_id = made[r["prediction_id"]]
                assert r["model_version"] == "2" and r["trace_id"] == trace_id
                assert json.loads(r["features"]) == {f"x{j}": row[j] for j in range(3)}
                assert r["output_label"] == classes[int(np.argmax(p))] and r["score"] == p.max()
                assert json.loads(r["probabilities"]) == dict(zip(classes, p.tolist()))
                assert json.loads(r["segments"])["plan"] in ("p0", "p1", "p2")
            # rotel re-encoded what it received: the relay parsed every request it forwarded.
            assert sum(n for _, n in relay.requests) >= len(made)
        finally:
            inst.uninstrument()
