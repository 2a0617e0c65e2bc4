"""Run in NannyML's own virtual environment (scripts/install-nannyml-venv), never imported by
the tests: NannyML 0.13's CBPE (multi-class) and DLE (regression) on its own synthetic data sets.

Usage::

    NML_DISABLE_USAGE_LOGGING=1 ~/.cache/otel-ml/venvs/nannyml/bin/python tests/stats/nannyml_oracle.py OUT_DIR

writes, for ``multiclass`` and ``regression`` (and ``binary``: its reference and sampling errors): ``<task>_reference.csv`` and ``<task>_analysis.csv``
(otel-ml's reference-file layout: feature columns, ``__prediction__``, ``__label__``,
``__probability_<class>__``; the analysis file's ``__label__`` is the realized target) and
``<task>.json`` with NannyML's per-chunk estimate, sampling error, confidence bounds and realized
value of every metric, chunks of ``CHUNK`` consecutive analysis rows.
"""

import json
import os
import sys

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import nannyml as nml
import pandas as pd

REFERENCE_ROWS, ANALYSIS_ROWS, CHUNK = 20000, 10000, 2000
FIELDS = {"value": "estimated", "sampling_error": "sampling_error", "realized": "realized",
          "lower_confidence_boundary": "lower", "upper_confidence_boundary": "upper"}


def chunks(result, metrics) -> list:
    df = result.filter(period="analysis").to_df()
    out = []
    for i in range(len(df)):
        row = {"start": int(df[("chunk", "start_index")].iloc[i]), "end": int(df[("chunk", "end_index")].iloc[i]) + 1}
        for m in metrics:
            row[m] = {name: float(df[(m, col)].iloc[i]) for col, name in FIELDS.items() if (m, col) in df.columns}
        out.append(row)
    return out


def multiclass(out_dir: str) -> None:
    ref, ana, targets = nml.load_synthetic_multiclass_classification_dataset()
    ana = ana.merge(targets, on="id")
    ref, ana = ref.iloc[:REFERENCE_ROWS].reset_index(drop=True), ana.iloc[:ANALYSIS_ROWS].reset_index(drop=True)
    classes = sorted(c[len("y_pred_proba_"):] for c in ref.columns if c.startswith("y_pred_proba_"))
    proba = {c: f"y_pred_proba_{c}" for c in classes}
    metrics = ["accuracy", "precision", "recall", "f1", "roc_auc"]
    est = nml.CBPE(problem_type="classification_multiclass", y_pred_proba=proba, y_pred="y_pred", y_true="y_true",
                   metrics=metrics, chunk_size=CHUNK)
    est.fit(ref)
    result = est.estimate(ana)
    features = [c for c in ref.columns if c not in ("y_pred", "y_true", "timestamp", "id", *proba.values())]
    for name, df in (("reference", ref), ("analysis", ana)):
        cols = {f: df[f] for f in features}
        cols.update({"__prediction__": df["y_pred"], "__label__": df["y_true"]})
        cols.update({f"__probability_{c}__": df[proba[c]] for c in classes})
        pd.DataFrame(cols).to_csv(os.path.join(out_dir, f"multiclass_{name}.csv"), index=False)
    with open(os.path.join(out_dir, "multiclass.json"), "w") as fh:
        json.dump({"classes": classes, "chunk": CHUNK, "chunks": chunks(result, metrics),
                   "calibrated": {c: type(k).__name__ != "NoopCalibrator" for c, k in est._calibrators.items()}}, fh)


def binary(out_dir: str) -> None:
    """Binary CBPE's sampling errors (otel-ml's binary estimate itself always calibrates, see
    docs/metrics.md; its interval takes NannyML's sampling error)."""
    ref, ana, targets = nml.load_synthetic_binary_classification_dataset()
    ana = ana.merge(targets, on="id")
    ref, ana = ref.iloc[:REFERENCE_ROWS].reset_index(drop=True), ana.iloc[:ANALYSIS_ROWS].reset_index(drop=True)
    metrics = ["accuracy", "precision", "recall", "f1", "roc_auc"]
    est = nml.CBPE(problem_type="classification_binary", y_pred_proba="y_pred_proba", y_pred="y_pred",
                   y_true="work_home_actual", metrics=metrics, chunk_size=CHUNK)
    est.fit(ref)
    result = est.estimate(ana)
    pd.DataFrame({"__prediction__": ref["y_pred"], "__label__": ref["work_home_actual"],
                  "__probability_1__": ref["y_pred_proba"]}).to_csv(os.path.join(out_dir, "binary_reference.csv"),
                                                                    index=False)
    with open(os.path.join(out_dir, "binary.json"), "w") as fh:
        json.dump({"chunk": CHUNK, "chunks": chunks(result, metrics)}, fh)


def regression(out_dir: str) -> None:
    ref, ana, targets = nml.load_synthetic_car_price_dataset()
    ana = ana.merge(targets, on="id")
    ref, ana = ref.iloc[:REFERENCE_ROWS].reset_index(drop=True), ana.iloc[:ANALYSIS_ROWS].reset_index(drop=True)
    features = [c for c in ref.columns if c not in ("y_pred", "y_true", "timestamp", "id")]
    metrics = ["mae", "rmse"]
    est = nml.DLE(feature_column_names=features, y_pred="y_pred", y_true="y_true", metrics=metrics, chunk_size=CHUNK)
    est.fit(ref)
    result = est.estimate(ana)
    for name, df in (("reference", ref), ("analysis", ana)):
        cols = {f: df[f] for f in features}
        cols.update({"__prediction__": df["y_pred"], "__label__": df["y_true"]})
        pd.DataFrame(cols).to_csv(os.path.join(out_dir, f"regression_{name}.csv"), index=False)
    with open(os.path.join(out_dir, "regression.json"), "w") as fh:
        json.dump({"features": features, "chunk": CHUNK, "chunks": chunks(result, metrics)}, fh)


if __name__ == "__main__":
    multiclass(sys.argv[1])
    binary(sys.argv[1])
    regression(sys.argv[1])
