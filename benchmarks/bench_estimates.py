"""Benchmark: the label-free estimates (issue 21) for 100 numeric features x 100 000 rows.

For a multi-class model (3 classes, ``__probability_<class>__`` in the reference) and a regression
model (DLE: two LightGBM models), prints the estimate's own costs, the fit on the reference
(``MulticlassCBPE.fit`` / ``DLE.fit``, inside ``prepare_reference``) and one estimate on the
window with its interval, then the whole first cycle (``prepare_reference`` + the first
``compute_model_metrics``, drift and OOD of the 100 features included; the estimator's fit runs
on its own thread meanwhile, :mod:`otel_ml_processor.compute.deferred`), how long after it the
fit was done, and a recompute with the estimates:
wall seconds (``time.perf_counter``) and CPU seconds of the whole process, user + system, all
threads (``time.process_time``; LightGBM trains on every core).

Run: ``PYTHONPATH=.:processors python benchmarks/bench_estimates.py [--rows 100000] [--features 100]``
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData
from otel_ml_processor.stats.cbpe_multiclass import MulticlassCBPE
from otel_ml_processor.stats.dle import DLE

CLASSES = ["a", "b", "c"]


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def data(task: str, rows: int, features: int, seed: int, shift: float):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (features, rows))
    x[: features // 10] += shift
    feats = {f"f{i:03d}": x[i] for i in range(features)}
    if task == sc.TASK_REGRESSION:
        pred = x[:5].sum(axis=0)
        label = pred + rng.normal(0, 1, rows) * (1 + np.abs(x[0]))
        return feats, pred, label.astype(object), {}
    logits = np.stack([x[0], x[1], -x[0] - x[1]]) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    pred = np.array(CLASSES, dtype=object)[probs.argmax(axis=0)]
    cum = np.cumsum(probs, axis=0)
    label = np.array(CLASSES, dtype=object)[(rng.uniform(size=rows) > cum).sum(axis=0).clip(0, 2)]
    return feats, pred, label, {c: probs[k] for k, c in enumerate(CLASSES)}


def window(task: str, rows: int, feats, pred, probs) -> WindowData:
    none = np.full(rows, None, dtype=object)
    return WindowData(model="m", model_version="1", task=task, prediction_ids=np.arange(rows).astype(str).astype(object),
                      timestamps=np.arange(rows, dtype=float), features=feats,
                      output_label=none if task == sc.TASK_REGRESSION else pred,
                      output_value=pred if task == sc.TASK_REGRESSION else np.full(rows, np.nan),
                      score=np.full(rows, np.nan), probabilities=probs, segments={}, label=none)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=100)
    a = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"{a.features} features x {a.rows} rows (window and reference)")
    for task in (sc.TASK_CLASSIFICATION, sc.TASK_REGRESSION):
        feats, pred, label, probs = data(task, a.rows, a.features, 1, 0.0)
        ref = ReferenceData(features=feats, prediction=pred, label=label, probabilities=probs, task=task)
        wf, wpred, _, wprobs = data(task, a.rows, a.features, 2, 0.5)
        win = window(task, a.rows, wf, wpred, wprobs)
        spec = ModelSpec(task=task)
        if task == sc.TASK_CLASSIFICATION:
            p_ref = np.column_stack([probs[c] for c in CLASSES])
            est, w, c = clock(lambda: MulticlassCBPE.fit(CLASSES, p_ref, label, pred))
            name = "multi-class CBPE"
            p_win = np.column_stack([wprobs[cl] for cl in CLASSES])
            _, w2, c2 = clock(lambda: est.intervals(*est.estimate(p_win, wpred)))
        else:
            est, w, c = clock(lambda: DLE.fit(feats, pred, label.astype(float)))
            name = "regression DLE"
            _, w2, c2 = clock(lambda: est.intervals(*est.estimate(wf, wpred)))
        print(f"{name}: fit {w:.2f} s wall / {c:.2f} s CPU; estimate + interval {w2:.3f} s wall / {c2:.3f} s CPU")
        prepared, pw, pc = clock(lambda: prepare_reference(ref, spec))
        m, fw, fc = clock(lambda: compute_model_metrics(win, prepared, spec))
        fit = prepared.multiclass if task == sc.TASK_CLASSIFICATION else prepared.dle
        assert fit is not None
        _, ww, _ = clock(fit.result)
        _, sw, scpu = clock(lambda: compute_model_metrics(win, prepared, spec))
        m2 = compute_model_metrics(win, prepared, spec)
        print(f"  first cycle {pw + fw:.2f} s wall ({pw:.2f} prepare + {fw:.2f} compute) / {pc + fc:.2f} s CPU, "
              f"estimates {sorted(m.estimated_performance)} (the fit runs on its own thread); the fit was done "
              f"{ww:.2f} s after it; then a recompute {sw:.2f} s wall / {scpu:.2f} s CPU, estimates "
              f"{sorted(m2.estimated_performance)}")


if __name__ == "__main__":
    main()
