"""MLInstrumentor on scikit-learn: signals per call, nesting, errors, ids, names, safety, uninstrument."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils import all_estimators

import otel_ml
from otel_ml import semconv as sc
from otel_ml.instrumentation import MLInstrumentor, PREDICT_METHODS, SILENCED_METHODS

from .conftest import start

RNG = np.random.default_rng(1)
XDF = pd.DataFrame({"age": RNG.normal(40, 10, 200), "income": RNG.normal(5, 2, 200),
                    "visits": RNG.integers(0, 9, 200)})
Y = np.where(XDF["age"] + RNG.normal(0, 5, 200) > 40, "yes", "no")


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(XDF, Y)


def test_predict_proba_gives_one_span_metrics_and_an_event_per_row(captured, pipe):
    rows = XDF.iloc[:5]
    tracer = captured.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /predict") as request_span:
        proba = pipe.predict_proba(rows)
    ids = otel_ml.last_prediction_ids()

    spans = captured.span_list()
    assert len(spans) == 1, "the Pipeline and its final estimator record once, at the outer call"
    span = spans[0]
    assert span.parent.span_id == request_span.get_span_context().span_id
    assert span.attributes[sc.ML_MODEL_NAME] == "churn" and span.attributes[sc.ML_MODEL_VERSION] == "3"
    assert span.attributes[sc.ML_PREDICT_ROWS] == 5 and span.attributes[sc.ML_PREDICT_METHOD] == "predict_proba"

    events = captured.events()
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == ids and len(set(ids)) == 5
    classes = [str(c) for c in pipe.classes_]
    for i, e in enumerate(events):
        a = e.attributes
        assert e.trace_id == span.context.trace_id and e.span_id == span.context.span_id
        assert a[sc.feature_key("age")] == rows["age"].iloc[i]
        assert a[sc.feature_key("visits")] == int(rows["visits"].iloc[i])
        assert a[sc.ML_OUTPUT_LABEL] == classes[int(np.argmax(proba[i]))]
        assert a[sc.ML_OUTPUT_SCORE] == pytest.approx(proba[i].max(), abs=0)
        for j, cls in enumerate(classes):
            assert a[sc.probability_key(cls)] == proba[i, j]
        assert a[sc.ML_MODEL_TASK] == sc.TASK_CLASSIFICATION
        assert e.timestamp and e.timestamp == span.start_time

    (count,) = captured.metric_points(sc.METRIC_CLIENT_PREDICTIONS)
    assert count.value == 5 and dict(count.attributes) == {sc.ML_MODEL_NAME: "churn", sc.ML_MODEL_VERSION: "3"}
    (duration,) = captured.metric_points(sc.METRIC_CLIENT_PREDICT_DURATION)
    assert tuple(duration.explicit_bounds) == sc.PREDICT_DURATION_BUCKETS and duration.count == 1
    (score,) = captured.metric_points(sc.METRIC_CLIENT_PREDICTION_SCORE)
    assert score.count == 5 and tuple(score.explicit_bounds) == sc.SCORE_BUCKETS
    assert score.sum == pytest.approx(proba.max(axis=1).sum(), rel=1e-12)


def test_predict_regression_and_numpy_feature_names(captured):
    X = RNG.normal(size=(30, 2))
    model = LinearRegression().fit(X, X @ [1.0, 2.0])
    out = model.predict(X[:3])
    events = captured.events()
    assert [e.attributes[sc.ML_OUTPUT_VALUE] for e in events] == out.tolist()
    assert set(events[0].attributes) >= {sc.feature_key("x0"), sc.feature_key("x1")}
    assert events[0].attributes[sc.ML_MODEL_TASK] == sc.TASK_REGRESSION
    assert sc.ML_OUTPUT_LABEL not in events[0].attributes


def test_decision_function_model_records_labels(captured):
    X = XDF.to_numpy()
    model = LinearSVC().fit(X, Y)
    predicted = model.predict(X[:4])                     # predict calls decision_function inside
    events = captured.events()
    assert len(captured.span_list()) == 1
    assert [e.attributes[sc.ML_OUTPUT_LABEL] for e in events] == [str(v) for v in predicted]


def test_error_reraised_unchanged_and_counted(captured):
    error = LookupError("feature store down")
    armed = []

    def transform(X):
        if armed:
            raise error
        return X

    model = Pipeline([("f", FunctionTransformer(transform)), ("m", LogisticRegression())]).fit(XDF, Y)
    armed.append(True)
    with pytest.raises(LookupError) as info:
        model.predict(XDF)
    assert info.value is error, "the very exception object is re-raised"
    (span,) = captured.span_list()
    assert span.status.status_code == StatusCode.ERROR
    assert any(ev.name == "exception" for ev in span.events)
    (err,) = captured.metric_points(sc.METRIC_CLIENT_ERRORS)
    assert err.value == 1 and err.attributes[sc.ERROR_TYPE] == "LookupError"
    assert captured.events() == [] and otel_ml.last_prediction_ids() == []


def test_fit_and_search_do_not_record(captured):
    GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(XDF, Y).score(XDF, Y)
    assert captured.span_list() == [] and captured.events() == []


def test_prediction_context_ids_segments_and_extra_attributes(captured, pipe):
    with otel_ml.prediction_context(ids=["a", "b"], segments=[{"gender": "f"}, {"gender": "m"}],
                                    attributes={sc.ENDUSER_ID: "u1"}):
        pipe.predict(XDF.iloc[:2])
        assert otel_ml.last_prediction_ids() == ["a", "b"]
    events = captured.events()
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == ["a", "b"]
    assert [e.attributes[sc.segment_key("gender")] for e in events] == ["f", "m"]
    assert all(e.attributes[sc.ENDUSER_ID] == "u1" for e in events)


def test_hooks_name_the_model_and_supply_ids(make_captured, pipe):
    cap = make_captured(model_hook=lambda model: ("hooked", "7"),
                        id_hook=lambda model, args, kwargs: [f"req-{i}" for i in range(len(args[0]))])
    pipe.predict(XDF.iloc[:3])
    events = cap.events()
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == ["req-0", "req-1", "req-2"]
    assert {(e.attributes[sc.ML_MODEL_NAME], e.attributes[sc.ML_MODEL_VERSION]) for e in events} == {("hooked", "7")}


def test_model_name_from_env_registration_and_estimator(make_captured, monkeypatch, pipe):
    monkeypatch.setenv(sc.ENV_MODEL_NAME, "from-env")
    monkeypatch.setenv(sc.ENV_MODEL_VERSION, "9")
    cap = make_captured()
    pipe.predict(XDF.iloc[:1])
    other = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    otel_ml.set_model(other, "price", "2")
    other.predict([[0.5]])
    otel_ml.set_model(other, "price", "3")
    other.predict([[0.5]])
    names = [(e.attributes[sc.ML_MODEL_NAME], e.attributes[sc.ML_MODEL_VERSION]) for e in cap.events()]
    assert names == [("from-env", "9"), ("price", "2"), ("price", "3")]
    audits = [(a.attributes[sc.ML_AUDIT_ACTION], a.attributes[sc.ML_MODEL_NAME], a.attributes[sc.ML_MODEL_VERSION])
              for a in cap.events(sc.EVENT_AUDIT)]
    assert audits == [(sc.AUDIT_MODEL_LOAD, "from-env", "9"), (sc.AUDIT_MODEL_LOAD, "price", "2"),
                      (sc.AUDIT_VERSION_CHANGE, "price", "3")]
    assert all(a.attributes[sc.ML_AUDIT_ACTOR] for a in cap.events(sc.EVENT_AUDIT))
    cap.instrumentor.uninstrument()
    monkeypatch.delenv(sc.ENV_MODEL_NAME)
    monkeypatch.delenv(sc.ENV_MODEL_VERSION)
    cap2 = make_captured()
    LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]).predict([[1.0]])
    (e,) = cap2.events()
    assert (e.attributes[sc.ML_MODEL_NAME], e.attributes[sc.ML_MODEL_VERSION]) == ("LinearRegression", "unknown")


def test_sampling_keeps_metrics_whole(make_captured, pipe):
    cap = make_captured(sample_ratio=0.0, model_name="m", model_version="1")
    pipe.predict(XDF.iloc[:10])
    assert cap.events() == []
    (count,) = cap.metric_points(sc.METRIC_CLIENT_PREDICTIONS)
    assert count.value == 10


def test_text_longer_than_cap_is_summarized(make_captured):
    cap = make_captured(max_text_length=10, model_name="t", model_version="1")
    texts = ["short", "a much longer text than ten characters", "fine text", "other words here"]
    model = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(texts, [0, 1, 0, 1])
    model.predict(texts[:2])
    a0, a1 = [e.attributes for e in cap.events()]
    assert a0[sc.feature_key("x0")] == "short"
    assert sc.feature_key("x0") not in a1 and a1[sc.feature_key("x0") + sc.FEATURE_SUMMARY_LENGTH] == len(texts[1])


def test_internal_failure_never_fails_predict(make_captured, pipe):
    def broken_hook(model):
        raise RuntimeError("hook bug")

    cap = make_captured(model_hook=broken_hook)
    expected = pipe.steps[-1][1].__class__.predict_proba.__wrapped__
    out = pipe.predict_proba(XDF.iloc[:2])
    assert out.shape == (2, 2) and expected is not None
    (internal,) = cap.metric_points(sc.METRIC_CLIENT_INSTRUMENTATION_ERRORS)
    assert internal.value == 1


def test_suppressed_instrumentation_records_nothing(captured, pipe):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        pipe.predict(XDF.iloc[:2])
    assert captured.events() == [] and captured.span_list() == []


def test_monitor_predict_context_manager_and_decorator(captured):
    with otel_ml.monitor_predict("torchy", "5") as call:
        call.set_outputs(features=[{"a": 1.0}, {"a": 2.0}], probabilities=[[0.2, 0.8], [0.9, 0.1]],
                         classes=["no", "yes"])
    ids = otel_ml.last_prediction_ids()

    @otel_ml.monitor_predict("rules", "1", task=sc.TASK_REGRESSION)
    def price(rows):
        return [r["m2"] * 10.0 for r in rows]

    assert price([{"m2": 3.0}]) == [30.0]
    events = captured.events()
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events[:2]] == ids
    assert [e.attributes[sc.ML_OUTPUT_LABEL] for e in events[:2]] == ["yes", "no"]
    assert events[0].attributes[sc.ML_OUTPUT_SCORE] == 0.8
    assert events[2].attributes[sc.ML_OUTPUT_VALUE] == 30.0 and events[2].attributes[sc.feature_key("m2")] == 3.0
    assert {s.attributes[sc.ML_MODEL_NAME] for s in captured.span_list()} == {"torchy", "rules"}


def _snapshot():
    import lightgbm.basic
    import lightgbm.sklearn
    import onnxruntime.capi.onnxruntime_inference_collection as ort
    import xgboost.core
    import xgboost.sklearn

    classes = [c for _, c in all_estimators()] + [Pipeline, xgboost.core.Booster, lightgbm.basic.Booster, ort.Session,
                                                  ort.InferenceSession]
    classes += [getattr(xgboost.sklearn, n) for n in ("XGBModel", "XGBClassifier", "XGBRegressor")]
    classes += [getattr(lightgbm.sklearn, n) for n in ("LGBMModel", "LGBMClassifier", "LGBMRegressor")]
    snap = {}
    for cls in classes:
        for klass in cls.__mro__:
            for name in PREDICT_METHODS + SILENCED_METHODS + ("inplace_predict", "run"):
                if name in klass.__dict__:
                    snap[(klass, name)] = klass.__dict__[name]
    return snap


def test_uninstrument_restores_every_original():
    before = _snapshot()
    cap = start(model_name="m", model_version="1")
    during = _snapshot()
    changed = [k for k in before if during[k] is not before[k]]
    assert len(changed) > 100, "sklearn, xgboost, lightgbm and onnxruntime methods were wrapped"
    assert before.keys() == during.keys()
    cap.instrumentor.uninstrument()
    after = _snapshot()
    assert after.keys() == before.keys()
    assert [k for k in before if after[k] is not before[k]] == []
    assert MLInstrumentor().is_instrumented_by_opentelemetry is False
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_update_config_changes_sampling_and_is_audited(make_captured, pipe):
    cap = make_captured(model_name="m", model_version="2")
    assert otel_ml.update_config(sample_ratio=0.0, actor="alice") == {"sample_ratio": (1.0, 0.0)}
    assert otel_ml.update_config(sample_ratio=0.0) == {}
    pipe.predict(XDF.iloc[:3])
    assert cap.events() == []
    (audit,) = [a.attributes for a in cap.events(sc.EVENT_AUDIT) if a.attributes[sc.ML_AUDIT_ACTION] == sc.AUDIT_CONFIG_CHANGE]
    assert audit[sc.ML_AUDIT_ACTOR] == "alice" and "sample_ratio: 1.0 -> 0.0" in audit[sc.ML_AUDIT_DETAIL]
    assert (audit[sc.ML_MODEL_NAME], audit[sc.ML_MODEL_VERSION]) == ("m", "2")


def test_forest_on_worker_threads_records_once(captured):
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=8, n_jobs=2, random_state=0).fit(XDF, Y)
    proba = model.predict_proba(XDF.iloc[:3])
    assert len(captured.span_list()) == 1, "trees predicted on joblib threads are not separate calls"
    assert [e.attributes[sc.ML_OUTPUT_SCORE] for e in captured.events()] == proba.max(axis=1).tolist()


def test_image_like_inputs_are_summarized(captured):
    images = RNG.random((6, 4, 4))
    flatten = FunctionTransformer(lambda a: np.asarray(a).reshape(len(a), -1))
    model = make_pipeline(flatten, LogisticRegression()).fit(images, [0, 1] * 3)
    model.predict(images[:2])
    a = captured.events()[0].attributes
    key = sc.feature_key("input")
    assert a[key + sc.FEATURE_SUMMARY_SIZE] == 16
    assert a[key + sc.FEATURE_SUMMARY_MEAN] == pytest.approx(images[0].mean(), rel=1e-12)
    assert (a[key + sc.FEATURE_SUMMARY_MIN], a[key + sc.FEATURE_SUMMARY_MAX]) == (images[0].min(), images[0].max())
    assert not any(isinstance(v, (list, tuple)) for v in a.values())


def test_the_last_call_keeps_no_model_input_alive(captured, pipe):
    """last_prediction_ids keeps the ids' makings, not the call: the app's input can be freed."""
    import gc
    import weakref

    X = XDF.iloc[:3].to_numpy().copy()
    model = LogisticRegression().fit(XDF.to_numpy(), Y)
    model.predict(X)
    captured.flush()
    ref = weakref.ref(X)
    del X
    gc.collect()
    assert ref() is None
    assert len(otel_ml.last_prediction_ids()) == 3
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in captured.events()] == otel_ml.last_prediction_ids()
