"""Latency of a one-row predict on the model servers users run: bare, plain OpenTelemetry, otel-ml.

Each server runs as a real process from its venv (``scripts/install-server-venvs``) and serves a
scikit-learn ``LogisticRegression`` (4 features, 3 classes), in three modes, in turn:

- ``bare``: the server alone (no ``opentelemetry-instrument``);
- ``otel``: ``opentelemetry-instrument`` with otel-ml disabled
  (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_ml``): the server's own spans and metrics only;
- ``otel-ml``: ``opentelemetry-instrument`` with otel-ml (its span, metrics, one record per row
  through its disk buffer), every signal to a real otel-ml processor over OTLP/gRPC.

The servers: FastAPI under uvicorn (1 worker, ``predict`` + ``predict_proba`` per request),
MLServer's scikit-learn runtime (``parallel_workers`` 0, outputs ``predict`` and
``predict_proba``) and BentoML (``bentoml.sklearn.load_model``). The client (this process)
sends one-row requests one after another on a kept-alive connection and times each from send to
answer; after ``--warmup`` requests, ``--requests`` are timed. Modes take turns for ``--rounds``
rounds, each round starting with the next mode, so drift of a loaded machine spreads over all of
them; the p50 of each mode is the median of its rounds' p50s.

    PYTHONPATH=.:processors python benchmarks/bench_servers.py
    PYTHONPATH=.:processors python benchmarks/bench_servers.py --servers fastapi --rounds 3 --requests 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "processors")]

import numpy as np  # noqa: E402 - after the checkout is on sys.path
import requests  # noqa: E402

from tests.servers.harness import APPS, ServerProcess, run_in_venv  # noqa: E402
from tests.support import ProcessorProcess, free_port  # noqa: E402

MODES = ("bare", "otel", "otel-ml")
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _fastapi(tmp: Path, models: Path, proc, mode: str) -> tuple:
    server = ServerProcess(tmp, "fastapi", ["uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", "{port}"],
                           proc, None, health="/health", service="bench-fastapi", instrument=mode != "bare",
                           env=_env(mode, {"MODEL_PATH": str(models / "fastapi" / "iris.joblib"),
                                           "OTEL_ML_MODEL_NAME": "iris", "OTEL_ML_MODEL_VERSION": "1"}))
    return server, "/predict", lambda row: {"rows": [row]}


def _mlserver(tmp: Path, models: Path, proc, mode: str) -> tuple:
    port = free_port()
    repo = tmp / "repo"
    folder = repo / "iris"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.joblib").write_bytes((models / "mlserver" / "iris.joblib").read_bytes())
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    (repo / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
        "parallel_workers": 0}))
    server = ServerProcess(tmp, "mlserver", ["mlserver", "start", str(repo)], proc, None, port=port,
                           health="/v2/health/ready", service="bench-mlserver", instrument=mode != "bare",
                           env=_env(mode, {}))

    def body(row):
        return {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row}],
                "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}

    return server, "/v2/models/iris/infer", body


def _bentoml(tmp: Path, models: Path, proc, mode: str) -> tuple:
    env = {"BENTOML_HOME": str(models / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "True",
           "BENTO_MODEL_TAG": "iris_clf:latest"}
    server = ServerProcess(tmp, "bentoml", ["bentoml", "serve", "bento_service:Classifier", "--host", "127.0.0.1",
                                            "--port", "{port}", "--working-dir", str(APPS)],
                           proc, None, health="/readyz", service="bench-bentoml", instrument=mode != "bare",
                           env=_env(mode, env))
    return server, "/predict", lambda row: {"rows": [row]}


SERVERS = {"fastapi": _fastapi, "mlserver": _mlserver, "bentoml": _bentoml}


def _env(mode: str, env: dict) -> dict:
    env = {**env, "OTEL_METRICS_EXPORTER": "otlp", "OTEL_ML_EXPORT_INTERVAL": "1000"}
    if mode == "otel":
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "otel_ml"
    return env


def _train(models: Path) -> None:
    run_in_venv("fastapi", [str(APPS / "make_models.py"), str(models / "fastapi")], cwd=models)
    run_in_venv("mlserver", [str(APPS / "make_models.py"), str(models / "mlserver"), "--named"], cwd=models)
    run_in_venv("bentoml", [str(APPS / "make_models.py"), str(models / "bentoml"), "--bentoml"], cwd=models,
                env={"BENTOML_HOME": str(models / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "True"})


def _measure(url: str, body, warmup: int, n: int) -> float:
    rng = np.random.default_rng(0)
    rows = [[round(float(v), 3) for v in rng.normal(size=4)] for _ in range(warmup + n)]
    session = requests.Session()
    times = []
    for i, row in enumerate(rows):
        payload = body(row)
        t0 = time.perf_counter()
        resp = session.post(url, json=payload, timeout=30)
        dt = time.perf_counter() - t0
        resp.raise_for_status()
        if i >= warmup:
            times.append(dt)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    servers = args.servers.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-servers-") as folder:
        tmp = Path(folder)
        models = tmp / "models"
        models.mkdir()
        _train(models)
        p50: dict = {(s, m): [] for s in servers for m in MODES}
        with ProcessorProcess(tmp / "proc") as proc:
            for r in range(args.rounds):
                for s in servers:
                    # each round starts with another mode: the first server after a switch ran slower here
                    for mode in MODES[r % 3:] + MODES[:r % 3]:
                        work = tmp / f"{s}-{mode}-{r}"
                        work.mkdir()
                        server, path, body = SERVERS[s](work, models, proc, mode)
                        server.start()
                        try:
                            p50[(s, mode)].append(_measure(server.url + path, body, args.warmup, args.requests))
                        finally:
                            server.terminate()
                            server.kill()
                        print(f"round {r + 1} {s:9} {mode:8} p50 {p50[(s, mode)][-1] * 1e6:8.0f} us", flush=True)
    print(f"\np50 of a one-row predict, median of {args.rounds} rounds of {args.requests} requests (us)")
    print(f"{'server':10} {'bare':>8} {'otel':>8} {'otel-ml':>8} {'otel-bare':>10} {'otel-ml-otel':>13}")
    for s in servers:
        med = {m: statistics.median(p50[(s, m)]) * 1e6 for m in MODES}
        print(f"{s:10} {med['bare']:8.0f} {med['otel']:8.0f} {med['otel-ml']:8.0f} {med['otel'] - med['bare']:10.0f}"
              f" {med['otel-ml'] - med['otel']:13.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
