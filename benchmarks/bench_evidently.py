"""Evidently's DataDriftPreset on the data of bench_compute.py (100 numeric features, 100 000-row
window and reference), for the ratio reported in BENCHMARKS.md "Compute".

Evidently is not a dependency of otel-ml: run this in its own virtual environment::

    python -m venv /tmp/evenv && /tmp/evenv/bin/pip install evidently "pandas<3"
    /tmp/evenv/bin/python benchmarks/bench_evidently.py [--rows 100000] [--features 100]

It builds the same arrays as bench_compute.make_data (same seeds, NumPy's default generator)
without importing otel-ml.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd


def make_features(rows: int, features: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (features, rows))
    x[: features // 10] += shift
    return pd.DataFrame({f"f{i:03d}": x[i] for i in range(features)})


def main() -> None:
    import evidently
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    ref = make_features(a.rows, a.features, 1, 0.0)
    cur = make_features(a.rows, a.features, 2, 0.3)
    times = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        result = Report([DataDriftPreset()]).run(cur, ref)
        times.append(time.perf_counter() - t0)
    drifted = None
    try:
        for m in result.dict()["metrics"]:
            if "DriftedColumnsCount" in str(m.get("metric_name", "")):
                drifted = m["value"]["count"]
    except Exception:  # noqa: BLE001 - the summary is informative only
        pass
    print(f"evidently {evidently.__version__}, pandas {pd.__version__}: DataDriftPreset on {a.features} numeric "
          f"features, {a.rows} + {a.rows} rows: median {statistics.median(times):.2f} s, min {min(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}); drifted columns: {drifted}")


if __name__ == "__main__":
    main()
