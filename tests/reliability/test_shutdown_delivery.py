"""Shutdown delivers (issue 19): the hub is down while a script predicts and exits; a second run
starts with the hub still down; the hub (a real processor) starts 3 s later, well within the
second run's OTEL_ML_SHUTDOWN_TIMEOUT. Every prediction of both runs is stored before the second
process has exited, over OTLP/gRPC and OTLP/HTTP, five rounds in a row."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otel_ml import semconv as sc
from tests.support import ProcessorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "predict_and_exit.py"
CALLS = 40


def _run(tmp: Path, name: str, proc: ProcessorProcess, protocol: str, timeout_ms: int) -> subprocess.Popen:
    exe = shutil.which("opentelemetry-instrument")
    assert exe, "opentelemetry-instrument (opentelemetry-instrumentation) must be installed"
    endpoint = f"http://127.0.0.1:{proc.grpc_port if protocol == 'grpc' else proc.http_port}"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "processors"), os.environ.get("PYTHONPATH", "")]),
           "OTEL_SERVICE_NAME": "batch-job", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
           "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_INSECURE": "true",
           sc.ENV_MODEL_NAME: "churn", sc.ENV_MODEL_VERSION: "1", sc.ENV_BUFFER_PATH: str(tmp / "buffer.db"),
           sc.ENV_EXPORT_INTERVAL: "200", sc.ENV_SHUTDOWN_TIMEOUT: str(timeout_ms)}
    log = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen([exe, sys.executable, str(SCRIPT), "--calls", str(CALLS), "--ids", str(tmp / f"{name}.json")],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _stored(proc: ProcessorProcess) -> list:
    with sqlite3.connect(proc.db_path) as conn:
        return [r[0] for r in conn.execute("select prediction_id from predictions")]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_hub_back_during_shutdown_gets_everything_before_the_process_ends(tmp_path, protocol):
    for round_ in range(5):
        tmp = tmp_path / f"round{round_}"
        tmp.mkdir()
        proc = ProcessorProcess(tmp / "proc", models=[{"name": "churn", "task": "classification"}])  # down
        first = _run(tmp, "first", proc, protocol, timeout_ms=500)
        assert first.wait(timeout=120) == 0, (tmp / "first.log").read_text()
        log = (tmp / "first.log").read_text()
        # Out of time with the hub down: warned once, with how many records stay and where.
        assert log.count("records stay in") == 1 and f"{CALLS + 1} records stay in {tmp / 'buffer.db'}" in log, log
        second = _run(tmp, "second", proc, protocol, timeout_ms=60_000)
        try:
            time.sleep(3)                        # the hub comes back 3 s later
            proc.start()
            assert second.wait(timeout=90) == 0, (tmp / "second.log").read_text()
            made = json.loads((tmp / "first.json").read_text()) + json.loads((tmp / "second.json").read_text())
            stored = _stored(proc)               # read at once: delivered before the second run ended
            assert len(made) == 2 * CALLS and sorted(stored) == sorted(made), f"round {round_}"
            assert "records stay in" not in (tmp / "second.log").read_text()
        finally:
            if second.poll() is None:
                second.kill()
            proc.stop()
