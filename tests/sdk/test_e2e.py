"""End to end with real parts: ``opentelemetry-instrument`` on the example sklearn server, real
OTLP/gRPC to the real processor, rows read back from the processor's SQLite database.

1. Predictions arrive with the right features, outputs, scores and trace ids; labels and the
   audit trail too.
2. The local store: processor down, predictions made, model server SIGKILLed and restarted,
   processor started -> every prediction arrives, none twice (distinct ids == rows == made).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from otel_ml import semconv as sc
from tests.support import ProcessorProcess, free_port, wait_for

from .conftest import buffered_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "examples" / "sklearn_server.py"


class ModelServer:
    """``opentelemetry-instrument python examples/sklearn_server.py`` as a real process."""

    def __init__(self, tmp: Path, otlp_port: int, buffer: Path, name: str = "server", script: Path = SERVER,
                 launcher: bool = True, protocol: str = "grpc"):
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        exe = shutil.which("opentelemetry-instrument")
        assert exe, "opentelemetry-instrument (opentelemetry-instrumentation) must be installed"
        self.args = ([exe] if launcher else []) + [sys.executable, str(script), "--port", str(self.port)]
        path = os.pathsep.join([str(ROOT), str(ROOT / "processors"), os.environ.get("PYTHONPATH", "")])
        self.env = {
            **os.environ, "PYTHONPATH": path,
            "OTEL_SERVICE_NAME": "churn-api",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            sc.ENV_MODEL_NAME: "churn", sc.ENV_MODEL_VERSION: "1",
            sc.ENV_BUFFER_PATH: str(buffer),
            sc.ENV_EXPORT_INTERVAL: "200",
            sc.ENV_SHUTDOWN_TIMEOUT: "3000",
        }
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ModelServer":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log_path.read_text()}")
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200

        wait_for(healthy, timeout=120, what="model server up")
        return self

    def predict(self, rows: list, **extra) -> dict:
        resp = requests.post(f"{self.url}/predict", json={"rows": rows, **extra}, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code


def _rows(rng: np.random.Generator, n: int) -> list:
    return [{"age": round(float(rng.normal(40, 12)), 3), "income": round(float(rng.gamma(2, 2)), 3),
             "visits": int(rng.integers(0, 20))} for _ in range(n)]


def _stored(db: Path) -> list:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(
            "SELECT prediction_id, model, model_version, task, features, segments, output_label, score, probabilities,"
            " trace_id FROM predictions WHERE model = 'churn'")]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_instrumented_server_predictions_reach_the_processor(tmp_path, protocol):
    models = [{"name": "churn", "task": "classification", "positive_label": "yes"}]
    with ProcessorProcess(tmp_path / "proc", models=models) as proc:
        port = proc.grpc_port if protocol == "grpc" else proc.http_port
        server = ModelServer(tmp_path, port, tmp_path / "buffer.db", protocol=protocol).start()
        try:
            rng = np.random.default_rng(11)
            sent = {}
            for size in (1, 3, 5):
                rows = _rows(rng, size)
                answer = server.predict(rows)
                for row, p in zip(rows, answer["predictions"]):
                    sent[p["id"]] = (row, p, answer["trace_id"])
            assert len(sent) == 9 and None not in sent
            stored = wait_for(lambda: (lambda r: r if len(r) == len(sent) else None)(_stored(proc.db_path)),
                              timeout=60, what="9 predictions in the processor database")
            for r in stored:
                row, p, trace_id = sent[r["prediction_id"]]
                assert (r["model"], r["model_version"], r["task"]) == ("churn", "1", "classification")
                assert json.loads(r["features"]) == row
                assert r["output_label"] == p["label"]
                assert r["score"] == pytest.approx(p["score"], rel=1e-12)
                probs = json.loads(r["probabilities"])
                assert set(probs) == {"no", "yes"} and max(probs.values()) == pytest.approx(p["score"], rel=1e-12)
                assert r["trace_id"] == trace_id
            assert len({r["trace_id"] for r in stored}) == 3, "one trace per request"

            pid = next(iter(sent))
            requests.post(f"{server.url}/label", json={"id": pid, "value": "yes"}, timeout=10).raise_for_status()

            def labelled():
                with sqlite3.connect(proc.db_path) as conn:
                    return conn.execute("SELECT value_text FROM labels WHERE model='churn' AND prediction_id=?",
                                        (pid,)).fetchone()

            assert wait_for(labelled, timeout=60, what="label stored") == ("yes",)
            with sqlite3.connect(proc.db_path) as conn:
                audit = conn.execute("SELECT action, model_version, actor FROM audit WHERE model='churn'").fetchall()
            assert ("model_load", "1") in [(a, v) for a, v, _ in audit] and all(actor for *_, actor in audit)
            # Spans and client metrics reach the processor's OTLP receiver too.
            assert wait_for(lambda: proc.sample("ml_records_received_total", {"signal": "span"}),
                            timeout=60, what="spans received")
            assert wait_for(lambda: proc.sample("ml_records_received_total", {"signal": "metric"}),
                            timeout=60, what="metrics received")
            # The server's Python logging is bridged to OTel logs.
            assert wait_for(lambda: proc.sample("ml_records_received_total", {"signal": "log"}),
                            timeout=60, what="application logs received")
        finally:
            assert server.stop() == 0, server.log_path.read_text()


def _buffered_predictions(path: Path) -> int:
    return sum(e.event_name == sc.EVENT_PREDICTION for e in buffered_events(path))


def test_sigkill_and_restart_with_the_hub_down_loses_nothing_and_duplicates_nothing(tmp_path):
    models = [{"name": "churn", "task": "classification"}]
    proc = ProcessorProcess(tmp_path / "proc", models=models)       # configured, not started yet
    buffer = tmp_path / "buffer.db"
    rng = np.random.default_rng(5)
    made = []

    first = ModelServer(tmp_path, proc.grpc_port, buffer, name="first").start()
    for size in (2, 4, 6, 8):
        made += [p["id"] for p in first.predict(_rows(rng, size))["predictions"]]
    wait_for(lambda: _buffered_predictions(buffer) >= len(made), timeout=60, what="predictions on disk")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = ModelServer(tmp_path, proc.grpc_port, buffer, name="second").start()
    try:
        for size in (3, 5):
            made += [p["id"] for p in second.predict(_rows(rng, size))["predictions"]]
        assert len(made) == 28 and len(set(made)) == 28
        with proc:
            def arrived():
                rows = _stored(proc.db_path)
                return rows if len(rows) >= len(made) and _buffered_predictions(buffer) == 0 else None

            stored = wait_for(arrived, timeout=120, what="every prediction in the processor database")
            ids = [r["prediction_id"] for r in stored]
            assert len(ids) == len(set(ids)) == len(made), "none lost, none twice"
            assert set(ids) == set(made)
    finally:
        assert second.stop() == 0, second.log_path.read_text()


def test_fastapi_example_with_two_lines_of_code(tmp_path):
    """examples/fastapi_server.py (``otel_ml.configure``, no launcher) under uvicorn, to the processor."""
    with ProcessorProcess(tmp_path / "proc", models=[{"name": "churn", "task": "classification"}]) as proc:
        server = ModelServer(tmp_path, proc.grpc_port, tmp_path / "buffer.db", name="fastapi",
                             script=ROOT / "examples" / "fastapi_server.py", launcher=False).start()
        try:
            rows = _rows(np.random.default_rng(2), 2)
            answer = server.predict(rows, segments=[{"gender": "f"}, {"gender": "m"}])
            sent = {p["id"]: (row, p) for row, p in zip(rows, answer["predictions"])}
            stored = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(_stored(proc.db_path)),
                              timeout=60, what="2 predictions in the processor database")
            for r in stored:
                row, p = sent[r["prediction_id"]]
                assert json.loads(r["features"]) == {k: float(v) for k, v in row.items()}
                assert r["output_label"] == p["label"] and r["score"] == pytest.approx(p["score"], rel=1e-12)
            assert sorted(json.loads(r["segments"])["gender"] for r in stored) == ["f", "m"]
        finally:
            # uvicorn shuts down cleanly, then re-raises SIGTERM (exit status -15).
            assert server.stop() in (0, -signal.SIGTERM), server.log_path.read_text()
            assert "Application shutdown complete" in server.log_path.read_text()
