"""FastAPI under ``uvicorn --workers 2`` and under gunicorn with uvicorn workers, each under
``opentelemetry-instrument`` with the documented variables, sending to a real processor: every
row predicted is stored once, exactly, with the model's name and version; no otel-ml span in the
app's traces; SIGTERM delivers what the workers still hold. See :mod:`tests.servers.harness`."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import requests

from otel_ml import semconv as sc
from tests.servers.harness import (
    APPS, ServerProcess, TraceSink, expected_rows, random_rows, run_and_terminate, run_in_venv,
)
from tests.support import ProcessorProcess

pytestmark = pytest.mark.e2e

VENV = "fastapi"
COMMANDS = {
    "uvicorn": ["uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", "{port}", "--workers", "2"],
    "gunicorn": ["gunicorn", "fastapi_app:app", "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
                 "-b", "127.0.0.1:{port}"],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    run_in_venv(VENV, [str(APPS / "make_models.py"), str(out)], cwd=out)
    return out


@pytest.mark.parametrize("launcher", sorted(COMMANDS))
def test_fastapi_workers_store_each_row_once(tmp_path, models, launcher):
    rng = np.random.default_rng(7)
    pids = set()
    with ProcessorProcess(tmp_path / "proc") as proc, TraceSink() as sink:
        server = ServerProcess(tmp_path, VENV, COMMANDS[launcher], proc, sink, health="/health",
                               service=f"iris-{launcher}", env={
                                   "MODEL_PATH": str(models / "iris.joblib"),
                                   sc.ENV_MODEL_NAME: "iris", sc.ENV_MODEL_VERSION: "4"}).start()
        lock = threading.Lock()

        def send(n: int) -> dict:
            with lock:
                rows = random_rows(rng, n, 4)
            # a new connection each time, so either worker may take it
            answer = requests.post(f"{server.url}/predict", json={"rows": rows}, timeout=30).json()
            with lock:
                pids.add(answer["pid"])
            return expected_rows(rows, [f"x{i}" for i in range(4)], answer["labels"], answer["probabilities"],
                                 answer["classes"], "iris", "4")

        run_and_terminate(proc, sink, server, send, before=[1, 3, 5, 1, 2] * 4, after=[1, 4, 2] * 4,
                          until=lambda: len(pids) >= 2)      # both workers have rows to deliver
