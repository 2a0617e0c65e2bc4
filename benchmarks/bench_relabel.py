"""Benchmark: what a first_n reference's late labels cost (issue 21, compute/manager.py _relabel).

For the default reference (first_n 1000) of a model with 100 numeric features, prints:
the label read (``Database.reference_labels``: one query over the reference's ids, SQLite, with
``--window`` more predictions of the version stored and every row labeled), and the refit
(``relabel_reference``: only the label-dependent parts) against a full ``prepare_reference`` of
the same rows (what refitting without keeping the features, drift and OOD parts would cost), for
a binary, a multi-class and a regression model; the multi-class / DLE fits waited for (they run on
their own thread in the processor). Wall seconds (``time.perf_counter``) and CPU seconds of the
whole process, user + system, all threads (``time.process_time``).

Run: ``PYTHONPATH=.:processors python benchmarks/bench_relabel.py [--first-n 1000] [--features 100] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.compute.engine import ModelSpec
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference, relabel_reference
from otel_ml_processor.store.database import Database

CLASSES = ["a", "b", "c"]


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def waited(prepared):
    for fit in (prepared.multiclass, prepared.dle):
        if fit is not None:
            fit.result()
    return prepared


def reference(task: str, n: int, features: int, rng) -> tuple:
    x = rng.normal(0, 1, (n, features))
    feats = {f"f{i:03d}": x[:, i].copy() for i in range(features)}
    if task == sc.TASK_REGRESSION:
        pred = x[:, 0] * 3 + 1
        label = np.empty(n, dtype=object)
        label[:] = (pred + rng.normal(0, 1, n)).tolist()
        return ReferenceData(feats, prediction=pred, task=task), label
    if task == "binary":
        p = 1 / (1 + np.exp(-2 * x[:, 0]))
        pred = np.where(p >= 0.5, "1", "0").astype(object)
        label = np.where(rng.random(n) < p, "1", "0").astype(object)
        return ReferenceData(feats, prediction=pred, score=np.maximum(p, 1 - p), task=sc.TASK_CLASSIFICATION), label
    logits = np.column_stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]]) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = np.array(CLASSES, dtype=object)[probs.argmax(axis=1)]
    label = np.array([rng.choice(CLASSES, p=p) for p in probs], dtype=object)
    return ReferenceData(feats, prediction=pred, probabilities={c: probs[:, k] for k, c in enumerate(CLASSES)},
                         task=sc.TASK_CLASSIFICATION), label


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--first-n", type=int, default=1000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"first_n {args.first_n}, {args.features} features")

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        total = args.first_n + args.window
        records = [PredictionRecord("m", "1", f"p{i}", sc.TASK_CLASSIFICATION, 1e9 + i,
                                    {f"f{k:03d}": float(v) for k, v in enumerate(rng.normal(0, 1, args.features))},
                                    output_label="1", score=0.8) for i in range(total)]
        for s in range(0, total, 2000):
            db.insert_predictions(records[s:s + 2000], now=1e9)
        db.upsert_labels([LabelRecord("m", f"p{i}", "1", 1e9) for i in range(total)], now=1e9)
        cut = db.reference_cut("m", "1", args.first_n)
        assert cut is not None
        times = [clock(lambda: db.reference_labels("m", "1", cut)) for _ in range(7)]
        assert len(times[0][0]) == args.first_n
        print(f"label read (reference_labels, {args.first_n} of {total} rows labeled): median "
              f"{statistics.median(t[1] for t in times) * 1e3:.1f} ms wall, "
              f"{statistics.median(t[2] for t in times) * 1e3:.1f} ms CPU")
        db.close()

    for task in ("binary", sc.TASK_CLASSIFICATION, sc.TASK_REGRESSION):
        data, label = reference(task, args.first_n, args.features, rng)
        spec = ModelSpec(task=data.task, positive_label="1" if task == "binary" else None)
        before = waited(prepare_reference(data, spec))
        data.label = label
        waited(relabel_reference(before, data, spec))        # warm-up (imports, first fit)
        runs: dict = {"relabel_reference": [], "prepare_reference": []}
        for _ in range(args.repeat):    # A/B alternated, in the same session
            runs["relabel_reference"].append(clock(lambda: waited(relabel_reference(before, data, spec)))[1:])
            runs["prepare_reference"].append(clock(lambda: waited(prepare_reference(data, spec)))[1:])
        print(f"{task}: " + "; ".join(f"{k} median {statistics.median(w for w, _ in v):.3f} s wall / "
                                      f"{statistics.median(c for _, c in v):.3f} s CPU" for k, v in runs.items()))


if __name__ == "__main__":
    main()
