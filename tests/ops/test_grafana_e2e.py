"""Every panel query of every dashboard returns data from live sources.

Sources, all real processes on loopback:
- the otel-ml processor (console script) fed through the official SDK over OTLP/gRPC with a
  binary model: drifted and stable features, scores, a sensitive segment, true labels (some
  sent twice), one NaN feature value (a data-quality issue);
- a model-server process (tests/ops/model_server.py) whose OTel metrics — the ml.client.*
  instruments and opentelemetry-instrumentation-system-metrics — reach Prometheus through the
  standard opentelemetry-exporter-prometheus reader;
- Prometheus scraping both every second, with the shipped recording rules and alerts loaded.

Each query is run as Grafana would for the variables model=churn, model_version=3,
job=model-server and a 1m $__rate_interval, and must return at least one series.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import otel_ml
from dashboards.prometheus import generate
from tests.ops.grafana_queries import panel_queries, substitute
from tests.ops.stack import reference_quantiles
from tests.support import PrometheusProcess, ProcessorProcess, free_port, http_get, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

FIRST_N = 100
VALUES = {"model": "churn", "model_version": "3", "job": "model-server"}
MODEL = {"name": "churn", "task": "classification", "positive_label": "1", "reference": {"first_n": FIRST_N},
         "drift": {"default": {"method": "ks"}}, "fairness": {"attributes": ["gender"], "min_group_size": 5}}


def _send(provider) -> None:
    rng = np.random.default_rng(11)
    ref = reference_quantiles(FIRST_N)
    ids = []
    for i in range(3 * FIRST_N):
        shift = 0.0 if i < FIRST_N else 2.0
        x = ref[i % FIRST_N] + shift
        p = 1.0 / (1.0 + np.exp(-x))
        label = "1" if p >= 0.5 else "0"
        features = {"x": float("nan") if i == 5 else x, "a": ref[(i * 7) % FIRST_N]}
        ids.append((otel_ml.record_prediction("churn", "3", features, label=label, score=max(p, 1 - p),
                                              segments={"gender": "f" if i % 2 else "m"}, logger_provider=provider),
                    "1" if rng.random() < p else "0"))
        if i == FIRST_N - 1:
            provider.force_flush()
    provider.force_flush()
    for pid, truth in ids[:10]:  # sent twice: the second one replaces the first
        otel_ml.record_label("churn", pid, "0" if truth == "1" else "1", logger_provider=provider)
    provider.force_flush()
    for pid, truth in ids:
        otel_ml.record_label("churn", pid, truth, logger_provider=provider)
    provider.shutdown()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grafana")
    port = free_port()
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("model_server.py")), "--port", str(port),
                               "--model", "churn", "--version", "3"],
                              env={**__import__("os").environ,
                                   "PYTHONPATH": ":".join(sys.path)}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/metrics", timeout=1)[0] == 200, what="model server /metrics")
        rule_files = generate.render_to(generate.load_thresholds(), tmp / "rules")
        with ProcessorProcess(tmp, models=[MODEL]) as proc:
            _send(sdk_logger_provider(proc.grpc_endpoint, "grpc"))
            wait_for(lambda: proc.sample("ml_window_labeled", {"model": "churn"}) == 3 * FIRST_N, what="labels joined")
            prom = PrometheusProcess(tmp, targets=[proc.metrics_endpoint], rule_files=rule_files)
            # Two jobs: the processor, and the model server under job="model-server".
            import yaml  # noqa: PLC0415

            cfg_path = prom.tmp / "prometheus.yml"
            cfg = yaml.safe_load(cfg_path.read_text())
            cfg["scrape_configs"].append({"job_name": "model-server", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]})
            cfg_path.write_text(yaml.safe_dump(cfg))
            with prom:
                yield prom
    finally:
        server.terminate()
        server.wait(timeout=30)


QUERIES = list(panel_queries())


@pytest.mark.parametrize("dash, title, ref, expr", QUERIES, ids=[f"{d}:{t}:{r}" for d, t, r, _ in QUERIES])
def test_panel_query_returns_data(live, dash, title, ref, expr):
    promql = substitute(expr, VALUES)
    result = wait_for(lambda: live.query(promql), timeout=90, what=f"data for {dash} / {title} / {ref}: {promql}")
    assert result
