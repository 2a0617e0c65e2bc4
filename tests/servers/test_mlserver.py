"""Seldon's MLServer with its scikit-learn runtime, two models in one server and no
``OTEL_ML_MODEL_NAME``, asked for the outputs ``predict`` and ``predict_proba`` (the runtime
calls both on the same rows), with ``parallel_workers`` 0 and MLServer's default, under
``opentelemetry-instrument``: every row stored once, exactly, with its own model's name and
version from its ``model-settings.json``; no otel-ml span in the app's traces; SIGTERM delivers.
See :mod:`tests.servers.harness`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.servers.harness import (
    APPS, ServerProcess, TraceSink, expected_rows, random_rows, run_and_terminate, run_in_venv,
)
from tests.support import ProcessorProcess, free_port

pytestmark = pytest.mark.e2e

VENV = "mlserver"
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CHURN = ["age", "income", "visits"]
# name in MLServer -> (model file, version in its settings, feature names, classes)
MODELS = {"iris-a": ("iris", "v1", IRIS, ["0", "1", "2"]), "churn-b": ("churn", "2024-06", CHURN, ["0", "1"])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    run_in_venv(VENV, [str(APPS / "make_models.py"), str(out), "--named"], cwd=out)
    return out


def _repository(tmp, trained, http_port: int, parallel_workers) -> str:
    root = tmp / "models"
    for name, (file, version, _, _) in MODELS.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "model.joblib").write_bytes((trained / f"{file}.joblib").read_bytes())
        (folder / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": version}}))
    settings = {"http_port": http_port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1"}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (root / "settings.json").write_text(json.dumps(settings))
    return str(root)


@pytest.mark.parametrize("parallel_workers", [0, None], ids=["parallel_workers=0", "parallel_workers=default"])
def test_mlserver_two_models_store_each_row_once_with_their_names(tmp_path, trained, parallel_workers):
    rng = np.random.default_rng(11)
    port = free_port()
    models = _repository(tmp_path, trained, port, parallel_workers)
    turn = iter(range(10_000))
    with ProcessorProcess(tmp_path / "proc") as proc, TraceSink() as sink:
        server = ServerProcess(tmp_path, VENV, ["mlserver", "start", models], proc, sink, port=port,
                               health="/v2/health/ready", service="mlserver").start()

        def ready() -> bool:
            return all(requests.get(f"{server.url}/v2/models/{m}/ready", timeout=2).status_code == 200
                       for m in MODELS)

        assert ready()

        def send(n: int) -> dict:
            name = list(MODELS)[next(turn) % 2]
            _, version, names, classes = MODELS[name]
            rows = random_rows(rng, n, len(names))
            body = {"inputs": [{"name": "input-0", "shape": [n, len(names)], "datatype": "FP64",
                                "data": [v for r in rows for v in r]}],
                    "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
            resp = requests.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=30)
            assert resp.status_code == 200, resp.text
            outputs = {o["name"]: o for o in resp.json()["outputs"]}
            flat = outputs["predict_proba"]["data"]
            k = len(classes)
            proba = [flat[i * k:(i + 1) * k] for i in range(n)]
            return expected_rows(rows, names, outputs["predict"]["data"], proba, classes, name, version)

        run_and_terminate(proc, sink, server, send, before=[1, 3, 5, 2] * 4, after=[1, 4, 2, 3])
