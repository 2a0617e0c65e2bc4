"""Three replicas as one, as real processes on loopback (docs/scaling.md):

    model servers (otel_ml SDK, disk buffer) -> agent otelcol (collector-config/agent.yaml)
      -> gateway otelcol (collector-config/gateway-replicas.yaml: round_robin over a DNS name)
      -> three otel-ml processor replicas on 127.0.0.2, 127.0.0.3, 127.0.0.4 (one port) -> PostgreSQL

A DNS server on loopback (tests/dns.py) lists the three addresses under one name, as a
Kubernetes headless Service does. Every replica stores any model's events; compute belongs to
the holder of each version's lease. :class:`Watch` samples, every half second, each model's
stored count and which replicas export it (``ml_last_computed_timestamp_seconds``), which is
what the kill test (test_replicas_kill.py) and the benchmark (benchmarks/bench_replicas.py)
read.

Example::

    with Replicas(tmp, pg_url, MODELS, interval="2s") as rs:
        rs.leases()                      # {(model, version): replica index}
        rs.exports(0)                    # {model: computed at} of replica 0's /metrics
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from sqlalchemy import create_engine, text

from otel_ml import semconv as sc
from otel_ml_processor.store.database import engine_url
from tests.collector.chain import ModelServerProcess, model_config, stop_all
from tests.dns import DnsServer
from tests.support import COLLECTOR_ENV, CollectorProcess, ProcessorProcess, free_port

NAME = "otel-ml-processor.replicas.test"
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def replica_name(k: int) -> str:
    return f"replica-{k}"


class Replicas:
    """The agent, the gateway and three replicas on ``pg_url``; each part restartable."""

    def __init__(self, tmp: Path, pg_url: str, models: list, interval: str = "2s", n: int = 3,
                 workers: Optional[int] = 0):
        self.tmp = Path(tmp)
        self.models = models
        self.port = free_port()
        self.dns = DnsServer(NAME, ADDRESSES[:n])
        configs = [model_config(m) for m in models]
        env = {} if workers is None else {sc.ENV_INGEST_WORKERS: str(workers)}
        self.replicas = [ProcessorProcess(self.tmp / f"replica{k}", models=configs, db_url=pg_url, interval=interval,
                                          extra={"receiver": {"grpc_endpoint": f"{ADDRESSES[k]}:{self.port}"}},
                                          env={sc.ENV_REPLICA_ID: replica_name(k), **env})
                         for k in range(n)]
        self.gateway = CollectorProcess(self.tmp, "gateway-replicas.yaml", name="gateway", env={
            COLLECTOR_ENV["replicas_dns"]: self.dns.target(self.port),
            COLLECTOR_ENV["prometheus"]: f"127.0.0.1:{free_port()}"})
        self.agent = CollectorProcess(self.tmp, "agent.yaml", name="agent",
                                      env={COLLECTOR_ENV["gateway"]: self.gateway.grpc_endpoint})
        self.engine = create_engine(engine_url(pg_url))

    def __enter__(self) -> "Replicas":
        self.dns.start()
        for replica in self.replicas:
            replica.start()
        self.gateway.start()
        self.agent.start()
        return self

    def __exit__(self, *exc) -> None:
        stop_all((self.agent, self.gateway, *self.replicas))
        self.dns.stop()
        self.engine.dispose()

    def model_server(self, models: list, start: int, count: int, **kwargs) -> ModelServerProcess:
        return ModelServerProcess(self.tmp, self.agent.grpc_endpoint, models, start, count, **kwargs)

    def alive(self, k: int) -> bool:
        proc = self.replicas[k].proc
        return proc is not None and proc.poll() is None

    def received(self, k: int, model: str) -> float:
        return self.replicas[k].sample("ml_records_received_total", {"model": model, "signal": "prediction"}) or 0

    def exports(self, k: int) -> dict:
        """{model: computed at} of the versions replica ``k`` exports now ({} when it is down)."""
        from prometheus_client.parser import text_string_to_metric_families

        if not self.alive(k):
            return {}
        try:
            body = self.replicas[k].metrics_text()
        except Exception:  # noqa: BLE001 - killed between the check and the scrape
            return {}
        return {s.labels["model"]: s.value for fam in text_string_to_metric_families(body) for s in fam.samples
                if s.name == sc.M_LAST_COMPUTED}

    def leases(self) -> dict:
        """{(model, version): replica index} of the unexpired leases (the database's clock)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("select model, model_version, holder from compute_leases "
                                     "where expires_at >= extract(epoch from clock_timestamp())")).all()
        index = {replica_name(k): k for k in range(len(self.replicas))}
        return {(m, v): index[h] for m, v, h in rows if h in index}

    def stored(self) -> dict:
        """{model: (rows, distinct prediction ids)} in PostgreSQL."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "select model, count(*), count(distinct prediction_id) from predictions group by model")).all()
        return {m: (n, d) for m, n, d in rows}


class Watch(threading.Thread):
    """Samples every ``period`` s: (time, {model: stored rows}, [exports of each replica])."""

    def __init__(self, rs: Replicas, period: float = 0.5):
        super().__init__(name="watch", daemon=True)
        self.rs, self.period = rs, period
        self.samples: list = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            t = time.time()
            try:
                stored = {m: n for m, (n, _d) in self.rs.stored().items()}
                exports = [self.rs.exports(k) for k in range(len(self.rs.replicas))]
                self.samples.append((t, stored, exports))
            except Exception:  # noqa: BLE001 - one missed sample is not a finding
                pass
            self._done.wait(self.period)

    def stop(self) -> list:
        self._done.set()
        self.join(30)
        return self.samples
