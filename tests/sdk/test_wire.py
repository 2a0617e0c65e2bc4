"""otel-ml's hand-written OTLP bytes, held against independent readings:

- an event is byte-for-byte what the OpenTelemetry SDK's own OTLP encoder makes of the same
  LogRecord, once both are parsed by opentelemetry-proto and serialized again in field order;
- the packed prediction rows carry exactly the attributes a plain reading of the call gives
  (model, id, features or their summaries, outputs, segments, extra attributes).
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_ml import semconv as sc
from otel_ml import wire
from otel_ml.convert import Features, columns
from otel_ml.events import EventEncoder, TraceIds
from otel_ml.instrumentation.adapters import Interpretation

from .conftest import parse_request

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
TEXT = st.text(max_size=40)
SCALAR = st.one_of(TEXT, st.booleans(), INT64, st.floats(allow_nan=True, allow_infinity=True))
VALUE = st.one_of(SCALAR, st.lists(TEXT, max_size=4), st.lists(INT64, max_size=4),
                  st.lists(st.floats(allow_nan=False), max_size=4), st.lists(st.booleans(), max_size=4))
ATTRIBUTES = st.dictionaries(st.text(min_size=1, max_size=30), VALUE, max_size=20)
U64 = st.integers(min_value=1, max_value=(1 << 64) - 1)


def _canonical(request: bytes) -> bytes:
    return ExportLogsServiceRequest.FromString(request).SerializeToString(deterministic=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attrs=ATTRIBUTES, name=st.sampled_from([sc.EVENT_PREDICTION, sc.EVENT_LABEL, sc.EVENT_AUDIT]),
       t=U64, observed=U64, trace_id=st.integers(min_value=1, max_value=(1 << 128) - 1),
       span_id=U64, flags=st.sampled_from([0, 1]), resource=ATTRIBUTES)
def test_an_event_is_what_the_sdk_encoder_makes(attrs, name, t, observed, trace_id, span_id, flags, resource):
    ours = EventEncoder().event(name, attrs, time_ns=t, observed_ns=observed,
                                trace=TraceIds(trace_id, span_id, flags))
    request = wire.logs_request(wire.resource_bytes(resource), wire.scope_bytes("otel_ml", "1.2"), [ours])

    span_context = trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace.TraceFlags(flags))
    record = LogRecord(timestamp=t, observed_timestamp=observed, event_name=name, attributes=attrs,
                       context=trace.set_span_in_context(trace.NonRecordingSpan(span_context), otel_context.Context()))
    sdk = encode_logs([ReadableLogRecord(log_record=record, resource=Resource(resource),
                                         instrumentation_scope=InstrumentationScope("otel_ml", "1.2"))])
    assert _canonical(request) == sdk.SerializeToString(deterministic=True)


# -- prediction rows --------------------------------------------------------------------------------
FEATURE_VALUE = st.one_of(st.floats(allow_nan=True), st.integers(-1000, 1000), st.booleans(), st.none(),
                          st.text(max_size=12))


@st.composite
def calls(draw):
    n = draw(st.integers(min_value=0, max_value=6))
    width = draw(st.integers(min_value=0, max_value=5))
    names = [f"f{j}" for j in range(width)]
    float_cols = draw(st.lists(st.booleans(), min_size=width, max_size=width))
    rows = []
    for _ in range(n):
        rows.append([draw(st.floats(allow_nan=True)) if float_cols[j] else draw(FEATURE_VALUE) for j in range(width)])
    if draw(st.booleans()):
        features = Features(columns(names, float_cols), rows[:draw(st.integers(0, n))])
    else:                                                         # rows of dicts
        features = Features(None, [{sc.feature_key(k): v for k, v in zip(names, r) if draw(st.booleans())}
                                   for r in rows])
    task = draw(st.sampled_from([sc.TASK_CLASSIFICATION, sc.TASK_REGRESSION]))
    result = Interpretation(n, task, features)
    if task == sc.TASK_REGRESSION:
        result.values = [draw(st.floats(allow_nan=False)) for _ in range(n)]
    else:
        classes = tuple(draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3, unique=True)))
        result.labels = [draw(st.sampled_from(classes)) for _ in range(n)]
        if draw(st.booleans()):
            result.classes = classes
            result.probabilities = [[draw(st.one_of(st.floats(0, 1), st.none())) for _ in classes] for _ in range(n)]
        if draw(st.booleans()):
            result.scores = [draw(st.one_of(st.floats(0, 1), st.none())) for _ in range(n)]
    segments = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["g", "h"]), SCALAR, max_size=2),
                              st.lists(st.dictionaries(st.sampled_from(["g"]), TEXT, max_size=1), max_size=n)))
    extra = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from([sc.ENDUSER_ID, "x.y"]), TEXT, max_size=2)))
    rows_kept = draw(st.one_of(st.none(), st.lists(st.integers(0, max(0, n - 1)), unique=True).map(sorted)))
    return result, segments, extra, rows_kept


def _expected(result, i, pid, segments, extra, max_text):
    """A plain reading of row ``i``: the attributes the contract says it carries."""
    attrs = {sc.ML_MODEL_NAME: "m", sc.ML_MODEL_VERSION: "7", sc.ML_MODEL_TASK: result.task, sc.ML_PREDICTION_ID: pid}
    feats = result.features
    if i < len(feats.rows):
        items = feats.rows[i].items() if feats.columns is None else zip(feats.columns.keys, feats.rows[i])
        for k, v in items:
            if v is None:
                continue
            if isinstance(v, str) and len(v) > max_text:
                attrs[k + sc.FEATURE_SUMMARY_LENGTH] = len(v)
            else:
                attrs[k] = v
    if result.labels is not None:
        attrs[sc.ML_OUTPUT_LABEL] = result.labels[i]
    if result.values is not None:
        attrs[sc.ML_OUTPUT_VALUE] = result.values[i]
    if result.scores is not None and result.scores[i] is not None:
        attrs[sc.ML_OUTPUT_SCORE] = result.scores[i]
    if result.probabilities is not None:
        for c, p in zip(result.classes, result.probabilities[i]):
            if p is not None:
                attrs[sc.probability_key(c)] = p
    if isinstance(segments, dict):
        attrs.update({sc.segment_key(k): v for k, v in segments.items()})
    elif segments and i < len(segments):
        attrs.update({sc.segment_key(k): v for k, v in segments[i].items()})
    attrs.update(extra or {})
    return attrs


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=calls())
def test_prediction_rows_carry_exactly_the_contract_attributes(call):
    result, segments, extra, rows_kept = call
    ids = [f"id-{i}" for i in range(result.n)]
    enc = EventEncoder()
    records = enc.predictions(result, model_name="m", model_version="7", ids=ids, time_ns=11, observed_ns=12,
                              trace=TraceIds(3, 4, 1), segments=segments, attributes=extra, max_text=8,
                              rows=rows_kept)
    events = parse_request(wire.logs_request(b"", wire.scope_bytes("otel_ml"), records))
    kept = range(result.n) if rows_kept is None else [i for i in rows_kept if i < result.n]
    assert len(events) == len(kept)
    for i, e in zip(kept, events):
        assert (e.event_name, e.timestamp, e.observed_timestamp, e.trace_id, e.span_id, e.flags) == (
            sc.EVENT_PREDICTION, 11, 12, 3, 4, 1)
        want = _expected(result, i, ids[i], segments, extra, 8)
        assert set(e.attributes) == set(want)
        assert all(_same(e.attributes[k], want[k]) for k in want), (e.attributes, want)
    # The same rows again, through the cached plan, give the same bytes.
    assert enc.predictions(result, model_name="m", model_version="7", ids=ids, time_ns=11, observed_ns=12,
                           trace=TraceIds(3, 4, 1), segments=segments, attributes=extra, max_text=8,
                           rows=rows_kept) == records


def test_runs_of_records_concatenate_into_one_request():
    enc = EventEncoder()
    recs = [enc.event(sc.EVENT_LABEL, {sc.ML_PREDICTION_ID: f"p{i}"}, time_ns=i + 1) for i in range(5)]
    runs = [b"".join(recs[:2]), b"".join(recs[2:])]
    assert wire.record_count(runs) == 5
    events = parse_request(wire.logs_request(wire.resource_bytes({"service.name": "s"}), wire.scope_bytes("o"), runs))
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == [f"p{i}" for i in range(5)]


def test_a_value_otlp_cannot_carry_is_left_out_like_the_sdk_does():
    rec = EventEncoder().event(sc.EVENT_LABEL, {"ok": 1, "bad": object(), "none": None}, time_ns=1)
    (event,) = parse_request(wire.logs_request(b"", b"", [rec]))
    assert event.attributes == {"ok": 1}
