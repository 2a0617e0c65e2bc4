"""The tested scale-out topology as real processes on loopback (docs/scaling.md):

    model servers (otel_ml SDK, disk buffer) -> agent otelcol (collector-config/agent.yaml)
      -> gateway otelcol (collector-config/gateway-loadbalancing.yaml, load_balancing by ml.model.name)
      -> two otel-ml processor replicas -> one PostgreSQL

The rows are a pure function of (model, index), so a test knows what every prediction and
label must be without asking the sender.

Example::

    with Chain(tmp, pg_url, MODELS) as chain:
        owners = chain.probe()                       # {model: replica index}, from one mixed request
        server = chain.model_server(["m03", "m07"], start=0, count=300, labels=True).start()
        assert server.wait() == 0
        chain.wait_stored({"m03": 300, "m07": 300})
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Optional

from sqlalchemy import create_engine, text

from otel_ml import semconv as sc
from otel_ml_processor.store.database import engine_url
from tests.support import (CollectorProcess, ProcessorProcess, grpc_export, otlp_logs_request, prediction,
                           wait_for)

ROOT = Path(__file__).resolve().parents[2]
VERSION = "1"
#: Candidate model names; the probe finds which replica each one hashes to.
MODELS = [f"m{k:02d}" for k in range(16)]


#: each model's first_n reference: the first FIRST_N predictions stored (not in its windows)
FIRST_N = 20


def prediction_id(model: str, i: int) -> str:
    return f"{model}-{i:06d}"


def row(model: str, i: int) -> tuple:
    """(features, predicted label, true label) of prediction ``i`` of ``model``: right 70 % of the time."""
    h = zlib.crc32(f"{model}/{i}".encode())
    predicted = str(h % 2)
    truth = predicted if (h >> 1) % 10 < 7 else str(1 - h % 2)
    return {"x": (h >> 8) % 1000 / 100.0, "z": float((h >> 20) % 7)}, predicted, truth


def label_by_otlp(i: int) -> bool:
    """Even ids get their label over OTLP through the Collectors; odd ones by POST /v1/labels."""
    return i % 2 == 0


def model_config(name: str) -> dict:
    return {"name": name, "task": "classification", "positive_label": "1", "reference": {"first_n": FIRST_N},
            "drift": {"default": {"method": "ks"}}}


class ModelServerProcess:
    """tests/collector/model_server.py as a process sending through ``endpoint`` (OTLP/gRPC)."""

    def __init__(self, tmp: Path, endpoint: str, models: list, start: int, count: int, rate: float = 400.0,
                 labels: bool = False, name: str = "model-server"):
        self.tmp = Path(tmp)
        self.progress_path = self.tmp / f"{name}.progress"
        self.log_path = self.tmp / f"{name}.log"
        self.args = [sys.executable, "-m", "tests.collector.model_server", "--models", ",".join(models),
                     "--start", str(start), "--count", str(count), "--rate", str(rate),
                     "--progress", str(self.progress_path)] + (["--labels"] if labels else [])
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "processors"), os.environ.get("PYTHONPATH", "")]),
                    "OTEL_SERVICE_NAME": name,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{endpoint}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "none",
                    "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                    sc.ENV_BUFFER_PATH: str(self.tmp / f"{name}-buffer.db"),
                    sc.ENV_EXPORT_INTERVAL: "200", sc.ENV_SHUTDOWN_TIMEOUT: "120000"}
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "ModelServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def progress(self) -> int:
        """Predictions recorded so far (0 before the first report)."""
        try:
            return int(self.progress_path.read_text() or 0)
        except FileNotFoundError:
            return 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        assert code == 0, f"model server exited {code}: {self.log_path.read_text(errors='replace')[-3000:]}"
        return code


def stop_all(parts) -> None:
    """Stop each part still running, in order (agent first, so nothing new reaches the rest)."""
    for part in parts:
        try:
            if part.proc is not None and part.proc.poll() is None:
                part.stop()
        except Exception:  # noqa: BLE001 - stop the others whatever one did
            pass


class Chain:
    """Two replicas on ``pg_url`` behind the shipped gateway and agent configs; restartable parts."""

    def __init__(self, tmp: Path, pg_url: str, models: list = MODELS, interval: str = "1s",
                 agent_config: str = "agent.yaml", gateway_config: str = "gateway-loadbalancing.yaml"):
        self.tmp = Path(tmp)
        self.pg_url = pg_url
        configs = [model_config(m) for m in models]
        self.replicas = [ProcessorProcess(self.tmp / f"replica{k}", models=configs, db_url=pg_url, interval=interval,
                                          env={sc.ENV_REPLICA_ID: f"replica-{k}"})
                         for k in range(2)]
        endpoints = ", ".join(r.grpc_endpoint for r in self.replicas)
        from tests.support import COLLECTOR_ENV, free_port

        self.gateway = CollectorProcess(self.tmp, gateway_config, name="gateway", env={
            COLLECTOR_ENV["replicas"]: f"[{endpoints}]",
            COLLECTOR_ENV["prometheus"]: f"127.0.0.1:{free_port()}"})
        self.agent = CollectorProcess(self.tmp, agent_config, name="agent",
                                      env={COLLECTOR_ENV["gateway"]: self.gateway.grpc_endpoint})
        self.engine = create_engine(engine_url(pg_url))

    def __enter__(self) -> "Chain":
        for replica in self.replicas:
            replica.start()
        self.gateway.start()
        self.agent.start()
        return self

    def __exit__(self, *exc) -> None:
        stop_all((self.agent, self.gateway, *self.replicas))
        self.engine.dispose()

    def model_server(self, models: list, start: int, count: int, **kwargs) -> ModelServerProcess:
        return ModelServerProcess(self.tmp, self.agent.grpc_endpoint, models, start, count, **kwargs)

    def received(self, replica: ProcessorProcess, model: str) -> float:
        return replica.sample("ml_records_received_total", {"model": model, "signal": "prediction"}) or 0

    def probe(self, models: list = MODELS) -> dict:
        """Send one OTLP request mixing one prediction of every model through the agent; return
        {model: index of the replica that received it}, failing if one reached both."""
        grpc_export(self.agent.grpc_endpoint, otlp_logs_request(
            [prediction(m, prediction_id(m, -1), row(m, -1)[0], label=row(m, -1)[1]) for m in models]))

        def landed():
            seen = {m: [k for k, r in enumerate(self.replicas) if self.received(r, m)] for m in models}
            return seen if all(seen.values()) else None

        seen = wait_for(landed, timeout=90, what="every probe prediction reached a replica")
        assert all(len(v) == 1 for v in seen.values()), f"a model reached both replicas: {seen}"
        return {m: v[0] for m, v in seen.items()}

    def holders(self) -> dict:
        """{model: index of the replica holding its compute lease} (unexpired, version VERSION)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("select model, holder from compute_leases where model_version = :v "
                                     "and expires_at >= extract(epoch from clock_timestamp())"), {"v": VERSION}).all()
        index = {f"replica-{k}": k for k in range(len(self.replicas))}
        return {m: index[h] for m, h in rows if h in index}

    def stored(self) -> dict:
        """{model: (rows, distinct prediction ids)} in the predictions table."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "select model, count(*), count(distinct prediction_id) from predictions group by model")).all()
        return {m: (n, d) for m, n, d in rows}

    def ids(self, model: str) -> set:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(text("select prediction_id from predictions where model = :m"),
                                               {"m": model})}

    def wait_stored(self, expected: dict, timeout: float = 180) -> None:
        """Wait until each model has ``expected[model]`` rows; fail on more rows than that, or on
        two rows with one id."""
        def done():
            stored = self.stored()
            for m, n in expected.items():
                rows, distinct = stored.get(m, (0, 0))
                assert rows == distinct, f"{m}: {rows} rows for {distinct} ids (stored twice)"
                assert rows <= n, f"{m}: {rows} rows stored, only {n} sent"
            return all(stored.get(m, (0, 0))[0] == n for m, n in expected.items())

        try:
            wait_for(done, timeout=timeout, what=f"rows stored: {expected}")
        except AssertionError:
            raise AssertionError(f"stored {self.stored()}, expected {expected}; agent queue "
                                 f"{self._queue(self.agent)}, gateway queue {self._queue(self.gateway)}") from None

    @staticmethod
    def _queue(col: CollectorProcess):
        try:
            return col.telemetry("otelcol_exporter_queue_size", {"data_type": "logs"})
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return repr(exc)
