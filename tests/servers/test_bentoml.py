"""BentoML serving a scikit-learn model from its model store (``bentoml.sklearn.load_model`` of
``iris_clf:latest``), under ``opentelemetry-instrument`` with no ``OTEL_ML_MODEL_NAME``: every
row stored once, exactly, named after the store tag (name and resolved version); no otel-ml span
in the app's traces; SIGTERM delivers. See :mod:`tests.servers.harness`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.servers.harness import (
    APPS, ServerProcess, TraceSink, expected_rows, random_rows, run_and_terminate, run_in_venv,
)
from tests.support import ProcessorProcess

pytestmark = pytest.mark.e2e

VENV = "bentoml"


def test_bentoml_stores_each_row_once_named_after_its_tag(tmp_path):
    home = tmp_path / "bentoml"
    env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    tags = json.loads(run_in_venv(VENV, [str(APPS / "make_models.py"), str(tmp_path / "m"), "--bentoml"],
                                  cwd=tmp_path, env=env).strip().splitlines()[-1])
    name, version = tags["iris"].split(":")
    rng = np.random.default_rng(5)
    with ProcessorProcess(tmp_path / "proc") as proc, TraceSink() as sink:
        server = ServerProcess(
            tmp_path, VENV, ["bentoml", "serve", "bento_service:Classifier", "--host", "127.0.0.1",
                             "--port", "{port}", "--working-dir", str(APPS)],
            proc, sink, health="/readyz", service="bento-iris",
            env={**env, "BENTO_MODEL_TAG": f"{name}:latest",
                 # BentoML's own tracing samples nothing by default: the service sends every span
                 # to the same OTLP/HTTP sink
                 "BENTO_TRACES_ENDPOINT": sink.url}).start()

        def send(n: int) -> dict:
            rows = random_rows(rng, n, 4)
            resp = requests.post(f"{server.url}/predict", json={"rows": rows}, timeout=30)
            assert resp.status_code == 200, resp.text
            answer = resp.json()
            return expected_rows(rows, [f"x{i}" for i in range(4)], answer["labels"], answer["probabilities"],
                                 answer["classes"], name, version)

        run_and_terminate(proc, sink, server, send, before=[1, 3, 5, 2] * 3, after=[1, 4, 2])
