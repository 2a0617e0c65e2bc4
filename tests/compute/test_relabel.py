"""A first_n reference whose labels join after it was prepared (relabel_reference): the same
label-free estimates, to 1e-9, as the same rows given as a reference file with ``__label__``;
its features, drift and OOD parts untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import (
    load_reference_file, prepare_reference, reference_from_window, relabel_reference,
)
from otel_ml_processor.compute.window import rows_to_window

CLASSES = ("ant", "bee", "cat")


def _rows(task: str, n: int, shift: float, seed: int, start: int = 0) -> list:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1, (n, 2))
    out = []
    for i in range(n):
        row = dict(prediction_id=f"p{start + i}", timestamp=float(start + i), segments={}, score=None,
                   probabilities={}, output_label=None, output_value=None,
                   features={"x0": float(x[i, 0]), "x1": float(x[i, 1]), "plan": f"v{rng.integers(3)}"})
        if task == sc.TASK_REGRESSION:
            pred = 3 * x[i, 0] + 1
            row["output_value"] = float(pred)
            row["label"] = float(pred + rng.normal(0, 1) * (1 + abs(x[i, 1])))
        elif task == "binary":
            p = 1 / (1 + math.exp(-2 * x[i, 0]))
            row["output_label"] = "1" if p >= 0.5 else "0"
            row["score"] = max(p, 1 - p) ** 0.7     # over-confident: calibration has work to do
            row["label"] = "1" if rng.random() < p else "0"
        else:
            logits = np.array([x[i, 0], x[i, 1], -x[i, 0] - x[i, 1]]) * 1.5
            probs = np.exp(logits) / np.exp(logits).sum()
            shown = probs ** 1.5 / (probs ** 1.5).sum()
            row["probabilities"] = {c: float(v) for c, v in zip(CLASSES, shown)}
            row["output_label"] = CLASSES[int(shown.argmax())]
            row["label"] = str(rng.choice(CLASSES, p=probs))
        out.append(row)
    return out


def _csv(path, rows: list, task: str) -> str:
    """The same rows as a reference file, features in the window's column order."""
    feats = list(rows_to_window("m", "1", "classification", rows[:1]).features)
    probs = [sc.reference_probability_column(c) for c in CLASSES] if rows[0]["probabilities"] else []
    head = feats + [sc.REFERENCE_PREDICTION_COLUMN, sc.REFERENCE_LABEL_COLUMN] + \
        ([sc.REFERENCE_SCORE_COLUMN] if rows[0]["score"] is not None else []) + probs
    lines = []
    for r in rows:
        cells = [repr(v) if isinstance(v, float) else v for v in (r["features"][k] for k in feats)]
        cells.append(repr(r["output_value"]) if task == sc.TASK_REGRESSION else r["output_label"])
        cells.append(repr(r["label"]) if isinstance(r["label"], float) else r["label"])
        if r["score"] is not None:
            cells.append(repr(r["score"]))
        cells += [repr(r["probabilities"][c]) for c in CLASSES] if probs else []
        lines.append(",".join(cells))
    path.write_text(",".join(head) + "\n" + "\n".join(lines) + "\n")
    return str(path)


def _estimates(prepared, window, spec) -> tuple:
    for fit in (prepared.multiclass, prepared.dle):
        if fit is not None:
            fit.result()
    m = compute_model_metrics(window, prepared, spec)
    return m.estimated_performance, m.estimated_performance_interval


@pytest.mark.parametrize("task", ["binary", sc.TASK_CLASSIFICATION, sc.TASK_REGRESSION])
def test_first_n_labels_joined_later_give_the_reference_files_estimates(task, tmp_path):
    spec = ModelSpec(task=sc.TASK_REGRESSION if task == sc.TASK_REGRESSION else sc.TASK_CLASSIFICATION,
                     positive_label="1" if task == "binary" else None)
    ref_rows = _rows(task, 300, 0.0, seed=21)
    window = rows_to_window("m", "1", spec.task, [{**r, "label": None} for r in _rows(task, 200, 0.8, 22, 300)])
    unlabeled = reference_from_window(rows_to_window("m", "1", spec.task, [{**r, "label": None} for r in ref_rows],
                                                     by_time=False), 300)
    before = prepare_reference(unlabeled, spec)
    assert before.labeled_rows == 0

    # the labels come back: the same rows, now labeled
    labeled = reference_from_window(rows_to_window("m", "1", spec.task, ref_rows, by_time=False), 300)
    after = relabel_reference(before, labeled, spec)
    from_file = prepare_reference(load_reference_file(_csv(tmp_path / "ref.csv", ref_rows, spec.task)), spec)
    assert after.labeled_rows == from_file.labeled_rows == 300

    est, iv = _estimates(after, window, spec)
    want_est, want_iv = _estimates(from_file, window, spec)
    expected = {"binary": {sc.PERF_ACCURACY, sc.PERF_PRECISION, sc.PERF_RECALL, sc.PERF_F1, sc.PERF_ROC_AUC},
                sc.TASK_CLASSIFICATION: {sc.PERF_ACCURACY, sc.PERF_PRECISION, sc.PERF_RECALL, sc.PERF_F1,
                                         sc.PERF_ROC_AUC},
                sc.TASK_REGRESSION: {sc.PERF_MAE, sc.PERF_RMSE}}[task]
    assert set(est) == set(want_est) >= expected
    for k, v in want_est.items():
        assert math.isclose(est[k], v, rel_tol=1e-9, abs_tol=1e-12), (k, est[k], v)
    # an interval for every estimate, the labels' sampling error included
    assert set(iv) == set(want_iv) == {(k, b) for k in want_est for b in (sc.BOUND_LOWER, sc.BOUND_UPPER)}
    for k, v in want_iv.items():
        assert math.isclose(iv[k], v, rel_tol=1e-9, abs_tol=1e-12), (k, iv[k], v)

    # without the labels the estimates were not those: the refit is what changed them
    est_before, iv_before = _estimates(before, window, spec)
    if task == sc.TASK_REGRESSION:
        assert est_before == {}                     # no DLE without labels
    else:
        assert any(not math.isclose(est_before[k], v, rel_tol=1e-6) for k, v in want_est.items()) or \
            any(not math.isclose(iv_before.get(k, math.nan), v, rel_tol=1e-6) for k, v in want_iv.items())

    # the reference's features, drift and OOD parts are the very same objects
    assert after.features is before.features and after.prediction is before.prediction
    assert after.multivariate is before.multivariate and after.companions is before.companions
    assert after.n_rows == before.n_rows == 300


def test_relabel_needs_the_same_rows():
    spec = ModelSpec(task=sc.TASK_REGRESSION)
    rows = _rows(sc.TASK_REGRESSION, 50, 0.0, seed=1)
    prepared = prepare_reference(reference_from_window(rows_to_window("m", "1", spec.task, rows), 50), spec)
    with pytest.raises(ValueError, match="40 rows"):
        relabel_reference(prepared, reference_from_window(rows_to_window("m", "1", spec.task, rows), 40), spec)


def test_model_windows_refit_a_first_n_reference_as_its_labels_join(tmp_path):
    """ModelWindows (real SQLite): a first_n reference prepared before its labels is refitted when
    10 % more of its rows are labeled (read in one query), and once all are; window rows' labels
    do not count; features, drift and OOD stay the very same objects."""
    from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
    from otel_ml_processor.compute.manager import Committed, ModelWindows
    from otel_ml_processor.config import parse_config
    from otel_ml_processor.counters import Caps, Counters
    from otel_ml_processor.store.database import Database

    t0 = 1_700_000_000.0
    config = parse_config({"models": [{"name": "m", "positive_label": "1", "reference": {"first_n": 20}}]})
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    windows = ModelWindows(config, db, Caps(100, 500, Counters(), initial_models=["m"]))
    windows.relabel_cycles = 1
    rng = np.random.default_rng(3)
    records = [PredictionRecord("m", "1", f"p{i}", "classification", t0 + i, {"x": float(rng.normal())},
                                output_label=str(i % 2), score=float(rng.uniform(0.5, 1))) for i in range(25)]
    write = db.insert_predictions(records, now=t0)
    windows.committed(Committed(write.inserted, write.ids, t0, write.joined))
    windows.sync(t0)

    def label(ids: list) -> None:
        joins = db.upsert_labels([LabelRecord("m", f"p{i}", str((i + 1) // 2 % 2), t0) for i in ids], now=t0).joined
        windows.committed(Committed(received_at=t0, joins=joins))

    first = windows.reference("m", "1", "classification", ["x"])
    assert first is not None and first.labeled_rows == 0 and first.calibrator is None and not first.binary_coefficients
    label([21, 22, 23, 24, 0])                      # window rows' labels, and one reference row (< 10 %)
    assert windows.reference("m", "1", "classification", ["x"]) is first
    assert db.reference_labels("m", "1", windows._first_n[("m", "1")].cut) == {"p0": "0"}
    label([1])                                      # 2 of 20 reference rows: 10 % more
    second = windows.reference("m", "1", "classification", ["x"])
    assert second is not first and second.labeled_rows == 2 and second.binary_coefficients
    assert second.features is first.features and second.prediction is first.prediction
    label(range(2, 20))                             # all of them
    third = windows.reference("m", "1", "classification", ["x"])
    assert third.labeled_rows == 20 and third.calibrator is not None and ("m", "1") not in windows._first_n
    assert windows.reference("m", "1", "classification", ["x"]) is third
    db.close()
