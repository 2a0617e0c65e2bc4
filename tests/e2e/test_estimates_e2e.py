"""Label-free estimates end to end (issue 21): the real processor, fed a multi-class and a
regression model's reference file and then their predictions over OTLP/gRPC, serves on /metrics
the CBPE and DLE estimates and their intervals that the stats functions give on the same rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import ModelSpec
from otel_ml_processor.compute.reference import load_reference_file, prepare_reference
from otel_ml_processor.export.pages.svg import number
from tests.support import ProcessorProcess, grpc_export, http_get, label, otlp_logs_request, wait_for

pytestmark = pytest.mark.e2e

CLASSES = ("ant", "bee", "cat")
REF_ROWS, WINDOW_ROWS = 600, 300


def _multiclass_rows(rng, n: int, shift: float):
    x = rng.normal(shift, 1, (n, 2))
    logits = np.column_stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]]) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # over-confident scores, so that calibration has something to do
    shown = probs ** 1.5 / (probs ** 1.5).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(CLASSES, p=p) for p in probs], dtype=object)
    preds = np.array(CLASSES, dtype=object)[shown.argmax(axis=1)]
    return x, shown, preds, labels


def _regression_rows(rng, n: int, shift: float):
    x = rng.normal(shift, 1, n)
    plan = rng.choice(["free", "pro", "team"], n)
    noise = rng.normal(0, 1, n) * (1 + np.abs(x)) * np.where(plan == "team", 2.0, 1.0)
    pred = 3 * x + 1
    return x, plan, pred, pred + noise


def test_processor_exports_multiclass_cbpe_and_regression_dle_as_the_stats_functions(tmp_path):
    rng = np.random.default_rng(21)
    x, probs, preds, labels = _multiclass_rows(rng, REF_ROWS, 0.0)
    head = "x0,x1,__prediction__,__label__," + ",".join(sc.reference_probability_column(c) for c in CLASSES)
    lines = [",".join([repr(float(a)), repr(float(b)), p, t, *(repr(float(v)) for v in pr)])
             for (a, b), p, t, pr in zip(x, preds, labels, probs)]
    (tmp_path / "mc.csv").write_text(head + "\n" + "\n".join(lines) + "\n")
    rx, rplan, rpred, rlabel = _regression_rows(rng, REF_ROWS, 0.0)
    (tmp_path / "reg.csv").write_text("x,plan,__prediction__,__label__\n" + "".join(
        f"{float(a)!r},{b},{float(p)!r},{float(t)!r}\n" for a, b, p, t in zip(rx, rplan, rpred, rlabel)))
    models = [{"name": "mc", "task": sc.TASK_CLASSIFICATION, "reference": {"path": "mc.csv"}},
              {"name": "reg", "task": sc.TASK_REGRESSION, "reference": {"path": "reg.csv"}}]

    # the windows: a covariate shift, so the estimates move away from the reference's own performance
    wx, wprobs, wpreds, _ = _multiclass_rows(rng, WINDOW_ROWS, 0.7)
    gx, gplan, gpred, _ = _regression_rows(rng, WINDOW_ROWS, 1.0)
    records = []
    for i in range(WINDOW_ROWS):
        attrs = {sc.ML_MODEL_NAME: "mc", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: f"m{i}",
                 sc.ML_MODEL_TASK: sc.TASK_CLASSIFICATION, sc.ML_OUTPUT_LABEL: str(wpreds[i]),
                 sc.feature_key("x0"): float(wx[i, 0]), sc.feature_key("x1"): float(wx[i, 1])}
        attrs.update({sc.probability_key(c): float(wprobs[i, k]) for k, c in enumerate(CLASSES)})
        records.append(("ml.prediction", attrs))
        records.append(("ml.prediction", {
            sc.ML_MODEL_NAME: "reg", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: f"r{i}",
            sc.ML_MODEL_TASK: sc.TASK_REGRESSION, sc.ML_OUTPUT_VALUE: float(gpred[i]),
            sc.feature_key("x"): float(gx[i]), sc.feature_key("plan"): str(gplan[i])}))

    # what the stats functions give on the same rows
    mc_fit = prepare_reference(load_reference_file(str(tmp_path / "mc.csv")), ModelSpec(task=sc.TASK_CLASSIFICATION)).multiclass
    assert mc_fit is not None
    mc = mc_fit.result()
    assert mc is not None
    mc_est, mc_rows = mc.estimate(wprobs, wpreds)
    mc_bounds = mc.intervals(mc_est, mc_rows)
    dle_fit = prepare_reference(load_reference_file(str(tmp_path / "reg.csv")), ModelSpec(task=sc.TASK_REGRESSION)).dle
    assert dle_fit is not None
    dle = dle_fit.result()
    assert dle is not None
    reg_est, reg_rows = dle.estimate({"x": gx, "plan": gplan.astype(object)}, gpred)
    reg_bounds = dle.intervals(reg_est, reg_rows)
    assert set(mc_est) == {sc.PERF_ACCURACY, sc.PERF_PRECISION, sc.PERF_RECALL, sc.PERF_F1, sc.PERF_ROC_AUC}
    assert set(reg_est) == {sc.PERF_MAE, sc.PERF_RMSE}

    with ProcessorProcess(tmp_path, models=models) as proc:
        grpc_export(proc.grpc_endpoint, otlp_logs_request(records))
        for model in ("mc", "reg"):
            wait_for(lambda: proc.sample(sc.M_WINDOW_PREDICTIONS, {"model": model}) == WINDOW_ROWS,
                     what=f"{model}'s window of {WINDOW_ROWS}")
        for model, est, bounds in (("mc", mc_est, mc_bounds), ("reg", reg_est, reg_bounds)):
            for metric, value in est.items():
                got = wait_for(lambda: proc.sample(sc.M_ESTIMATED_PERFORMANCE, {"model": model, "metric": metric}),
                               what=f"{model} estimated {metric}")
                assert math.isclose(got, value, rel_tol=1e-9), (model, metric, got, value)
                for bound in (sc.BOUND_LOWER, sc.BOUND_UPPER):
                    b = proc.sample(sc.M_ESTIMATED_PERFORMANCE_INTERVAL, {"model": model, "metric": metric, "bound": bound})
                    assert b is not None and math.isclose(b, bounds[(metric, bound)], rel_tol=1e-9), (model, metric, bound)
                assert bounds[(metric, sc.BOUND_LOWER)] <= value <= bounds[(metric, sc.BOUND_UPPER)]
        # the model page shows each estimate beside its interval
        page = http_get(f"http://{proc.metrics_endpoint}/models/reg")[1].decode()
        row = page[page.index('data-metric="mae"'):].split("</tr>")[0]
        shown = f"{number(reg_bounds[(sc.PERF_MAE, sc.BOUND_LOWER)])} – {number(reg_bounds[(sc.PERF_MAE, sc.BOUND_UPPER)])}"
        assert number(reg_est[sc.PERF_MAE]) in row and shown in row


FIRST_N = 300


def test_default_first_n_reference_gets_its_labels_late_and_the_estimates_of_a_reference_file(tmp_path):
    """The default reference (first_n, here 300) of a multi-class and a regression model is
    complete, and prepared, before any of its labels come back; once they do, the processor
    refits CBPE's calibration and DLE on them: /metrics then shows the estimates and intervals
    that the same rows give as a reference file with ``__label__``."""
    rng = np.random.default_rng(2121)
    x, probs, preds, labels = _multiclass_rows(rng, FIRST_N, 0.0)
    rx, rplan, rpred, rlabel = _regression_rows(rng, FIRST_N, 0.0)
    wx, wprobs, wpreds, _ = _multiclass_rows(rng, WINDOW_ROWS, 0.7)
    gx, gplan, gpred, _ = _regression_rows(rng, WINDOW_ROWS, 1.0)

    def mc_record(pid, a, p, pr):
        attrs = {sc.ML_MODEL_NAME: "mc", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: pid,
                 sc.ML_MODEL_TASK: sc.TASK_CLASSIFICATION, sc.ML_OUTPUT_LABEL: str(p),
                 sc.feature_key("x0"): float(a[0]), sc.feature_key("x1"): float(a[1])}
        attrs.update({sc.probability_key(c): float(pr[k]) for k, c in enumerate(CLASSES)})
        return "ml.prediction", attrs

    def reg_record(pid, a, plan, p):
        return "ml.prediction", {sc.ML_MODEL_NAME: "reg", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: pid,
                                 sc.ML_MODEL_TASK: sc.TASK_REGRESSION, sc.ML_OUTPUT_VALUE: float(p),
                                 sc.feature_key("x"): float(a), sc.feature_key("plan"): str(plan)}

    # the same reference rows as files (features in the window's order: sorted), for the expected values
    head = "x0,x1,__prediction__,__label__," + ",".join(sc.reference_probability_column(c) for c in CLASSES)
    (tmp_path / "mc.csv").write_text(head + "\n" + "".join(
        ",".join([repr(float(a)), repr(float(b)), p, t, *(repr(float(v)) for v in pr)]) + "\n"
        for (a, b), p, t, pr in zip(x, preds, labels, probs)))
    (tmp_path / "reg.csv").write_text("plan,x,__prediction__,__label__\n" + "".join(
        f"{b},{float(a)!r},{float(p)!r},{float(t)!r}\n" for a, b, p, t in zip(rx, rplan, rpred, rlabel)))
    mc_fit = prepare_reference(load_reference_file(str(tmp_path / "mc.csv")), ModelSpec(task=sc.TASK_CLASSIFICATION))
    assert mc_fit.multiclass is not None and (mc := mc_fit.multiclass.result()) is not None
    mc_est, mc_rows = mc.estimate(wprobs, wpreds)
    mc_bounds = mc.intervals(mc_est, mc_rows)
    dle_fit = prepare_reference(load_reference_file(str(tmp_path / "reg.csv")), ModelSpec(task=sc.TASK_REGRESSION))
    assert dle_fit.dle is not None and (dle := dle_fit.dle.result()) is not None
    reg_est, reg_rows = dle.estimate({"plan": gplan.astype(object), "x": gx}, gpred)
    reg_bounds = dle.intervals(reg_est, reg_rows)

    models = [{"name": "mc", "task": sc.TASK_CLASSIFICATION, "reference": {"first_n": FIRST_N}},
              {"name": "reg", "task": sc.TASK_REGRESSION, "reference": {"first_n": FIRST_N}}]
    with ProcessorProcess(tmp_path / "proc", models=models, interval="0.5s") as proc:
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [mc_record(f"m{i}", x[i], preds[i], probs[i]) for i in range(FIRST_N)]
            + [reg_record(f"r{i}", rx[i], rplan[i], rpred[i]) for i in range(FIRST_N)]))
        for model in ("mc", "reg"):
            wait_for(lambda: proc.sample(sc.M_REFERENCE_PREDICTIONS, {"model": model}) == FIRST_N,
                     what=f"{model}'s reference collected")
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [mc_record(f"w{i}", wx[i], wpreds[i], wprobs[i]) for i in range(WINDOW_ROWS)]
            + [reg_record(f"g{i}", gx[i], gplan[i], gpred[i]) for i in range(WINDOW_ROWS)]))
        # both references prepared without labels: multi-class CBPE uncalibrated, no DLE at all
        uncalibrated = wait_for(lambda: proc.sample(sc.M_ESTIMATED_PERFORMANCE, {"model": "mc", "metric": sc.PERF_ACCURACY}),
                                what="mc's estimate from its unlabeled reference")
        wait_for(lambda: proc.sample(sc.M_DRIFT_SCORE, {"model": "reg", "feature": "x"}) is not None
                 or proc.sample(sc.M_DRIFT_PVALUE, {"model": "reg", "feature": "x"}) is not None,
                 what="reg's reference prepared")
        assert proc.sample(sc.M_ESTIMATED_PERFORMANCE, {"model": "reg", "metric": sc.PERF_MAE}) is None
        assert not math.isclose(uncalibrated, mc_est[sc.PERF_ACCURACY], rel_tol=1e-6)

        # the reference's labels come back
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [label("mc", f"m{i}", str(labels[i])) for i in range(FIRST_N)]
            + [label("reg", f"r{i}", float(rlabel[i])) for i in range(FIRST_N)]))
        for model, est, bounds in (("mc", mc_est, mc_bounds), ("reg", reg_est, reg_bounds)):
            for metric, value in est.items():
                got = wait_for(lambda: (v := proc.sample(sc.M_ESTIMATED_PERFORMANCE, {"model": model, "metric": metric}))
                               is not None and math.isclose(v, value, rel_tol=1e-9) and v,
                               what=f"{model} estimated {metric} = {value} (log: {proc.log_path})")
                assert math.isclose(got, value, rel_tol=1e-9), (model, metric, got, value)
                for bound in (sc.BOUND_LOWER, sc.BOUND_UPPER):
                    b = proc.sample(sc.M_ESTIMATED_PERFORMANCE_INTERVAL, {"model": model, "metric": metric, "bound": bound})
                    assert b is not None and math.isclose(b, bounds[(metric, bound)], rel_tol=1e-9), (model, metric, bound)
        assert "now labeled" in proc.log()
