"""Ingest throughput of the processor: OTLP batches of 512 predictions x 20 features.

Starts a real processor (``otel-ml processor``) on a temporary SQLite file (or the given
``--db-url``), sends pre-built ExportLogsServiceRequests over OTLP/gRPC and OTLP/HTTP from
``--clients`` concurrent senders, and reports records/s from first send to last answer (every
answer comes after the batch is committed), plus the processor's RSS.

With ``--floor``, the same run also measures the protobuf parse floor: the same requests
parsed (``ExportLogsServiceRequest.FromString``) and every attribute of every record read
(key, value kind, value), in one process per core, fed as the processor's ingest workers are;
no processor can ingest faster in Python on this machine. The ratio ingest rate / floor is the
figure (measured before and after the ingest run, the mean taken: the machine's load drifts).

Usage::

    python benchmarks/bench_ingest.py                       # both protocols, 100 batches each
    python benchmarks/bench_ingest.py --batches 2000 --protocol grpc   # ~1M records, RSS figure
    python benchmarks/bench_ingest.py --batches 200 --protocol grpc --floor   # ingest / parse floor
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc
import psutil
import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from otel_ml import semconv as sc
from tests.support import ProcessorProcess, wait_for

RECORDS, FEATURES = 512, 20


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def build_request(model: str, seed: int) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "bench"))
    sl = rl.scope_logs.add()
    now = time.time_ns()
    prefix = uuid.uuid4().hex[:12]
    for i in range(RECORDS):
        lr = LogRecord(time_unix_nano=now + i, event_name=sc.EVENT_PREDICTION)
        lr.attributes.extend([
            _kv(sc.ML_MODEL_NAME, model), _kv(sc.ML_MODEL_VERSION, "1"),
            _kv(sc.ML_PREDICTION_ID, f"{prefix}-{seed}-{i}"), _kv(sc.ML_MODEL_TASK, sc.TASK_CLASSIFICATION),
            _kv(sc.ML_OUTPUT_LABEL, str(i % 2)), _kv(sc.ML_OUTPUT_SCORE, 0.5 + (i % 50) / 100),
        ])
        lr.attributes.extend(_kv(sc.feature_key(f"f{j}"), float((i * 7 + j) % 97)) for j in range(FEATURES - 2))
        lr.attributes.extend([_kv(sc.feature_key("plan"), ("free", "pro", "team")[i % 3]),
                              _kv(sc.feature_key("country"), ("fr", "de", "us", "jp")[i % 4])])
        sl.log_records.append(lr)
    return req.SerializeToString()


def _read_all(body: bytes) -> int:
    """Parse one request and read every attribute of every record: the floor's unit of work."""
    n = 0
    for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                for kv in lr.attributes:
                    v = kv.value
                    _ = kv.key, getattr(v, v.WhichOneof("value"))
                n += 1
    return n


def parse_floor(bodies: list) -> float:
    """Records/s of :func:`_read_all` over ``bodies`` in one process per core."""
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_read_all, bodies[:workers]))      # started and warm
        t0 = time.perf_counter()
        n = sum(pool.map(_read_all, bodies))
        return n / (time.perf_counter() - t0)


def run(proc: ProcessorProcess, protocol: str, bodies: list, clients: int) -> float:
    queue = list(bodies)
    lock = threading.Lock()
    errors: list = []

    def sender():
        if protocol == "grpc":
            channel = grpc.insecure_channel(proc.grpc_endpoint)
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            send = lambda b: export(b, timeout=120)  # noqa: E731
        else:
            session = requests.Session()
            url = f"{proc.http_url}/v1/logs"
            def send(b):
                r = session.post(url, data=b, headers={"Content-Type": "application/x-protobuf"}, timeout=120)
                r.raise_for_status()
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            try:
                send(body)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]!r}")
    return len(bodies) * RECORDS / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--protocol", choices=["grpc", "http", "both"], default="both")
    ap.add_argument("--db-url", default=None)
    ap.add_argument("--floor", action="store_true", help="also the protobuf parse floor, before and after")
    ap.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster (Debian's postgresql)")
    args = ap.parse_args()
    cluster = None
    if args.postgres:
        from tests.postgres import PostgresCluster

        cluster = PostgresCluster(fsync=True).start()   # durable, as in production
        args.db_url = cluster.create_database("bench")
    try:
        run_all(args)
    finally:
        if cluster is not None:
            cluster.stop()


def cpu_seconds(ps: psutil.Process) -> dict:
    """CPU seconds used so far by the processor's main process, its workers, and this client."""
    def used(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    workers = 0.0
    for c in ps.children(recursive=True):
        try:
            workers += used(c)
        except psutil.NoSuchProcess:
            pass
    return {"processor": used(ps), "workers": workers, "client": used(psutil.Process())}


def run_all(args: argparse.Namespace) -> None:
    protocols = ["grpc", "http"] if args.protocol == "both" else [args.protocol]
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {sys.version.split()[0]}")
    print(f"batches of {RECORDS} predictions x {FEATURES} features, {args.batches} batches per protocol, "
          f"{args.clients} clients, storage {'PostgreSQL' if args.db_url and 'postgres' in args.db_url else 'SQLite'}")
    with tempfile.TemporaryDirectory() as tmp:
        with ProcessorProcess(Path(tmp), db_url=args.db_url, interval="5s") as proc:
            ps = psutil.Process(proc.proc.pid)

            def rss() -> str:
                main = ps.memory_info().rss
                workers = sum(c.memory_info().rss for c in ps.children(recursive=True))
                return f"{main / 2**20:.0f} MiB (+ {workers / 2**20:.0f} MiB in {len(ps.children())} child processes: ingest workers + multiprocessing resource tracker)"

            print(f"processor RSS at start: {rss()}")
            total = 0
            for protocol in protocols:
                bodies = [build_request("bench", s) for s in range(args.batches)]
                floor = parse_floor(bodies) if args.floor else 0.0
                before = cpu_seconds(ps)
                rate = run(proc, protocol, bodies, args.clients)
                n = len(bodies) * RECORDS
                total += n
                used = {k: (v - before[k]) / n * 1e6 for k, v in cpu_seconds(ps).items()}
                print(f"{protocol:5s}: {rate:9,.0f} records/s  ({n:,} records); CPU µs per record: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in used.items()))
                if args.floor:
                    after = parse_floor(bodies)
                    print(f"{protocol:5s}: parse floor {floor:9,.0f} / {after:,.0f} records/s (before / after); "
                          f"ingest / floor = {rate / ((floor + after) / 2):.2f}")
            wait_for(lambda: proc.sample("ml_records_received_total", {"model": "bench", "signal": "prediction"}) == total,
                     timeout=120, what="all records counted")
            print(f"processor RSS after {total:,} records: {rss()}")


if __name__ == "__main__":
    main()
