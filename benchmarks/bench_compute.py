"""Benchmark: full recompute of one model by the metrics engine (figures in BENCHMARKS.md "Compute").

100 numeric features, a 100 000-row window, a 100 000-row reference, binary classification with
labels and scores, fairness on 2 attributes. Prints, for drift ``auto`` (-> wasserstein here:
the reference has > 1000 rows) and ``psi``: the *first cycle* (``prepare_reference``, once per
reference, plus the first ``compute_model_metrics``, which computes the noise floors), then the
steady cycles (``compute_model_metrics`` on fresh windows), wall and CPU seconds; plus the
scipy-per-feature baseline the fast path replaces, and the WindowBuffer's append and snapshot
costs.

``--missing RATE`` (issue 21) blanks that share of every feature's values (NaN) in the reference
and in each window, so that every feature's missing-value test (Fisher exact) has a real table
to compute; run it beside ``--missing 0`` for the A/B.

Run: ``PYTHONPATH=.:processors python benchmarks/bench_compute.py [--rows 100000] [--features 100] [--missing 0.05]``
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import platform
import statistics
import time

import numpy as np

from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowBuffer, WindowData


def make_data(rows: int, features: int, seed: int, shift: float):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (features, rows))
    x[: features // 10] += shift  # a tenth of the features drift
    logit = x[:5].sum(axis=0) / 2
    p = 1 / (1 + np.exp(-logit))
    pred = np.where(p >= 0.5, "1", "0").astype(object)
    label = np.where(rng.uniform(size=rows) < p, "1", "0").astype(object)
    feats = {f"f{i:03d}": x[i] for i in range(features)}
    segs = {"gender": rng.choice(np.array(["f", "m", "x"], dtype=object), rows),
            "region": rng.choice(np.array([f"r{i}" for i in range(8)], dtype=object), rows)}
    return feats, pred, np.maximum(p, 1 - p), label, segs


def timed(fn, repeat: int):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--ref-rows", type=int, default=None, help="reference rows (default: --rows)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-extras", action="store_true", help="skip the scipy baseline and WindowBuffer figures")
    ap.add_argument("--missing", type=float, default=0.0, help="share of every feature's values blanked (NaN)")
    a = ap.parse_args()
    ref_rows = a.rows if a.ref_rows is None else a.ref_rows

    def blank(feats: dict, seed: int) -> dict:
        if a.missing:
            rng = np.random.default_rng(seed + 1000)
            for v in feats.values():
                v[rng.random(v.size) < a.missing] = np.nan
        return feats

    rf, rpred, rscore, rlabel, _ = make_data(ref_rows, a.features, 1, 0.0)
    rf = blank(rf, 1)
    ref = ReferenceData(features=rf, prediction=rpred, score=rscore, label=rlabel, task="classification")
    n = a.rows

    def window_of(seed: int) -> WindowData:
        wf, wpred, wscore, wlabel, wsegs = make_data(a.rows, a.features, seed, 0.3)
        wf = blank(wf, seed)
        return WindowData(
            model="bench", model_version="1", task="classification",
            prediction_ids=np.array([str(i) for i in range(n)], dtype=object), timestamps=np.arange(n, dtype=float),
            features=wf, output_label=wpred, output_value=np.full(n, np.nan), score=wscore, probabilities={},
            segments=wsegs, label=wlabel,
        )

    # a different window each run, as a live stream gives (no run reuses another's numbers)
    windows = [window_of(2 + i) for i in range(2 * a.repeat)]
    window = windows[0]
    wf, wpred, wscore, wsegs = window.features, window.output_label, window.score, window.segments
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"data: {a.features} numeric features, window {n} rows, reference {ref_rows} rows, binary, "
          f"2 fairness attributes, {a.missing:.0%} of every feature's values missing")
    for method in ("auto", "psi"):
        spec = ModelSpec(positive_label="1", drift_default_method=method, fairness_attributes=("gender", "region"))
        it = iter(windows)
        c0, t0 = time.process_time(), time.perf_counter()
        prepared = prepare_reference(ref, spec)
        t_prep, c_prep = time.perf_counter() - t0, time.process_time() - c0
        first = compute_model_metrics(next(it), prepared, spec)
        t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
        cpu: list = []

        def steady():
            c = time.process_time()
            out = compute_model_metrics(next(it), prepared, spec)
            cpu.append(time.process_time() - c)
            return out

        m, t = timed(steady, a.repeat - 1)
        with ThreadPoolExecutor(2) as pool:
            _, t2 = timed(lambda: compute_model_metrics(next(it), prepared, spec, pool), a.repeat - 1)
        methods = sorted({d.method for d in m.drift})
        detected = sum(d.detected for d in m.drift if d.feature.startswith("f"))
        print(f"drift {method:>4} ({'/'.join(methods)}): first cycle {t_first:.2f} s wall / {c_first:.2f} s CPU "
              f"(prepare_reference {t_prep:.2f} s / {c_prep:.2f} s CPU); steady compute_model_metrics median "
              f"{statistics.median(t):.3f} s, min {min(t):.3f} s, CPU median {statistics.median(cpu):.3f} s "
              f"(runs: {', '.join(f'{x:.3f}' for x in t)}); with a 2-thread executor median "
              f"{statistics.median(t2):.3f} s; {detected} of {a.features} features detected; "
              f"accuracy {m.performance['accuracy']:.4f}, estimated {m.estimated_performance['accuracy']:.4f}")
        del first
    if a.no_extras:
        return
    # the path the engine avoids: scipy per feature each cycle
    from scipy import stats
    k = 5
    names = list(rf)[:k]
    _, t_ks = timed(lambda: [stats.ks_2samp(rf[f], wf[f]) for f in names], 1)
    _, t_w = timed(lambda: [stats.wasserstein_distance(rf[f], wf[f]) for f in names], 1)
    print(f"scipy baseline per feature: ks_2samp {t_ks[0] / k * 1000:.1f} ms, wasserstein_distance "
          f"{t_w[0] / k * 1000:.1f} ms (x {a.features} features = {t_ks[0] / k * a.features:.2f} s / "
          f"{t_w[0] / k * a.features:.2f} s per cycle)")
    # WindowBuffer: append cost per row and snapshot of a full 10 000-row window with 100 features
    buf = WindowBuffer("bench", "1", "classification", size=10_000)
    rows = [dict(prediction_id=f"p{i}", timestamp=float(i), features={k2: float(v[i]) for k2, v in wf.items()},
                 output_label=wpred[i], output_value=None, score=float(wscore[i]), probabilities={},
                 segments={"gender": wsegs["gender"][i], "region": wsegs["region"][i]}, label=None)
             for i in range(20_000)]
    t0 = time.perf_counter()
    for r in rows:
        buf.append(r)
    t_append = (time.perf_counter() - t0) / len(rows)
    _, t_first = timed(buf.snapshot, 1)
    _, t_snap = timed(buf.snapshot, 3)
    for r in rows[:1000]:
        buf.append(dict(r, prediction_id="n" + r["prediction_id"]))
    _, t_1000 = timed(buf.snapshot, 1)
    print(f"WindowBuffer ({a.features} features, size 10 000): append {t_append * 1e6:.1f} us/row (ingest "
          f"path); first snapshot after 20 000 appends {t_first[0] * 1000:.0f} ms (turns the queued rows "
          f"into columns), next snapshots {statistics.median(t_snap) * 1000:.1f} ms, snapshot after 1 000 "
          f"new rows {t_1000[0] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
