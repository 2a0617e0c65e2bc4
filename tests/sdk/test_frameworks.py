"""XGBoost, LightGBM and ONNX Runtime: each call's events match what the framework returned."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression, LogisticRegression

import otel_ml
from otel_ml import semconv as sc

RNG = np.random.default_rng(3)
X = pd.DataFrame({"a": RNG.normal(size=300), "b": RNG.normal(size=300)})
Y = (X["a"] + X["b"] > 0).astype(int).to_numpy()


def _check_classification(events, proba, classes, names=("a", "b"), rows=None):
    assert len(events) == len(proba)
    for i, e in enumerate(events):
        a = e.attributes
        j = int(np.argmax(proba[i]))
        assert a[sc.ML_OUTPUT_LABEL] == str(classes[j])
        assert a[sc.ML_OUTPUT_SCORE] == pytest.approx(float(proba[i][j]), rel=1e-6)
        assert a[sc.ML_MODEL_TASK] == sc.TASK_CLASSIFICATION
        for n in names:
            assert sc.feature_key(n) in a
        if rows is not None:
            assert a[sc.feature_key(names[0])] == pytest.approx(float(rows[i][0]), rel=1e-6)


def test_xgboost_sklearn_api_records_once(captured):
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y)
    proba = model.predict_proba(X.iloc[:4])
    assert len(captured.span_list()) == 1, "XGBClassifier calling its booster records once"
    events = captured.events()
    _check_classification(events, proba, model.classes_, rows=X.iloc[:4].to_numpy())
    assert captured.span_list()[0].attributes[sc.ML_FRAMEWORK] == "xgboost"


def test_xgboost_native_booster(captured):
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, label=Y), num_boost_round=3)
    p = booster.predict(xgb.DMatrix(X.iloc[:3]))
    events = captured.events()
    _check_classification(events, np.c_[1 - p, p], [0, 1], rows=X.iloc[:3].to_numpy())


def test_lightgbm_sklearn_and_native(captured):
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, Y)
    proba = model.predict_proba(X.iloc[:3])
    _check_classification(captured.events(), proba, model.classes_, rows=X.iloc[:3].to_numpy())
    assert len(captured.span_list()) == 1
    reg = lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, X["a"] * 2)
    values = reg.booster_.predict(X.iloc[:2])
    native = captured.events()[3:]
    assert [e.attributes[sc.ML_OUTPUT_VALUE] for e in native] == pytest.approx(values.tolist(), rel=1e-12)
    assert native[0].attributes[sc.ML_MODEL_TASK] == sc.TASK_REGRESSION


def test_onnxruntime_classifier_and_regressor(captured):
    Xf = X.to_numpy().astype(np.float32)
    with otel_ml.prediction_context(model_name="sk"):   # training-side predicts stay apart
        clf = LogisticRegression().fit(Xf, Y)
    sess = ort.InferenceSession(to_onnx(clf, Xf[:1]).SerializeToString(), providers=["CPUExecutionProvider"])
    labels, probs = sess.run(None, {sess.get_inputs()[0].name: Xf[:3]})
    events = captured.events()
    assert [e.attributes[sc.ML_OUTPUT_LABEL] for e in events] == [str(v) for v in labels]
    assert [e.attributes[sc.ML_OUTPUT_SCORE] for e in events] == pytest.approx(
        [p[int(lbl)] for p, lbl in zip(probs, labels)], rel=1e-6)
    assert events[0].attributes[sc.feature_key("x0")] == pytest.approx(float(Xf[0, 0]))
    assert captured.span_list()[0].attributes[sc.ML_FRAMEWORK] == "onnxruntime"

    reg = LinearRegression().fit(Xf, Xf[:, 0] * 3)
    rsess = ort.InferenceSession(to_onnx(reg, Xf[:1]).SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = rsess.run(None, {rsess.get_inputs()[0].name: Xf[:2]})
    reg_events = captured.events()[3:]
    assert [e.attributes[sc.ML_OUTPUT_VALUE] for e in reg_events] == pytest.approx(out.ravel().tolist(), rel=1e-6)
    assert reg_events[0].attributes[sc.ML_MODEL_TASK] == sc.TASK_REGRESSION


def test_onnx_model_with_one_input_per_feature(captured):
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xf = X.astype(np.float32)
    model = make_pipeline(ColumnTransformer([("s", StandardScaler(), ["a", "b"])]), LogisticRegression()).fit(Xf, Y)
    onx = to_onnx(model, initial_types=[("a", FloatTensorType([None, 1])), ("b", FloatTensorType([None, 1]))],
                  options={"zipmap": False})
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"a": Xf[["a"]].to_numpy()[:2], "b": Xf[["b"]].to_numpy()[:2]}
    labels, probs = sess.run(None, feed)
    events = captured.events()
    assert [e.attributes[sc.feature_key("a")] for e in events] == pytest.approx(feed["a"].ravel().tolist())
    assert [e.attributes[sc.feature_key("b")] for e in events] == pytest.approx(feed["b"].ravel().tolist())
    assert [e.attributes[sc.ML_OUTPUT_LABEL] for e in events] == [str(v) for v in labels]
    assert [e.attributes[sc.probability_key("1")] for e in events] == pytest.approx(probs[:, 1].tolist(), rel=1e-6)
