"""Predictions/s end to end through the Collector chain, beside one processor fed directly.

Both on one throwaway PostgreSQL (tests/postgres.py, fsync off), with the pre-built OTLP requests
of bench_ingest.py (512 predictions x 20 features each), sent over OTLP/gRPC by ``--clients``
concurrent senders:

- chain: senders -> agent otelcol (collector-config/agent.yaml) -> gateway otelcol
  (gateway-loadbalancing.yaml, load_balancing by ml.model.name) -> two processor replicas;
  four models, two hashed to each replica (found with one probe request);
- direct: senders -> one processor.

The clock runs from the first send until every prediction is a row in PostgreSQL (polled every
0.1 s), so the figure is end to end, queues included. Also printed: each process's CPU seconds
(user+sys) per 1000 predictions. The otelcol binary is the one scripts/build-otelcol caches.

Usage::

    python benchmarks/bench_collector_chain.py                  # 200 requests (102 400 predictions) each way
    python benchmarks/bench_collector_chain.py --batches 400 --clients 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "processors"))
from benchmarks.bench_ingest import RECORDS, build_request
from otel_ml_processor.store.database import engine_url
from tests.collector.chain import MODELS, Chain, model_config
from tests.postgres import PostgresCluster
from tests.support import ProcessorProcess, grpc_export


def send(endpoint: str, bodies: list, clients: int) -> None:
    chunks = [bodies[k::clients] for k in range(clients)]

    def worker(chunk: list) -> None:
        for body in chunk:
            while True:
                try:
                    grpc_export(endpoint, body, timeout=60)
                    break
                except Exception:  # noqa: BLE001 - "busy" answers: retry as an SDK would
                    time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def rows(engine, models: list) -> int:
    with engine.connect() as conn:
        return conn.execute(text("select count(*) from predictions where model = any(:m) and prediction_id not like '%--%'"),
                            {"m": models}).scalar()


def timed(endpoint: str, bodies: list, clients: int, engine, models: list, procs: dict) -> dict:
    total = len(bodies) * RECORDS
    before = {name: cpu_seconds(p) for name, p in procs.items()}
    start = time.monotonic()
    sender = threading.Thread(target=send, args=(endpoint, bodies, clients))
    sender.start()
    while rows(engine, models) < total:
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    sender.join()
    cpu = {name: cpu_seconds(p) - before[name] for name, p in procs.items()}
    return {"predictions": total, "seconds": elapsed, "per_second": total / elapsed,
            "cpu_per_1000": {name: 1000 * c / total for name, c in cpu.items()}}


def cpu_seconds(proc: psutil.Process, reaped: bool = False) -> float:
    """user+sys of ``proc`` and its live children (the processor's ingest workers), and, with
    ``reaped``, of the children it reaped (PostgreSQL's backends)."""
    t = proc.cpu_times()
    total = t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)
    for child in proc.children(recursive=True):
        try:
            ct = child.cpu_times()
            total += ct.user + ct.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="requests of 512 predictions, each way")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    me = psutil.Process()
    with PostgresCluster() as pg, tempfile.TemporaryDirectory(prefix="otel-ml-chain-") as tmp:
        # The chain first.
        chain_url = pg.create_database("chain")
        with Chain(Path(tmp) / "chain", chain_url, interval="15s") as chain:
            owners = chain.probe()
            models = [m for m in MODELS if owners[m] == 0][:2] + [m for m in MODELS if owners[m] == 1][:2]
            bodies = [build_request(models[i % len(models)], i) for i in range(args.batches)]
            procs = {"sender (this process)": me, "agent": psutil.Process(chain.agent.proc.pid),
                     "gateway": psutil.Process(chain.gateway.proc.pid),
                     "replica 0": psutil.Process(chain.replicas[0].proc.pid),
                     "replica 1": psutil.Process(chain.replicas[1].proc.pid)}
            result_chain = timed(chain.agent.grpc_endpoint, bodies, args.clients, chain.engine, models, procs)
        # Then one processor fed directly, same requests, fresh database.
        direct_url = pg.create_database("direct")
        engine = create_engine(engine_url(direct_url))
        with ProcessorProcess(Path(tmp) / "direct", models=[model_config(m) for m in models], db_url=direct_url,
                              interval="15s") as proc:
            procs = {"sender (this process)": me, "processor": psutil.Process(proc.proc.pid)}
            bodies = [build_request(models[i % len(models)], i) for i in range(args.batches)]
            result_direct = timed(proc.grpc_endpoint, bodies, args.clients, engine, models, procs)
        engine.dispose()
    for name, result in (("chain: agent -> gateway -> 2 replicas", result_chain),
                         ("direct: one processor", result_direct)):
        print(f"{name}: {result['predictions']} predictions in {result['seconds']:.1f} s = "
              f"{result['per_second']:,.0f} predictions/s end to end (stored in PostgreSQL)")
        for proc_name, cpu in result["cpu_per_1000"].items():
            print(f"    {proc_name:24s} {cpu:7.3f} CPU s per 1000 predictions")


if __name__ == "__main__":
    main()
