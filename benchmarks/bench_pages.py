"""Benchmark: a model page for 100 features and a 100 000-row window (figures in BENCHMARKS.md "Pages").

Builds one model's snapshot as the compute cycle does (``compute_model_metrics`` on 100 features,
a 100 000-row window and a 100 000-row reference, binary with labels and 2 fairness attributes;
a tenth of the features categorical with 12 categories) and times:

- ``render_model`` (what ``/models/<name>`` and ``otel-ml report`` do once the snapshot exists;
  target < 200 ms) and ``render_index`` over 100 such model versions;
- the compute cycle's added cost, the per-feature histograms (``feature_histograms``), alone and
  as ``compute_model_metrics`` with and without them in the same run (A/B);
- the pages of several replicas (``DatabaseSource``): the snapshot's size, its read from the
  database (``latest_snapshot``) and its decoding (``persist.load``); a page of another replica's
  version the first time after its owner's compute cycle (stamps + read + decode + render) and
  again (stamps + render, decoded snapshot cached), a page of this replica's own version, and
  ``/`` over 100 other replicas' versions, cold and cached. On SQLite (a file in a temp folder),
  and with ``--postgres`` also on a throwaway PostgreSQL (tests/postgres.py, loopback).

Run: ``PYTHONPATH=.:processors python benchmarks/bench_pages.py [--rows 100000] [--features 100] [--repeat 5] [--postgres]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # tests.postgres for --postgres

from bench_compute import make_data

from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.compute import engine, persist
from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics
from otel_ml_processor.compute.histograms import feature_histograms
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.manager import Snapshot
from otel_ml_processor.compute.window import WindowData
from otel_ml_processor.export.pages.database_source import DatabaseSource
from otel_ml_processor.export.pages.render import PageOptions, render_index, render_model
from otel_ml_processor.export.pages.source import ComputerSource, ModelSnapshot
from otel_ml_processor.store.database import Database, SnapshotRow


def with_categories(feats: dict, every: int, seed: int, shift: bool) -> dict:
    rng = np.random.default_rng(seed)
    cats = np.array([f"c{i:02d}" for i in range(12)], dtype=object)
    p = np.linspace(2, 1, 12) if not shift else np.linspace(1, 2, 12)
    for i, name in enumerate(sorted(feats)):
        if i % every == every - 1:
            feats[name] = rng.choice(cats, len(feats[name]), p=p / p.sum())
    return feats


def timed(fn, repeat: int) -> tuple:
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def ms(times: list) -> str:
    return f"median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms"


def bench_database(url: str, what: str, metrics, repeat: int, versions: int = 100) -> None:
    """The pages of a replica ("b") for versions another replica ("a") computed and stored."""
    owner, reader = Database(url, replica="a"), Database(url, replica="b")
    now = time.time()
    names = [f"model-{i:03d}" for i in range(versions)]
    owner.insert_predictions([PredictionRecord(model=n, model_version="1", prediction_id="p", task="classification",
                                               time=now, features={"x": 1.0}, output_label="1") for n in names], now)
    text = persist.dump(metrics)
    owner.save_snapshots([SnapshotRow(n, "1", "a", now, 0.5, text) for n in names])
    local = Snapshot(models={("local", "1"): metrics}, computed_at={("local", "1"): now}, durations={("local", "1"): 0.5})
    mine = ComputerSource(lambda: local, owner="b")
    opts = PageOptions(stale_after=45.0)

    def page(source: DatabaseSource, model: str) -> str:   # what Pages.model does
        snap = source.latest(model)
        return render_model(snap, [v for m, v in source.keys() if m == model], opts)

    _, t_read = timed(lambda: reader.latest_snapshot(names[0], "1"), repeat * 4)
    _, t_decode = timed(lambda: persist.load(text), repeat * 4)
    _, t_stamps = timed(reader.snapshot_stamps, repeat * 4)
    cold = [timed(lambda: page(DatabaseSource(reader, mine), names[i % versions]), 1)[1][0] for i in range(repeat * 4)]
    warm_source = DatabaseSource(reader, mine)
    page(warm_source, names[0])
    _, warm = timed(lambda: page(warm_source, names[0]), repeat * 4)
    _, own = timed(lambda: page(warm_source, "local"), repeat * 4)
    index_cold = [timed(lambda: render_index(DatabaseSource(reader, mine).models(), opts), 1)[1][0]
                  for _ in range(max(2, repeat // 2))]
    warm_source.models()
    _, index_warm = timed(lambda: render_index(warm_source.models(), opts), repeat)
    print(f"{what}: snapshot {len(text) / 1024:.0f} KiB of JSON; latest_snapshot (read) {ms(t_read)}; "
          f"persist.load (decode) {ms(t_decode)}; snapshot_stamps of {versions + 1} versions {ms(t_stamps)}")
    print(f"{what}: /models/<name> of another replica's version: first after its compute cycle {ms(cold)}, "
          f"cached {ms(warm)}; of this replica's own {ms(own)}")
    print(f"{what}: / over {versions} other replicas' versions + 1 own: first after their cycle {ms(index_cold)}, "
          f"cached {ms(index_warm)}")
    owner.close()
    reader.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL (Debian's postgresql)")
    a = ap.parse_args()
    n = a.rows
    rf, rpred, rscore, rlabel, _ = make_data(n, a.features, 1, 0.0)
    ref = ReferenceData(features=with_categories(rf, 10, 1, False), prediction=rpred, score=rscore, label=rlabel,
                        task="classification")

    def window_of(seed: int) -> WindowData:
        wf, wpred, wscore, wlabel, wsegs = make_data(n, a.features, seed, 0.3)
        return WindowData(model="bench", model_version="1", task="classification",
                          prediction_ids=np.array([str(i) for i in range(n)], dtype=object),
                          timestamps=np.arange(n, dtype=float), features=with_categories(wf, 10, seed, True),
                          output_label=wpred, output_value=np.full(n, np.nan), score=wscore, probabilities={},
                          segments=wsegs, label=wlabel)

    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"data: {a.features} features ({a.features // 10} categorical), window {n} rows, reference {n} rows, "
          f"binary, 2 fairness attributes")
    spec = ModelSpec(positive_label="1", fairness_attributes=("gender", "region"))
    prepared = prepare_reference(ref, spec)
    windows = [window_of(2 + i) for i in range(2)]
    metrics = compute_model_metrics(windows[0], prepared, spec)     # also warms the reference-side bins
    features = list(windows[0].features)

    _, t_hist = timed(lambda: feature_histograms(windows[1], prepared, spec, features), a.repeat)
    with_h, without_h = [], []
    hook = engine.feature_histograms
    try:
        for i in range(a.repeat):
            w = windows[i % 2]
            engine.feature_histograms = hook
            with_h.append(timed(lambda: compute_model_metrics(w, prepared, spec), 1)[1][0])
            engine.feature_histograms = lambda *_args: {}
            without_h.append(timed(lambda: compute_model_metrics(w, prepared, spec), 1)[1][0])
    finally:
        engine.feature_histograms = hook
    print(f"compute cycle: feature_histograms alone {ms(t_hist)}; compute_model_metrics with them "
          f"{ms(with_h)}, without {ms(without_h)} (A/B, same run)")

    snap = ModelSnapshot("bench", "1", metrics, time.time(), 0.5)
    versions = [str(v) for v in range(1, 6)]
    page, t_page = timed(lambda: render_model(snap, versions, PageOptions()), a.repeat * 4)
    snaps = [ModelSnapshot(f"model-{i:03d}", "1", metrics, time.time(), 0.5) for i in range(100)]
    index, t_index = timed(lambda: render_index(snaps, PageOptions()), a.repeat * 4)
    charts = page.count('<svg class="hist"')
    print(f"render_model ({len(metrics.drift)} drift rows, {charts} charts, {len(page) / 1024:.0f} KiB): "
          f"{ms(t_page)} (target < 200 ms)")
    print(f"render_index (100 model versions, {len(index) / 1024:.0f} KiB): {ms(t_index)}")

    with tempfile.TemporaryDirectory(prefix="otel-ml-bench-pages-") as tmp:
        bench_database(f"sqlite:///{tmp}/otel-ml.db", "SQLite", metrics, a.repeat)
    if a.postgres:
        from tests.postgres import PostgresCluster

        with PostgresCluster(fsync=True) as pg:
            bench_database(pg.create_database("bench"), "PostgreSQL", metrics, a.repeat)


if __name__ == "__main__":
    main()
