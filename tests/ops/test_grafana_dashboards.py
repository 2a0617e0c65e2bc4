"""Grafana dashboards (issue 7): generated from code, importable, and every panel's query returns
data from a real Prometheus scraping a real processor and a real instrumented model server."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import otel_ml
from tests.sdk.test_e2e import ModelServer
from tests.support import PrometheusProcess, ProcessorProcess, free_port, sdk_logger_provider, wait_for

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "dashboards" / "grafana"
BOARDS = sorted(GRAFANA.glob("*.json"))
SUBSTITUTE = {"$model_version": "1", "$model": "churn", "$__rate_interval": "2m", "$instance": ".*"}


def _targets(board: dict) -> list:
    return [(p["title"], t) for p in board["panels"] if p.get("type") != "row" for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var, value in SUBSTITUTE.items():   # $model_version before $model
        expr = expr.replace(var, value)
    return expr


def test_regenerating_gives_the_committed_files():
    result = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [b.name for b in BOARDS] == ["otel-ml-model.json", "otel-ml-overview.json", "otel-ml-pipeline.json",
                                       "otel-ml-system.json"]


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable_and_datasource_agnostic(path):
    board = json.loads(path.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    if path.name != "otel-ml-system.json":
        assert variables["model"]["query"].startswith("label_values(")
    # No hard-coded datasource: every reference is the ${datasource} variable.
    uids = set(re.findall(r'"uid": "([^"]*)"', path.read_text())) - {board["uid"]}
    assert uids == {"${datasource}"}
    for title, target in _targets(board):
        assert target["expr"] and target["refId"], title
    for panel in board["panels"]:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grafana")
    models = [{"name": "churn", "task": "classification", "positive_label": "yes", "reference": {"first_n": 40},
               "fairness": {"attributes": ["gender"], "min_group_size": 5}}]
    with ProcessorProcess(tmp / "processor", models=models) as proc:
        server = ModelServer(tmp, proc.grpc_port, tmp / "buffer.db")
        metrics_port = free_port()
        server.env.update({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                           "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port), "OTEL_TRACES_EXPORTER": "none",
                           "OTEL_LOGS_EXPORTER": "none"})
        server.start()
        try:
            rng = np.random.default_rng(11)
            ids = []
            for i in range(30):
                rows = [{"age": float(rng.normal(40 + (15 if i >= 15 else 0), 12)), "income": float(rng.gamma(2, 2)),
                         "visits": int(rng.integers(0, 20))} for _ in range(5)]
                ids += [(p["id"], p["label"]) for p in server.predict(rows)["predictions"]]
            # Segments and data-quality problems come through the explicit API (same model, same processor).
            provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
            for i in range(60):
                pid = otel_ml.record_prediction(
                    "churn", "1", {"age": float(rng.normal(40, 12)) if i % 20 else math.nan, "income": 4.0, "visits": 3.0},
                    label=str(rng.choice(["yes", "no"])), score=float(rng.uniform(0.5, 1)),
                    segments={"gender": str(rng.choice(["f", "m"]))}, logger_provider=provider)
                otel_ml.record_label("churn", pid, str(rng.choice(["yes", "no"])), logger_provider=provider)
            provider.shutdown()
            for pid, label in ids:
                import requests

                requests.post(f"{server.url}/label", json={"id": pid, "value": label if rng.random() < 0.8 else "no"},
                              timeout=10).raise_for_status()
            wait_for(lambda: (proc.sample("ml_window_labeled", {"model": "churn"}) or 0) >= 150, timeout=90,
                     what="labels joined")
            with PrometheusProcess(tmp, targets=[proc.metrics_endpoint, f"127.0.0.1:{metrics_port}"]) as prom:
                yield prom
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=30)


@pytest.mark.e2e
@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_every_panel_query_returns_data(stack, path):
    prom = stack
    board = json.loads(path.read_text())
    targets = _targets(board)
    assert targets
    empty = []

    def all_have_data():
        empty.clear()
        for title, target in targets:
            if not prom.query(substitute(target["expr"])):
                empty.append(f"{title}: {target['expr']}")
        return not empty

    wait_for(all_have_data, timeout=120, interval=2, what=f"data for every panel of {path.name} (empty: {empty})")
    # The model variable's own query finds the model.
    variables = {v["name"]: v for v in board["templating"]["list"]}
    if "model" in variables:
        match = re.match(r"label_values\((.*), (\w+)\)$", variables["model"]["query"])
        assert {s["metric"][match.group(2)] for s in prom.query(match.group(1))} >= {"churn"}
