"""Validation and anonymization rules (docs/processor.md, "Cleaning")."""

import hashlib
import hmac
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ml import semconv as sc
from otel_ml_processor.clean.anonymize import Anonymizer
from otel_ml_processor.clean.kinds import FeatureKinds, signature
from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.clean.validate import MAX_CACHED_NAMES, MAX_SHARED_LENGTH, Rejection, Validator
from otel_ml_processor.config import AnonymizationConfig, AnonymizationRule
from otel_ml_processor.receive.otlp import LogEvent


def _event(name, **attrs):
    return LogEvent(name, 1.0, dict(attrs), "", "")


def _pred(pid="p", **extra):
    return _event(sc.EVENT_PREDICTION, **{sc.ML_MODEL_NAME: "m", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: pid,
                                          sc.ML_OUTPUT_LABEL: "1", **extra})


@pytest.fixture
def issues():
    return []


@pytest.fixture
def validator(issues):
    return Validator(lambda m, f, i: issues.append((m, f, i)))


def test_prediction_fields(validator):
    rec = validator.validate(_pred(**{sc.feature_key("age"): 42, sc.feature_key("vip"): True,
                                      sc.segment_key("gender"): "f", sc.probability_key("1"): 0.8,
                                      sc.ML_OUTPUT_SCORE: 0.8, sc.ENDUSER_ID: "u1"}))
    assert isinstance(rec, PredictionRecord)
    assert rec.features == {"age": 42.0, "vip": "true"} and rec.segments == {"gender": "f"}
    assert rec.probabilities == {"1": 0.8} and rec.score == 0.8 and rec.extra == {sc.ENDUSER_ID: "u1"}
    assert rec.task == sc.TASK_CLASSIFICATION


@pytest.mark.parametrize("attrs, reason", [
    ({sc.ML_MODEL_VERSION: None}, sc.REASON_MISSING_ATTRIBUTE),
    ({sc.ML_PREDICTION_ID: ""}, sc.REASON_MISSING_ATTRIBUTE),
    ({sc.ML_MODEL_NAME: 7}, sc.REASON_INVALID_ATTRIBUTE),
    ({sc.ML_MODEL_TASK: "ranking"}, sc.REASON_INVALID_ATTRIBUTE),
    ({sc.ML_OUTPUT_LABEL: None}, sc.REASON_MISSING_ATTRIBUTE),
    ({sc.ML_MODEL_TASK: "regression", sc.ML_OUTPUT_VALUE: math.inf}, sc.REASON_INVALID_ATTRIBUTE),
    ({sc.ML_PREDICTION_ID: "x" * 256}, sc.REASON_INVALID_ATTRIBUTE),        # over the key columns' 255
    ({sc.ML_MODEL_NAME: "churn\x00"}, sc.REASON_INVALID_ATTRIBUTE),        # PostgreSQL text holds no NUL
    ({sc.ML_OUTPUT_LABEL: "y\x00es"}, sc.REASON_INVALID_ATTRIBUTE),
], ids=["no-version", "empty-id", "name-not-string", "unknown-task", "classification-without-label",
        "infinite-regression-value", "id-over-255", "nul-in-model", "nul-in-label"])
def test_rejections(validator, attrs, reason):
    ev = _pred()
    for k, v in attrs.items():
        if v is None:
            ev.attributes.pop(k)
        else:
            ev.attributes[k] = v
    rec = validator.validate(ev)
    assert isinstance(rec, Rejection) and rec.reason == reason


def test_feature_repairs_are_counted(validator, issues):
    kinds = FeatureKinds(lambda m, f, i: issues.append((m, f, i)))

    def clean(event):
        rec = validator.validate(event)
        kinds.check(rec)
        return rec

    clean(_pred("a", **{sc.feature_key("x"): 1.0, sc.feature_key("y"): "u"}))
    rec = clean(_pred("b", **{sc.feature_key("x"): "now text", sc.feature_key("z"): [1, 2]}))
    assert rec.features == {"x": None, "z": None, "y": None}
    rec = clean(_pred("c", **{sc.feature_key("x"): math.nan, sc.feature_key("y"): "u", sc.ML_OUTPUT_SCORE: 1.5}))
    assert rec.features["x"] is None and rec.score is None
    assert issues == [("m", "z", sc.ISSUE_UNSUPPORTED_TYPE), ("m", "x", sc.ISSUE_TYPE_CHANGED), ("m", "y", sc.ISSUE_MISSING),
                      ("m", sc.FEATURE_SCORE, sc.ISSUE_OUT_OF_RANGE), ("m", "x", sc.ISSUE_NAN)]  # z never had a kind


def test_labels_and_other_logs(validator):
    rec = validator.validate(_event(sc.EVENT_LABEL, **{sc.ML_MODEL_NAME: "m", sc.ML_PREDICTION_ID: "p", sc.ML_LABEL_VALUE: 1}))
    assert isinstance(rec, LabelRecord) and rec.value == 1.0
    bad = validator.validate(_event(sc.EVENT_LABEL, **{sc.ML_MODEL_NAME: "m", sc.ML_PREDICTION_ID: "p"}))
    assert isinstance(bad, Rejection) and bad.reason == sc.REASON_MISSING_ATTRIBUTE
    assert validator.validate(_event("", msg="an application log")) is None


def test_anonymization_actions():
    cfg = AnonymizationConfig(rules=(
        AnonymizationRule(sc.ENDUSER_ID, "hash"), AnonymizationRule("ml.feature.email", "drop"),
        AnonymizationRule("ml.feature.zip", "generalize", keep_chars=3), AnonymizationRule("ml.feature.card", "mask", keep_chars=4),
        AnonymizationRule("ml.feature.income", "generalize", bucket=1000.0)))
    anon = Anonymizer(cfg, {"OTEL_ML_HASH_KEY": "k"})
    rec = PredictionRecord("m", "1", "p", "classification", 1.0,
                           {"email": "a@b.org", "zip": "75011", "card": "4111111111111111", "income": 52345.0,
                            "note": "mail me: x.y@corp.example", "tel": "(555) 123-4567", "plan": "pro"},
                           "1", segments={"who": "jane@doe.io"}, extra={sc.ENDUSER_ID: "u1", "client.address": "10.1.2.3"})
    anon.prediction(rec)
    assert "email" not in rec.features and rec.features["zip"] == "750*" and rec.features["card"] == "*" * 12 + "1111"
    assert rec.features["income"] == 52000.0 and rec.features["note"] == "[email]" and rec.features["tel"] == "[phone]"
    assert rec.features["plan"] == "pro" and rec.segments["who"] == "[email]"
    assert rec.extra[sc.ENDUSER_ID] == hmac.new(b"k", b"u1", hashlib.sha256).hexdigest()
    assert rec.extra["client.address"] == hmac.new(b"k", b"10.1.2.3", hashlib.sha256).hexdigest()


def test_without_hash_key_hashes_are_still_not_raw():
    anon = Anonymizer(AnonymizationConfig(), {})
    assert anon.hash("u1") != "u1" and len(anon.hash("u1")) == 64


_kind_values = st.one_of(st.none(), st.sampled_from([1.0, 2.5]), st.sampled_from(["a", "b"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("xyz"), _kind_values, max_size=3), max_size=4),
       st.lists(st.dictionaries(st.sampled_from("xyz"), _kind_values, max_size=3), min_size=1, max_size=4))
def test_batch_kind_check_is_the_record_by_record_check(earlier, batch):
    """``FeatureKinds.accept`` (a whole batch at once) agrees with ``check`` record by record:
    when it accepts, the records need no repair and the kinds learned are the same; otherwise it
    changes nothing, and the record-by-record check runs."""
    def records(features_list):
        return [PredictionRecord("m", "1", f"p{i}", "classification", 1.0, dict(f)) for i, f in enumerate(features_list)]

    slow_issues, fast_issues = [], []
    slow, fast = FeatureKinds(lambda *i: slow_issues.append(i)), FeatureKinds(lambda *i: fast_issues.append(i))
    for r in records(earlier):
        slow.check(r)
    for r in records(earlier):
        fast.check(r)
    slow_recs, fast_recs = records(batch), records(batch)
    for r in slow_recs:
        slow.check(r)
    signatures = {signature(r.features) for r in fast_recs}
    accepted = len(signatures) == 1 and fast.accept("m", *next(iter(signatures)))
    if not accepted:
        for r in fast_recs:
            fast.check(r)
    else:
        assert slow_issues[len(fast_issues):] == []      # the batch needed no repair
    assert [r.features for r in fast_recs] == [r.features for r in slow_recs]
    assert fast_issues == slow_issues and fast.kinds == slow.kinds


def _fresh(text: str) -> str:
    """An equal str that is a new object (literals would be one shared constant)."""
    return "".join(list(text))


def test_validators_share_names_and_short_values_within_bounds(validator):
    """Records share one str per feature name and short repeated value; the sharing is bounded."""
    def plan(pid, value):
        (name, v), = validator.validate(_pred(pid, **{sc.feature_key("plan"): value})).features.items()
        return name, v

    a = validator.validate(_pred("a", **{sc.feature_key("plan"): _fresh("pro")}))
    b = validator.validate(_pred("b", **{sc.feature_key("plan"): _fresh("pro")}))
    (name_a, value_a), = a.features.items()
    (name_b, value_b), = b.features.items()
    assert name_a is name_b and value_a is value_b and a.model is b.model
    long = "x" * (MAX_SHARED_LENGTH + 1)
    assert plan("l1", _fresh(long))[1] is not plan("l2", _fresh(long))[1]     # long values are not kept
    for i in range(MAX_CACHED_NAMES + 50):
        validator.validate(_pred(f"q{i}", **{sc.feature_key("plan"): f"value-{i}"}))
    # The cache is full: a new value is no longer shared, one kept before still is.
    assert plan("n1", _fresh("new-value"))[1] is not plan("n2", _fresh("new-value"))[1]
    assert plan("o1", _fresh("pro"))[1] is value_a
