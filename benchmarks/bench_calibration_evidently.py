"""Evidently's DataDriftPreset, default settings, on the frames of bench_calibration.py (figures
beside ours in BENCHMARKS.md "Drift calibration").

Evidently is not a dependency of otel-ml: run this in its own virtual environment::

    python -m venv /tmp/evenv && /tmp/evenv/bin/pip install evidently "pandas<3"
    /tmp/evenv/bin/python benchmarks/bench_calibration_evidently.py [--stable 20] [--shifted 10]

Per evaluation it reads Evidently's per-column verdicts (its ``ValueDrift`` metrics against
their thresholds: p-value methods drift below, distances at or above) and its dataset-level
verdict (share of drifted columns >= 0.5, ``DriftedColumnsCount``), on the same generator,
sizes and shifts as bench_calibration.py (not the same draws).
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import pandas as pd

from calibration_data import SHIFTED_CELLS, STABLE_CELLS, columns

P_VALUE_METHODS = ("p_value", "K-S", "chi-square", "Z-test")


def verdicts(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[set, bool]:
    """(columns Evidently calls drifted, its dataset-level verdict)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    result = Report([DataDriftPreset()]).run(current, reference)
    drifted, share = set(), 0.0
    for m in result.dict()["metrics"]:
        name = str(m.get("metric_name", ""))
        if name.startswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
        elif name.startswith("ValueDrift"):
            column = re.search(r"column=([^,)]+)", name).group(1)
            method = re.search(r"method=([^,)]+)", name).group(1)
            threshold = float(re.search(r"threshold=([^,)]+)", name).group(1))
            value = float(m["value"])
            is_p = any(k in method for k in P_VALUE_METHODS)
            if (value < threshold) if is_p else (value >= threshold):
                drifted.add(column)
    return drifted, share >= 0.5


def main() -> None:
    import evidently

    ap = argparse.ArgumentParser()
    ap.add_argument("--stable", type=int, default=20)
    ap.add_argument("--shifted", type=int, default=10)
    a = ap.parse_args()
    rng = np.random.default_rng(20261201)
    started = time.perf_counter()
    print(f"evidently {evidently.__version__}, pandas {pd.__version__}")
    print("| reference rows | window rows | evaluations with any column drifted | columns drifted per evaluation | dataset drift |")
    print("|---|---|---|---|---|")
    for ref_rows, win_rows in STABLE_CELLS:
        anyc, cols, ds = 0, 0, 0
        for _ in range(a.stable):
            found, dataset = verdicts(pd.DataFrame(columns(rng, ref_rows, {})), pd.DataFrame(columns(rng, win_rows, {})))
            anyc += bool(found)
            cols += len(found)
            ds += dataset
        print(f"| {ref_rows} | {win_rows} | {anyc}/{a.stable} | {cols / a.stable:.1f} | {ds}/{a.stable} |")
    print()
    print("| reference rows | window rows | shift (sd) | features shifted | detected (a shifted column drifted) | other columns drifted per evaluation | dataset drift |")
    print("|---|---|---|---|---|---|---|")
    for ref_rows, win_rows, size, count in SHIFTED_CELLS:
        shift = {f"normal{i:02d}": size for i in range(count)}
        hits, false, ds = 0, 0, 0
        for _ in range(a.shifted):
            found, dataset = verdicts(pd.DataFrame(columns(rng, ref_rows, {})),
                                      pd.DataFrame(columns(rng, win_rows, shift)))
            hits += bool(found & set(shift))
            false += len(found - set(shift))
            ds += dataset
        print(f"| {ref_rows} | {win_rows} | {size} | {count} of 50 | {hits}/{a.shifted} | {false / a.shifted:.1f} | "
              f"{ds}/{a.shifted} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
