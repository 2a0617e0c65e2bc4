"""Calibration of the drift decisions (figures in BENCHMARKS.md "Drift calibration").

A model of 55 inputs in the shape issue 11 describes (``calibration_data.columns``): 50 numeric
features (20 normal, 10 log-normal, 10 Poisson counts, 10 negative-binomial counts) and 5
categorical ones (5, 10, 20 and 40 levels, and 300 Zipf levels). For each reference size (1 000 rows: ``auto`` picks ks / chi2
with Benjamini-Hochberg; 5 000 rows: wasserstein / jensenshannon with noise floors) it prints

- the false-alarm rate per evaluation on stable data (any input feature detected) at window
  sizes 100, 1 000 and 10 000, with fresh references and fresh windows;
- the detection rate when 1, 2 or 5 of the normal features shift by 0.1, 0.2 or 0.5 standard
  deviations (a detection = any shifted feature detected), at windows of 1 000 and 10 000 rows.

With ``--missing N`` (issue 21) it prints the missing-value test's calibration instead: the same
55 inputs, each missing (NaN / None) at its own rate in the reference and the window alike (0 %
for 25 of them, then 0.5 %, 1 %, 2 %, 5 %, 10 % and 30 %, five each), N evaluations per cell:
the rate of evaluations where any feature's ``missing`` test is detected, at windows of 100,
1 000 and 10 000 rows against 1 000- and 5 000-row references; and the detection rate when one
feature (normal00, 0 % missing in its reference, or the first one at 5 %) goes 30 % empty, with
the wall time of the missing tests per evaluation.

Every evaluation runs the real engine (``prepare_reference`` + ``compute_model_metrics``).

Run: ``PYTHONPATH=.:processors python benchmarks/bench_calibration.py [--stable 100] [--shifted 20] [--missing 100]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData
from otel_ml_processor.stats.registry import FeatureWindow

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


#: the missing-value calibration: each feature's missing rate (reference and stable window alike)
MISSING_RATES = [0.0] * 25 + [r for r in (0.005, 0.01, 0.02, 0.05, 0.1, 0.3) for _ in range(5)]


def with_missing(rng: np.random.Generator, cols: dict, rates: dict) -> dict:
    """``cols`` with each feature missing (NaN, or None for text) in about ``rates[name]`` of rows."""
    out = {}
    for name, values in cols.items():
        share = rates.get(name, 0.0)
        if share:
            values = values.astype(float if values.dtype.kind == "f" else object, copy=True)
            values[rng.random(values.size) < share] = np.nan if values.dtype.kind == "f" else None
        out[name] = values
    return out


def missing_calibration(rng: np.random.Generator, evaluations: int) -> None:
    spec = ModelSpec()
    names = list(columns(rng, 10, {}))
    rates = dict(zip(names, MISSING_RATES))
    print("| reference rows | window rows | any missing test detected per evaluation (95 % interval) | "
          "missing tests' wall time per evaluation |")
    print("|---|---|---|---:|")
    for ref_rows in (1000, 5000):
        for win_rows in (100, 1000, 10000):
            hits, spent = 0, 0.0
            for _ in range(evaluations):
                prepared = prepare_reference(ReferenceData(features=with_missing(rng, columns(rng, ref_rows, {}), rates)), spec)
                w = window(with_missing(rng, columns(rng, win_rows, {}), rates))
                m = compute_model_metrics(w, prepared, spec)
                hits += any(d.detected for d in m.drift if d.method == "missing")
                t = time.perf_counter()
                for name, companions in prepared.companions.items():
                    for c in companions:
                        c.test.compute(c.state, FeatureWindow.build(w.features[name]))
                spent += time.perf_counter() - t
            print(f"| {ref_rows} | {win_rows} | {rate(hits, evaluations)} | {1000 * spent / evaluations:.1f} ms |")
    print()
    print("| reference rows | window rows | feature going 30 % empty (its reference's rate) | detection rate | "
          "other features detected per evaluation |")
    print("|---|---|---|---|---|")
    for ref_rows in (1000, 5000):
        for win_rows in (100, 1000):
            for feature in ("normal00", next(n for n in names if rates[n] == 0.05)):
                hits, false = 0, 0
                for _ in range(evaluations):
                    prepared = prepare_reference(ReferenceData(features=with_missing(rng, columns(rng, ref_rows, {}), rates)), spec)
                    m = compute_model_metrics(window(with_missing(rng, columns(rng, win_rows, {}), {**rates, feature: 0.3})),
                                              prepared, spec)
                    found = {d.feature for d in m.drift if d.detected and d.method == "missing"}
                    hits += feature in found
                    false += len(found - {feature})
                print(f"| {ref_rows} | {win_rows} | {feature} ({rates[feature]:.0%}) | {rate(hits, evaluations)} | "
                      f"{false / evaluations:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stable", type=int, default=100, help="stable evaluations per cell")
    ap.add_argument("--shifted", type=int, default=20, help="shifted evaluations per cell")
    ap.add_argument("--missing", type=int, default=0, help="run the missing-value calibration, N evaluations per cell")
    a = ap.parse_args()
    rng = np.random.default_rng(20261130)
    spec = ModelSpec()
    started = time.perf_counter()
    if a.missing:
        missing_calibration(rng, a.missing)
        print(f"\n({time.perf_counter() - started:.0f} s)")
        return
    print("| reference rows (tests) | window rows | false-alarm rate per evaluation (95 % interval) | features detected per false alarm |")
    print("|---|---|---|---|")
    for ref_rows in (1000, 5000):
        for win_rows in (100, 1000, 10000):
            hits, detected = 0, 0
            for _ in range(a.stable):
                prepared = prepare_reference(ReferenceData(features=columns(rng, ref_rows, {})), spec)
                m = compute_model_metrics(window(columns(rng, win_rows, {})), prepared, spec)
                found = [d for d in m.drift if d.detected and not d.feature.startswith("__") and d.method != "missing"]
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
                        found = {d.feature for d in m.drift
                                 if d.detected and not d.feature.startswith("__") and d.method != "missing"}
                        hits += bool(found & set(shift))
                        false += len(found - set(shift))
                    print(f"| {ref_rows} | {win_rows} | {size} | {count} of 50 | {rate(hits, a.shifted)} | "
                          f"{false / a.shifted:.2f} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
