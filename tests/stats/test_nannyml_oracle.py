"""NannyML 0.13 is the oracle of the label-free estimates (DESIGN.md "Label-free estimates").

``tests/stats/nannyml_oracle.py`` runs in NannyML's own virtual environment
(``scripts/install-nannyml-venv``, which ``scripts/install-test-deps`` calls) on NannyML's shipped
synthetic data sets and writes the rows (as otel-ml reference files) and its per-chunk results.
otel-ml reads the same files with its own reference loader and must give:

- multi-class CBPE: every estimate, and both bounds of its interval, equal per chunk to 1e-6;
- regression DLE: mae and rmse within 2 % per chunk (LightGBM's defaults are deterministic, so in
  practice equal), interval bounds as well; the distance of each to the realized value is printed
  (``-s``) and written in BENCHMARKS.md, not required to beat NannyML's.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import ModelSpec
from otel_ml_processor.compute.reference import load_reference_file, prepare_reference

ROOT = Path(__file__).resolve().parents[2]
# NannyML's own run (its three data sets, DLE's LightGBM fits) is in the first test's time: ~100 s on
# an idle 2-core machine, ~300 s on a loaded one, so the file's limit is above the suite's 300 s.
pytestmark = pytest.mark.timeout(900)

MULTICLASS_METRICS = (sc.PERF_ACCURACY, sc.PERF_PRECISION, sc.PERF_RECALL, sc.PERF_F1, sc.PERF_ROC_AUC)


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory) -> Path:
    """NannyML's results and rows, written by its own venv (installed by install-test-deps)."""
    python = subprocess.run([str(ROOT / "scripts" / "install-nannyml-venv")], check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
    out = tmp_path_factory.mktemp("nannyml")
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    env.pop("PYTHONPATH", None)   # NannyML's venv must not import this checkout's packages
    subprocess.run([python, str(ROOT / "tests" / "stats" / "nannyml_oracle.py"), str(out)], check=True,
                   env=env, capture_output=True)
    return out


def _chunks(d: Path, task: str) -> dict:
    with open(d / f"{task}.json") as fh:
        return json.load(fh)


def test_multiclass_cbpe_equals_nannyml_per_chunk(oracle_dir):
    oracle = _chunks(oracle_dir, "multiclass")
    prepared = prepare_reference(load_reference_file(str(oracle_dir / "multiclass_reference.csv")),
                                 ModelSpec(task=sc.TASK_CLASSIFICATION))
    assert prepared.multiclass is not None
    mc = prepared.multiclass.result()       # fitted on its own thread
    assert mc is not None and mc.classes == oracle["classes"]
    # the calibration test decides as NannyML's did, class by class
    assert {c: cal is not None for c, cal in zip(mc.classes, mc.calibrators)} == oracle["calibrated"]
    window = load_reference_file(str(oracle_dir / "multiclass_analysis.csv"))
    probs = np.column_stack([window.probabilities[c] for c in mc.classes])
    assert len(oracle["chunks"]) >= 5
    for chunk in oracle["chunks"]:
        rows = slice(chunk["start"], chunk["end"])
        est, used = mc.estimate(probs[rows], window.prediction[rows])
        bounds = mc.intervals(est, used)
        for metric in MULTICLASS_METRICS:
            nml = chunk[metric]
            assert est[metric] == pytest.approx(nml["estimated"], abs=1e-6), (chunk["start"], metric)
            assert bounds[(metric, sc.BOUND_LOWER)] == pytest.approx(nml["lower"], abs=1e-6), (chunk["start"], metric)
            assert bounds[(metric, sc.BOUND_UPPER)] == pytest.approx(nml["upper"], abs=1e-6), (chunk["start"], metric)


def test_binary_interval_takes_nannyml_sampling_error(oracle_dir):
    oracle = _chunks(oracle_dir, "binary")
    prepared = prepare_reference(load_reference_file(str(oracle_dir / "binary_reference.csv")),
                                 ModelSpec(task=sc.TASK_CLASSIFICATION, positive_label="1"))
    coefficients = prepared.binary_coefficients
    for chunk in oracle["chunks"]:
        n = chunk["end"] - chunk["start"]
        for metric in MULTICLASS_METRICS:
            assert coefficients[metric] / math.sqrt(n) == pytest.approx(chunk[metric]["sampling_error"], rel=1e-9), metric


def test_regression_dle_within_two_percent_of_nannyml_per_chunk(oracle_dir):
    oracle = _chunks(oracle_dir, "regression")
    reference = load_reference_file(str(oracle_dir / "regression_reference.csv"))
    assert list(reference.features) == oracle["features"]     # the same column order as NannyML's X
    prepared = prepare_reference(reference, ModelSpec(task=sc.TASK_REGRESSION))
    assert prepared.dle is not None
    dle = prepared.dle.result()             # fitted on its own thread
    assert dle is not None
    window = load_reference_file(str(oracle_dir / "regression_analysis.csv"))
    assert window.prediction is not None and window.label is not None
    y_pred = np.array(window.prediction.tolist(), dtype=float)
    y_true = np.array(window.label.tolist(), dtype=float)
    report = []
    for chunk in oracle["chunks"]:
        rows = slice(chunk["start"], chunk["end"])
        est, n = dle.estimate({k: v[rows] for k, v in window.features.items()}, y_pred[rows])
        bounds = dle.intervals(est, n)
        err = y_true[rows] - y_pred[rows]
        realized = {sc.PERF_MAE: float(np.mean(np.abs(err))), sc.PERF_RMSE: float(np.sqrt(np.mean(err ** 2)))}
        for metric in (sc.PERF_MAE, sc.PERF_RMSE):
            nml = chunk[metric]
            assert realized[metric] == pytest.approx(nml["realized"], rel=1e-9)   # the same rows
            assert est[metric] == pytest.approx(nml["estimated"], rel=0.02), (chunk["start"], metric)
            assert bounds[(metric, sc.BOUND_LOWER)] == pytest.approx(nml["lower"], rel=0.02)
            assert bounds[(metric, sc.BOUND_UPPER)] == pytest.approx(nml["upper"], rel=0.02)
            report.append(f"rows {chunk['start']}-{chunk['end']} {metric}: realized {realized[metric]:.1f}, "
                          f"otel-ml {est[metric]:.1f} ({est[metric] / realized[metric] - 1:+.2%}), NannyML "
                          f"{nml['estimated']:.1f} ({nml['estimated'] / realized[metric] - 1:+.2%}), "
                          f"NannyML's sampling error {nml['sampling_error']:.1f}")
    print("\n".join(report), file=sys.stderr)
