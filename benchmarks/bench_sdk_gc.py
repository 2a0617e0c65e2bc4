"""Whole-process CPU and garbage collection per one-row call, A/B between checkouts (issue 19).

Each child (one per checkout in turn, ``--rounds`` times) sets up the SDK as ``bench_sdk.py``
does (OTLP/gRPC to a null sink, ``MLInstrumentor`` defaults), makes 500 one-row
``predict_proba`` calls to warm up, flushes, then makes ``--calls`` more and flushes again. It
reports the process's CPU over those calls (``time.process_time``: user + system, all threads,
flush included) and, from ``gc.callbacks``, how many collections of each generation ran and how
long they took. Prints medians (range) per checkout.

    PYTHONPATH=. python benchmarks/bench_sdk_gc.py --tree /tmp/base --tree /work/main --tree . --rounds 5
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sdk  # the same model, SDK set-up and null sink


def child(calls: int) -> None:
    counts, spent, started = [0, 0, 0], [0.0, 0.0, 0.0], [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            counts[info["generation"]] += 1
            spent[info["generation"]] += time.perf_counter() - started[0]

    model, X = bench_sdk._model()
    one = X[:1].copy()
    bench_sdk._configure_sdk()
    from otel_ml import pipeline
    from otel_ml.instrumentation import MLInstrumentor

    MLInstrumentor().instrument(model_name="bench", model_version="1")
    for _ in range(500):
        model.predict_proba(one)
    assert pipeline.active().force_flush(600_000)
    gc.callbacks.append(on_gc)
    c0 = time.process_time()
    for _ in range(calls):
        model.predict_proba(one)
    assert pipeline.active().force_flush(600_000)
    cpu = time.process_time() - c0
    gc.callbacks.remove(on_gc)
    print(json.dumps({"cpu_us": cpu / calls * 1e6, "gc_us": sum(spent) / calls * 1e6, "gc_counts": counts}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="ab", choices=["ab", "_child"])
    ap.add_argument("--tree", action="append", default=[], help="a checkout of otel-ml (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=6000)
    args = ap.parse_args()
    if args.what == "_child":
        child(args.calls)
        return
    sink = bench_sdk.Sink()
    results: dict = {}
    try:
        for _ in range(args.rounds):
            for tree in args.tree or ["."]:
                tree = str(Path(tree).resolve())
                env = {**sink.env(), "PYTHONPATH": f"{tree}:{tree}/processors"}
                out = subprocess.run([sys.executable, __file__, "_child", "--calls", str(args.calls)], env=env,
                                     capture_output=True, text=True, check=True).stdout
                results.setdefault(tree, []).append(json.loads(out.strip().splitlines()[-1]))
    finally:
        sink.stop()
    print(f"\nOne-row predict_proba, per call ({args.calls} calls, {args.rounds} rounds, median (range)):")
    for tree, runs in results.items():
        cpu = [r["cpu_us"] for r in runs]
        gcs = [r["gc_us"] for r in runs]
        counts = [statistics.median(r["gc_counts"][g] for r in runs) for g in range(3)]
        print(f"  {tree}: CPU {statistics.median(cpu):.0f} µs ({min(cpu):.0f}–{max(cpu):.0f}), "
              f"GC {statistics.median(gcs):.0f} µs ({min(gcs):.0f}–{max(gcs):.0f}), collections by generation {counts}")


if __name__ == "__main__":
    main()
