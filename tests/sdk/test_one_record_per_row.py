"""One ``ml.prediction`` per row predicted: a server calling ``predict``, ``predict_proba`` and
``decision_function`` on the same rows for one request (MLServer's sklearn runtime does
``predict`` then ``predict_proba`` on the same array) makes one record per row with the label,
the score and the probabilities together; a genuinely new prediction is its own record."""

from __future__ import annotations

import contextvars
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import calls, pipeline
from otel_ml import semconv as sc

RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, 4))
Y = np.where(X[:, 0] + RNG.normal(0, 0.5, 300) > 0, "yes", "no")
Y3 = np.array(["a", "b", "c"])[np.digitize(X[:, 1], [-0.4, 0.4])]


@pytest.fixture(scope="module")
def model():
    return LogisticRegression().fit(X, Y)


def _served(model, rows, methods):
    """What a model server's request handler does: several methods on the one decoded array."""
    return [getattr(model, m)(rows) for m in methods]


def test_predict_then_predict_proba_on_the_same_rows_is_one_record_per_row(captured, model):
    rows = X[:6].copy()
    tracer = captured.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /v2/models/churn/infer"):
        labels, proba = _served(model, rows, ("predict", "predict_proba"))
    ids = otel_ml.last_prediction_ids()
    events = captured.events()
    assert len(events) == 6 and [e.attributes[sc.ML_PREDICTION_ID] for e in events] == ids
    classes = [str(c) for c in model.classes_]
    for i, e in enumerate(events):
        a = e.attributes
        assert a[sc.ML_OUTPUT_LABEL] == str(labels[i])
        col = classes.index(str(labels[i]))
        assert a[sc.ML_OUTPUT_SCORE] == proba[i, col]
        assert [a[sc.probability_key(c)] for c in classes] == proba[i].tolist()
        assert a[sc.feature_key("x0")] == rows[i, 0]
    assert len(captured.span_list()) == 2, "each call keeps its own span"
    (count,) = captured.metric_points(sc.METRIC_CLIENT_PREDICTIONS)
    assert count.value == 6
    (score,) = captured.metric_points(sc.METRIC_CLIENT_PREDICTION_SCORE)
    assert score.count == 6


def test_all_three_methods_join_and_the_label_is_predicts(captured):
    svc = LogisticRegression().fit(X, Y3)
    rows = X[:40].copy()
    labels, dec, proba = _served(svc, rows, ("predict", "decision_function", "predict_proba"))
    events = captured.events()
    assert len(events) == 40
    classes = [str(c) for c in svc.classes_]
    for i, e in enumerate(events):
        a = e.attributes
        # The record says what predict answered, scored by its probability.
        assert a[sc.ML_OUTPUT_LABEL] == str(labels[i])
        assert a[sc.ML_OUTPUT_SCORE] == proba[i, classes.index(str(labels[i]))]
        assert [a[sc.probability_key(c)] for c in classes] == proba[i].tolist()


@pytest.mark.parametrize("again", ["same method again", "another input object", "another request span"])
def test_a_new_prediction_on_the_same_input_is_its_own_record(captured, model, again):
    rows = X[:5].copy()
    tracer = captured.tracer_provider.get_tracer("app")
    if again == "same method again":
        model.predict_proba(rows)
        model.predict_proba(rows)
    elif again == "another input object":
        model.predict(rows)
        model.predict_proba(rows.copy())
    else:
        for _ in range(2):
            with tracer.start_as_current_span("POST /predict"):
                model.predict(rows)
    events = captured.events()
    assert len(events) == 10 and len({e.attributes[sc.ML_PREDICTION_ID] for e in events}) == 10
    (count,) = captured.metric_points(sc.METRIC_CLIENT_PREDICTIONS)
    assert count.value == 10


def test_joined_call_answers_the_same_prediction_ids(captured, model):
    rows = X[:3].copy()
    model.predict(rows)
    first = otel_ml.last_prediction_ids()
    model.predict_proba(rows)
    assert otel_ml.last_prediction_ids() == first
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in captured.events()] == first


def _settled(recorder) -> list:
    """The groups the recorder still holds once it has processed every queued call."""
    deadline = time.monotonic() + 30            # a bound on waiting, not a speed assertion
    while recorder._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)                             # the pass that took the last call ends
    return [g.call for g in list(recorder._held.values())]


def test_rows_no_call_can_join_are_written_without_waiting_for_the_window(captured, model, monkeypatch):
    # With a join window of an hour, only "nothing refers to the group's call any more" lets the
    # recorder write it: held rows must not outlive their last chance of a join (GC pressure).
    monkeypatch.setattr(calls, "JOIN_WINDOW_NS", 3_600 * 10**9)
    recorder = pipeline.active().recorder
    first, second = X[:4].copy(), X[4:7].copy()
    model.predict_proba(first)
    model.predict_proba(second)                 # this thread moved on: the first can't be joined
    held = _settled(recorder)
    assert [c.args[0] is second for c in held] == [True], "only the call this thread may still join is held"
    model.predict(second)                       # ... and it still is joined
    events = captured.events()
    assert len(events) == 7
    assert all(sc.ML_OUTPUT_SCORE in e.attributes for e in events)


def test_a_context_still_holding_the_call_keeps_it_joinable(captured, model, monkeypatch):
    monkeypatch.setattr(calls, "JOIN_WINDOW_NS", 3_600 * 10**9)
    recorder = pipeline.active().recorder
    rows = X[:5].copy()
    model.predict(rows)
    task = contextvars.copy_context()           # as an asyncio task made now would hold it
    model.predict(X[5:8].copy())                # this thread moves on; the copied context has not
    assert len(_settled(recorder)) == 2
    task.run(model.predict_proba, rows)         # joins the first call from the copied context
    events = captured.events()
    assert len(events) == 8
    assert sum(sc.probability_key(str(model.classes_[0])) in e.attributes for e in events) == 5
