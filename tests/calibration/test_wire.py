"""The calibration test's own parts: its OTLP encoder writes what the official protobuf classes
read, and its tolerance is the Bernoulli divergence scipy computes."""

from __future__ import annotations

import math

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from scipy.stats import entropy

from otel_ml import semconv as sc
from tests.calibration import wire
from tests.calibration.tolerance import detectable_rate, hoeffding_tail, kl


def _value(any_value):
    return getattr(any_value, any_value.WhichOneof("value"))


def test_encoded_records_are_otlp():
    features = {"income": 10.25, "visits": 3, "debt": -7, "member": True, "plan": "plan a", "region": "région-07 ✓"}
    body = wire.logs_request([
        wire.prediction_record("churn", "churn-1", 1_700_000_000_123_456_789, features, "1", 0.875, {"segment": "g3"}),
        wire.label_record("churn", "churn-1", "0", 1_700_000_000_123_456_790),
    ])
    records = ExportLogsServiceRequest.FromString(body).resource_logs[0].scope_logs[0].log_records
    prediction, label = records
    assert prediction.event_name == sc.EVENT_PREDICTION and label.event_name == sc.EVENT_LABEL
    assert prediction.time_unix_nano == 1_700_000_000_123_456_789
    attributes = {kv.key: _value(kv.value) for kv in prediction.attributes}
    assert attributes == {
        sc.ML_MODEL_NAME: "churn", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: "churn-1", sc.ML_OUTPUT_LABEL: "1",
        sc.ML_OUTPUT_SCORE: 0.875, **{sc.feature_key(k): v for k, v in features.items()}, sc.segment_key("segment"): "g3"}
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in prediction.attributes}
    assert (kinds[sc.feature_key("visits")], kinds[sc.feature_key("member")], kinds[sc.feature_key("income")]) == (
        "int_value", "bool_value", "double_value")
    assert {kv.key: _value(kv.value) for kv in label.attributes} == {
        sc.ML_MODEL_NAME: "churn", sc.ML_PREDICTION_ID: "churn-1", sc.ML_LABEL_VALUE: "0"}
    # a missing value is no attribute at all
    empty = wire.prediction_record("churn", "churn-2", 1, {"income": None, "plan": "b"}, "1", 0.9, {})
    keys = {kv.key for kv in ExportLogsServiceRequest.FromString(wire.logs_request([empty]))
            .resource_logs[0].scope_logs[0].log_records[0].attributes}
    assert sc.feature_key("plan") in keys and sc.feature_key("income") not in keys


@pytest.mark.parametrize("x, p", [(0.05, 0.01), (0.001, 0.01), (0.5, 0.2)])
def test_divergence_is_scipys(x, p):
    assert kl(x, p) == pytest.approx(entropy([x, 1 - x], [p, 1 - p]), rel=1e-12)


def test_tolerance_bound():
    assert hoeffding_tail(0.01, 100) == 1.0
    rate = detectable_rate(100)
    assert hoeffding_tail(rate, 100) == pytest.approx(0.001, rel=1e-6)
    assert math.exp(-100 * kl(rate, 0.01)) == pytest.approx(0.001, rel=1e-6)
