"""Every panel query of every dashboard returns data from live sources.

Sources, all real processes on loopback:
- the otel-ml processor (console script);
- the example scikit-learn model server under ``opentelemetry-instrument`` (the real SDK:
  ``MLInstrumentor`` + ``opentelemetry-instrumentation-system-metrics``), its OTel metrics
  served by the standard ``opentelemetry-exporter-prometheus`` (OTEL_METRICS_EXPORTER=prometheus),
  its prediction events sent over OTLP/gRPC to the processor; the inputs drift halfway;
- the explicit SDK API for what the example server does not send: a sensitive segment
  (fairness), a NaN feature (data quality), labels sent twice (replaced);
- Prometheus scraping the processor (job otel-ml) and the model server (job model-server)
  every second, with the shipped recording rules and alerts loaded.

Each query is run as Grafana would for model=churn, model_version=1, job=model-server, every
instance, a 1m $__rate_interval, and must return at least one series. The variables' own
label_values() queries must find the model and the job.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import requests
import yaml

import otel_ml
from dashboards.prometheus import generate
from tests.ops.grafana_queries import dashboards, panel_queries, substitute
from tests.sdk.test_e2e import ModelServer
from tests.support import PrometheusProcess, ProcessorProcess, free_port, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

VALUES = {"model": "churn", "model_version": "1", "job": "model-server", "instance": ".*"}
MODEL = {"name": "churn", "task": "classification", "positive_label": "yes", "reference": {"first_n": 40},
         "drift": {"default": {"method": "ks"}}, "fairness": {"attributes": ["gender"], "min_group_size": 5}}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grafana")
    rule_files = generate.render_to(generate.load_thresholds(), tmp / "rules")
    with ProcessorProcess(tmp / "processor", models=[MODEL]) as proc:
        server = ModelServer(tmp, proc.grpc_port, tmp / "buffer.db")
        metrics_port = free_port()
        server.env.update({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                           "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port), "OTEL_TRACES_EXPORTER": "none",
                           "OTEL_LOGS_EXPORTER": "none"})
        server.start()
        try:
            rng = np.random.default_rng(11)
            ids = []
            for i in range(30):  # inputs drift after the first 15 requests (75 rows)
                rows = [{"age": float(rng.normal(40 + (25 if i >= 15 else 0), 12)), "income": float(rng.gamma(2, 2)),
                         "visits": int(rng.integers(0, 20))} for _ in range(5)]
                ids += [(p["id"], p["label"]) for p in server.predict(rows)["predictions"]]
            with pytest.raises((requests.HTTPError, requests.ConnectionError)):  # a failing predict call: the error counter
                server.predict([{"age": "not a number"}])
            provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
            for i in range(60):
                pid = otel_ml.record_prediction(
                    "churn", "1", {"age": float(rng.normal(40, 12)) if i % 20 else math.nan, "income": 4.0, "visits": 3.0},
                    label=str(rng.choice(["yes", "no"])), score=float(rng.uniform(0.5, 1)),
                    segments={"gender": str(rng.choice(["f", "m"]))}, logger_provider=provider)
                if i < 5:
                    otel_ml.record_label("churn", pid, "no", logger_provider=provider)
                otel_ml.record_label("churn", pid, str(rng.choice(["yes", "no"])), logger_provider=provider)
            provider.shutdown()
            for pid, label in ids:
                requests.post(f"{server.url}/label", json={"id": pid, "value": label if rng.random() < 0.8 else "no"},
                              timeout=10).raise_for_status()
            # 210 labeled predictions; the labeled window leaves out the first_n (40) reference ones
            wait_for(lambda: (proc.sample("ml_window_labeled", {"model": "churn"}) or 0) >= 170, timeout=90,
                     what="labels joined")
            prom = PrometheusProcess(tmp, targets=[proc.metrics_endpoint], rule_files=rule_files)
            cfg_path = prom.tmp / "prometheus.yml"
            cfg = yaml.safe_load(cfg_path.read_text())
            cfg["scrape_configs"].append({"job_name": "model-server",
                                          "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]})
            cfg_path.write_text(yaml.safe_dump(cfg))
            with prom:
                yield prom
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=30)


QUERIES = list(panel_queries())


@pytest.mark.parametrize("dash, title, ref, expr", QUERIES, ids=[f"{d}:{t}:{r}" for d, t, r, _ in QUERIES])
def test_panel_query_returns_data(live, dash, title, ref, expr):
    promql = substitute(expr, VALUES)
    assert wait_for(lambda: live.query(promql), timeout=90, what=f"data for {dash} / {title} / {ref}: {promql}")


def test_variable_queries_find_the_model_and_the_job(live):
    found = {}
    for dash in dashboards().values():
        for var in dash["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"])
            series = wait_for(lambda: live.query(substitute(m.group(1), VALUES)), what=f"values of ${var['name']}")
            found.setdefault(var["name"], set()).update(s["metric"][m.group(2)] for s in series)
    assert "churn" in found["model"] and "1" in found["model_version"] and "model-server" in found["job"]
    assert found["instance"]
