"""Soak: steady prediction traffic with labels through the SDK's disk buffer, periodic processor
outages (alternately SIGTERM and SIGKILL), and at the end a count of what was lost (issue 8).

Usage::

    python benchmarks/soak.py                                   # 30 min at 5 000 predictions/s
    python benchmarks/soak.py --duration 120 --rate 1000 --outage-every 40 --outage-for 10   # a quick one

Prints: predictions made / stored (distinct ids) / stored rows, lost (made - distinct, must be
0), duplicates (rows - distinct), labels joined, the processor's RSS and compute-cycle duration
near the start and at the end, and the generator's achieved rate.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generator(args: argparse.Namespace) -> None:
    """The model server side: record_prediction through otel-ml's durable buffer, labels 5 s late."""
    import random

    import otel_ml

    otel_ml.configure(service_name="soak", system_metrics=False)
    rng = random.Random(1)
    made = 0
    labels: collections.deque = collections.deque()
    start = time.monotonic()
    tick = 0.01
    per_tick = args.rate * tick
    owed = 0.0
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop and time.monotonic() - start < args.duration:
        owed += per_tick
        while owed >= 1:
            owed -= 1
            pid = f"s{made}"
            x = [rng.gauss(0, 1) for _ in range(10)]
            label = "1" if x[0] + x[1] > 0 else "0"
            otel_ml.record_prediction("soak", "1", {f"f{j}": x[j] for j in range(10)}, label=label,
                                      score=0.5 + abs(x[0]) / 10 % 0.5, prediction_id=pid)
            if made % 2 == 0:
                labels.append((time.monotonic() + 5, pid, label if rng.random() < 0.9 else str(1 - int(label))))
            made += 1
        now = time.monotonic()
        while labels and labels[0][0] <= now:
            _, pid, value = labels.popleft()
            otel_ml.record_label("soak", pid, value)
        time.sleep(max(0.0, start + (made / args.rate) - time.monotonic()))
    for _, pid, value in labels:
        otel_ml.record_label("soak", pid, value)
    elapsed = time.monotonic() - start
    Path(args.report).write_text(json.dumps({"made": made, "elapsed": elapsed}))
    otel_ml.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--outage-every", type=float, default=300)
    ap.add_argument("--outage-for", type=float, default=30)
    ap.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generator:
        generator(args)
        return

    import psutil

    from tests.support import ProcessorProcess, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="otel-ml-soak-"))
    proc = ProcessorProcess(tmp, models=[{"name": "soak", "positive_label": "1"}], interval="15s").start()
    report = tmp / "generator.json"
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{proc.grpc_endpoint}",
           "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           "OTEL_ML_BUFFER_PATH": str(tmp / "buffer.db"), "OTEL_ML_BUFFER_MAX_BYTES": str(2 << 30),
           "OTEL_ML_EXPORT_BATCH_SIZE": "2048", "OTEL_ML_EXPORT_INTERVAL": "200",
           "OTEL_ML_SHUTDOWN_TIMEOUT": "300000", "PYTHONPATH": f"{ROOT}:{ROOT / 'processors'}"}
    gen = subprocess.Popen([sys.executable, __file__, "--generator", "--duration", str(args.duration), "--rate",
                            str(args.rate), "--report", str(report)], env=env)
    started = time.monotonic()

    def figures() -> tuple:
        rss = psutil.Process(proc.proc.pid).memory_info().rss
        rss += sum(c.memory_info().rss for c in psutil.Process(proc.proc.pid).children(recursive=True))
        return rss / 2**20, proc.sample("ml_compute_duration_seconds", {"model": "soak"})

    time.sleep(min(60, args.outage_every / 2))
    wait_for(lambda: figures()[1] is not None, timeout=120, interval=1, what="a first compute cycle")
    start_rss, start_compute = figures()
    outages, kill = 0, False
    next_outage = started + args.outage_every
    while gen.poll() is None:
        if time.monotonic() >= next_outage and time.monotonic() - started < args.duration - args.outage_for:
            end_rss, end_compute = figures()
            proc.stop(signal.SIGKILL if kill else signal.SIGTERM)
            outages += 1
            kill = not kill
            time.sleep(args.outage_for)
            proc.start()
            next_outage += args.outage_every
        time.sleep(1)
    result = json.loads(report.read_text())
    made = result["made"]
    wait_for(lambda: proc.sample("ml_records_received_total", {"model": "soak", "signal": "prediction"}) is not None,
             timeout=60)
    time.sleep(20)   # one compute cycle after the last records
    end_rss, end_compute = figures()
    with sqlite3.connect(proc.db_path) as conn:
        rows, distinct = conn.execute("select count(*), count(distinct prediction_id) from predictions").fetchone()
        joined = conn.execute("select count(*) from labels where joined_at is not null").fetchone()[0]
    with sqlite3.connect(tmp / "buffer.db") as conn:
        left = conn.execute("select coalesce(sum(count), 0) from records").fetchone()[0]   # rows hold runs
        dropped = conn.execute("select coalesce(max(value), 0) from counters where name = 'dropped'").fetchone()[0]
    proc.stop()
    print(f"duration {args.duration:.0f} s, target rate {args.rate:.0f}/s, achieved {made / result['elapsed']:.0f}/s, "
          f"{outages} processor outages of {args.outage_for:.0f} s (alternately SIGTERM / SIGKILL)")
    print(f"predictions made {made}, stored distinct {distinct}, stored rows {rows}, "
          f"LOST {made - distinct}, duplicates {rows - distinct}, labels joined {joined} (sent {(made + 1) // 2})")
    print(f"SDK buffer at the end: {left} records still on disk (shipped at the next start), "
          f"{dropped} dropped because the buffer was full (counted in ml_client_buffer_dropped_total)")
    print(f"processor RSS (with ingest workers): {start_rss:.0f} MiB near the start, {end_rss:.0f} MiB at the end")
    print(f"compute cycle (window 10 000): {start_compute * 1000:.1f} ms near the start, {end_compute * 1000:.1f} ms at the end")
    print(f"data in {tmp}")


if __name__ == "__main__":
    main()
