"""Calibration of the drift decisions (figures in BENCHMARKS.md "Drift calibration").

A model of 55 inputs in the shape issue 11 describes (``calibration_data.columns``): 50 numeric
features (20 normal, 10 log-normal, 10 Poisson counts, 10 negative-binomial counts) and 5
categorical ones (5, 10, 20 and 40 levels, and 300 Zipf levels). For each reference size (1 000 rows: ``auto`` picks ks / chi2
with Benjamini-Hochberg; 5 000 rows: wasserstein / jensenshannon with noise floors) it prints

- the false-alarm rate per evaluation on stable data (any input feature detected) at window
  sizes 100, 1 000 and 10 000, with fresh references and fresh windows;
- the detection rate when 1, 2 or 5 of the normal features shift by 0.1, 0.2 or 0.5 standard
  deviations (a detection = any shifted feature detected), at windows of 1 000 and 10 000 rows.

Every evaluation runs the real engine (``prepare_reference`` + ``compute_model_metrics``).

Run: ``PYTHONPATH=.:processors python benchmarks/bench_calibration.py [--stable 100] [--shifted 20]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData

from calibration_data import columns  # benchmarks/ is on the path when run as a script


def window(features: dict) -> WindowData:
    n = len(next(iter(features.values())))
    return WindowData(model="m", model_version="1", task="classification",
                      prediction_ids=np.array([str(i) for i in range(n)], dtype=object),
                      timestamps=np.arange(n, dtype=float), features=features,
                      output_label=np.full(n, "0", dtype=object), output_value=np.full(n, np.nan),
                      score=np.full(n, np.nan), probabilities={}, segments={},
                      label=np.full(n, None, dtype=object))


def rate(hits: int, n: int) -> str:
    lo = stats.beta.ppf(0.025, hits, n - hits + 1) if hits else 0.0
    hi = stats.beta.ppf(0.975, hits + 1, n - hits) if hits < n else 1.0
    return f"{hits / n:.1%} [{lo:.1%}, {hi:.1%}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stable", type=int, default=100, help="stable evaluations per cell")
    ap.add_argument("--shifted", type=int, default=20, help="shifted evaluations per cell")
    a = ap.parse_args()
    rng = np.random.default_rng(20261130)
    spec = ModelSpec()
    started = time.perf_counter()
    print("| reference rows (tests) | window rows | false-alarm rate per evaluation (95 % interval) | features detected per false alarm |")
    print("|---|---|---|---|")
    for ref_rows in (1000, 5000):
        for win_rows in (100, 1000, 10000):
            hits, detected = 0, 0
            for _ in range(a.stable):
                prepared = prepare_reference(ReferenceData(features=columns(rng, ref_rows, {})), spec)
                m = compute_model_metrics(window(columns(rng, win_rows, {})), prepared, spec)
                found = [d for d in m.drift if d.detected and not d.feature.startswith("__")]
                hits += bool(found)
                detected += len(found)
            tests = "ks/chi2" if ref_rows <= 1000 else "wasserstein/jensenshannon"
            print(f"| {ref_rows} ({tests}) | {win_rows} | {rate(hits, a.stable)} | {detected / max(hits, 1):.1f} |")
    print()
    print("| reference rows | window rows | shift (sd) | features shifted | detection rate | false features per evaluation |")
    print("|---|---|---|---|---|---|")
    for ref_rows in (1000, 5000):
        for win_rows in (1000, 10000):
            for size in (0.1, 0.2, 0.5):
                for count in (1, 2, 5):
                    shift = {f"normal{i:02d}": size for i in range(count)}
                    hits, false = 0, 0
                    for _ in range(a.shifted):
                        prepared = prepare_reference(ReferenceData(features=columns(rng, ref_rows, {})), spec)
                        m = compute_model_metrics(window(columns(rng, win_rows, shift)), prepared, spec)
                        found = {d.feature for d in m.drift if d.detected and not d.feature.startswith("__")}
                        hits += bool(found & set(shift))
                        false += len(found - set(shift))
                    print(f"| {ref_rows} | {win_rows} | {size} | {count} of 50 | {rate(hits, a.shifted)} | "
                          f"{false / a.shifted:.2f} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
