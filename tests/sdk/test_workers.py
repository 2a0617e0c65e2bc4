"""Any number of worker processes, one environment, one buffer path: each stored record is shipped
once. A real supervisor with real multiprocessing fork and spawn workers runs under
``opentelemetry-instrument`` (tests/sdk/workers_app.py) and ships to a real processor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from otel_ml import semconv as sc
from tests.support import ProcessorProcess, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "workers_app.py"


def _run(tmp: Path, proc: ProcessorProcess, *args: str) -> subprocess.Popen:
    exe = shutil.which("opentelemetry-instrument")
    assert exe, "opentelemetry-instrument (opentelemetry-instrumentation) must be installed"
    ids_dir = tmp / "ids"
    ids_dir.mkdir()
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "processors"), os.environ.get("PYTHONPATH", "")]),
           "OTEL_SERVICE_NAME": "workers", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{proc.grpc_port}",
           "OTEL_EXPORTER_OTLP_INSECURE": "true", sc.ENV_MODEL_NAME: "churn", sc.ENV_MODEL_VERSION: "1",
           sc.ENV_BUFFER_PATH: str(tmp / "buffer.db"), sc.ENV_EXPORT_INTERVAL: "200",
           sc.ENV_SHUTDOWN_TIMEOUT: "10000"}
    log = open(tmp / "app.log", "ab")
    return subprocess.Popen([exe, sys.executable, str(APP), "--ids-dir", str(ids_dir), *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _made(tmp: Path) -> list:
    return [i for f in sorted((tmp / "ids").glob("*.json")) for i in json.loads(f.read_text())]


def _stored(proc: ProcessorProcess) -> tuple:
    with sqlite3.connect(proc.db_path) as conn:
        ids = [r[0] for r in conn.execute("select prediction_id from predictions")]
        audits = conn.execute("select count(*), count(distinct audit_id) from audit where action = 'model_load'"
                              ).fetchone()
    return ids, audits


def _left_in_buffer(tmp: Path) -> int:
    with sqlite3.connect(tmp / "buffer.db") as conn:
        return conn.execute("select coalesce(sum(count), 0) from records").fetchone()[0]


def test_fork_and_spawn_workers_sharing_one_buffer_path_ship_each_record_once(tmp_path):
    with ProcessorProcess(tmp_path / "proc", models=[{"name": "churn", "task": "classification"}]) as proc:
        app = _run(tmp_path, proc, "--fork", "2", "--spawn", "1", "--calls", "25")
        assert app.wait(timeout=180) == 0, (tmp_path / "app.log").read_text()
        made = _made(tmp_path)
        assert len(made) == 75 and len(set(made)) == 75
        wait_for(lambda: len(_stored(proc)[0]) >= len(made), timeout=60, what="every prediction stored")
        ids, (audits, distinct_audits) = _stored(proc)
        assert sorted(ids) == sorted(made)
        assert audits == distinct_audits == 3, "one model_load per worker, each stored once"
        received = proc.sample("ml_records_received_total", {"signal": sc.SIGNAL_PREDICTION})
        assert received == 75, "nothing shipped twice"
        assert not proc.sample("ml_records_rejected_total", {"reason": sc.REASON_DUPLICATE})
        assert _left_in_buffer(tmp_path) == 0


def test_records_of_a_sigkilled_worker_are_shipped_by_a_live_process(tmp_path):
    proc = ProcessorProcess(tmp_path / "proc", models=[{"name": "churn", "task": "classification"}])  # down
    app = _run(tmp_path, proc, "--fork", "2", "--calls", "15", "--hang")
    try:
        wait_for(lambda: len(list((tmp_path / "ids").glob("*.json"))) == 2, timeout=120,
                 what="both workers' predictions on disk")
        workers = [int(p) for p in (tmp_path / "ids" / "workers").read_text().split()]
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        made = _made(tmp_path)
        assert len(made) == 30 and _left_in_buffer(tmp_path) >= 30
        with proc:
            # The supervisor, alive, adopts the dead workers' rows and ships them.
            wait_for(lambda: len(_stored(proc)[0]) >= len(made) and _left_in_buffer(tmp_path) == 0, timeout=90,
                     what="the killed workers' records shipped by the supervisor")
            ids, _ = _stored(proc)
            assert sorted(ids) == sorted(made)
            assert not proc.sample("ml_records_rejected_total", {"reason": sc.REASON_DUPLICATE})
            assert app.poll() is None, "shipped by the live supervisor, not at its exit"
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
