"""Many replicas as one: a hot model's predictions/s with 1, 2 and 3 replicas, and the takeover time.

The topology of tests/collector/replicas.py, real processes on loopback: senders -> agent otelcol
(agent.yaml) -> gateway otelcol (gateway-replicas.yaml, round_robin over a DNS name served on
loopback) -> N ``otel-ml processor`` replicas on 127.0.0.2.. (each with its default ingest
workers) -> one throwaway PostgreSQL (tests/postgres.py, fsync off).

- **Hot model.** One model only, the pre-built OTLP requests of bench_ingest.py (512 predictions
  x 20 features each) sent by ``--clients`` concurrent senders to the agent; the clock runs from
  the first send until every prediction is a row in PostgreSQL. Printed: predictions/s, and
  CPU seconds (user+sys, all threads, children included) per 1000 predictions of each process:
  agent, gateway, each replica, PostgreSQL (the postmaster and every backend, live or exited).
- **Takeover.** Three replicas, ten models (compute interval ``--interval``), leases spread; the
  replica holding most is SIGKILLed; the figure is the seconds from the SIGKILL until each of its
  models has been computed by another replica (its ``ml_last_computed_timestamp_seconds`` after
  the kill). Then it restarts and takes leases back; ``--takeovers`` rounds.

Usage::

    python benchmarks/bench_replicas.py                        # 100 requests (51 200 predictions) per N, 3 takeovers
    python benchmarks/bench_replicas.py --batches 200 --replicas 1,2,3 --takeovers 5
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "processors"))
from benchmarks.bench_collector_chain import cpu_seconds, send
from benchmarks.bench_ingest import RECORDS, build_request
from tests.collector.chain import prediction_id, row
from tests.collector.replicas import Replicas
from tests.postgres import PostgresCluster
from tests.support import grpc_export, otlp_logs_request, prediction, wait_for

HOT = "hot"
MODELS = [f"m{k:02d}" for k in range(10)]


def _postmaster(pg: PostgresCluster) -> psutil.Process:
    return psutil.Process(int((pg.data / "postmaster.pid").read_text().split()[0]))


def hot_model(pg: PostgresCluster, tmp: Path, n: int, batches: int, clients: int) -> dict:
    url = pg.create_database(f"hot{n}")
    with Replicas(tmp / f"hot{n}", url, [HOT], interval="5s", n=n, workers=None) as rs:
        bodies = [build_request(HOT, i) for i in range(batches)]
        procs = {"agent": psutil.Process(rs.agent.proc.pid), "gateway": psutil.Process(rs.gateway.proc.pid),
                 **{f"replica {k}": psutil.Process(r.proc.pid) for k, r in enumerate(rs.replicas)}}
        postgres = _postmaster(pg)
        before = {name: cpu_seconds(p) for name, p in procs.items()}
        pg_before = cpu_seconds(postgres, reaped=True)
        total = batches * RECORDS
        start = time.monotonic()
        sender = threading.Thread(target=send, args=(rs.agent.grpc_endpoint, bodies, clients))
        sender.start()
        while rs.stored().get(HOT, (0, 0))[0] < total:
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        sender.join()
        cpu = {name: cpu_seconds(p) - before[name] for name, p in procs.items()}
        cpu["PostgreSQL"] = cpu_seconds(postgres, reaped=True) - pg_before
        received = {k: rs.received(k, HOT) for k in range(n)}
    return {"replicas": n, "predictions": total, "seconds": elapsed, "per_second": total / elapsed,
            "cpu_per_1000": {name: 1000 * c / total for name, c in cpu.items()}, "received": received}


def takeovers(pg: PostgresCluster, tmp: Path, rounds: int, interval: float) -> list:
    url = pg.create_database("takeover")
    out = []
    with Replicas(tmp / "takeover", url, MODELS, interval=f"{interval:g}s") as rs:
        grpc_export(rs.agent.grpc_endpoint, otlp_logs_request(
            [prediction(m, prediction_id(m, i), row(m, i)[0], label=row(m, i)[1]) for m in MODELS for i in range(30)]))

        def spread():
            held = rs.leases()
            per = [sum(1 for h in held.values() if h == k) for k in range(3)]
            return held if len(held) == len(MODELS) and min(per) >= 1 else None

        for _ in range(rounds):
            held = wait_for(spread, timeout=120, what="leases spread over the three replicas")
            victim = max(range(3), key=lambda k: sum(1 for h in held.values() if h == k))
            theirs = {m for (m, _v), h in held.items() if h == victim}
            killed_at = time.time()
            rs.replicas[victim].stop(signal.SIGKILL)
            done: dict = {}
            while len(done) < len(theirs) and time.time() - killed_at < 60:
                for k in range(3):
                    if k == victim:
                        continue
                    for model, computed in rs.exports(k).items():
                        if model in theirs and computed > killed_at and model not in done:
                            done[model] = computed - killed_at
                time.sleep(0.05)
            out.append({"models": len(theirs), "seconds": max(done.values()) if len(done) == len(theirs) else None})
            rs.replicas[victim].start()
    return out


def _report(r: dict) -> None:
    print(f"{r['replicas']} replica(s): {r['predictions']} predictions of one model in {r['seconds']:.1f} s = "
          f"{r['per_second']:,.0f} predictions/s end to end (stored in PostgreSQL); received per replica "
          f"{r['received']}")
    for name, cpu in r["cpu_per_1000"].items():
        print(f"    {name:12s} {cpu:7.3f} CPU s per 1000 predictions")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100, help="requests of 512 predictions per replica count")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--takeovers", type=int, default=3)
    parser.add_argument("--interval", type=float, default=2.0, help="compute interval of the takeover runs (s)")
    args = parser.parse_args()
    with PostgresCluster() as pg, tempfile.TemporaryDirectory(prefix="otel-ml-replicas-") as tmp:
        for n in args.replicas.split(","):
            if n:
                _report(hot_model(pg, Path(tmp), int(n), args.batches, args.clients))
        taken = takeovers(pg, Path(tmp), args.takeovers, args.interval) if args.takeovers else []
    for t in taken:
        print(f"takeover: {t['models']} models of the SIGKILLed replica computed elsewhere after "
              f"{t['seconds'] if t['seconds'] is None else round(t['seconds'], 2)} s (interval {args.interval:g} s)")
    seconds = [t["seconds"] for t in taken if t["seconds"] is not None]
    if seconds:
        print(f"takeover: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s "
              f"= {max(seconds) / args.interval:.2f} compute intervals")


if __name__ == "__main__":
    main()
