"""The Prometheus/Grafana path with the Collectors in front: every dashboard panel query returns data.

The whole single-hub stack of docs/collector.md, as real processes on loopback:
- the example scikit-learn model server under ``opentelemetry-instrument`` (real SDK, system
  metrics, ML events through the disk buffer), and the explicit SDK API for what it does not
  send (a sensitive segment, a NaN feature, labels sent twice), both exporting OTLP/gRPC to
- the agent otelcol (collector-config/agent.yaml), forwarding everything to
- the gateway otelcol (collector-config/gateway.yaml): ML events to the otel-ml processor,
  metrics to its Prometheus exporter;
- Prometheus scraping the processor and the gateway's exporter (``honor_labels``, as
  collector-config/prometheus.yml does), with the shipped recording rules and alerts.

Each panel query runs as Grafana would (model=churn, every instance, job = the model
server's service.name, which the gateway's exporter turns into ``job``) and must return data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import requests
import yaml

import otel_ml
from dashboards.prometheus import generate
from tests.ops.grafana_queries import panel_queries, substitute
from tests.sdk.test_e2e import ModelServer
from tests.support import (COLLECTOR_ENV, CollectorProcess, PrometheusProcess, ProcessorProcess, free_port,
                           sdk_logger_provider, wait_for)

pytestmark = pytest.mark.e2e

SERVICE = "churn-api"   # tests.sdk.test_e2e.ModelServer's OTEL_SERVICE_NAME: the series' job
VALUES = {"model": "churn", "model_version": "1", "feature": ".*", "metric": ".*", "job": SERVICE, "instance": ".*"}
MODEL = {"name": "churn", "task": "classification", "positive_label": "yes", "reference": {"first_n": 40},
         # ks features have q-values, income (psi) a distance score and its noise floor: both kinds are drawn
         "drift": {"default": {"method": "ks"}, "features": {"income": {"method": "psi"}}}, "fairness": {"attributes": ["gender"], "min_group_size": 5}}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collector-grafana")
    rule_files = generate.render_to(generate.load_thresholds(), tmp / "rules")
    exporter = f"127.0.0.1:{free_port()}"
    with ProcessorProcess(tmp / "processor", models=[MODEL]) as proc, \
            CollectorProcess(tmp, "gateway.yaml", name="gateway", env={
                COLLECTOR_ENV["processor"]: proc.grpc_endpoint, COLLECTOR_ENV["prometheus"]: exporter}) as gateway, \
            CollectorProcess(tmp, "agent.yaml", name="agent",
                             env={COLLECTOR_ENV["gateway"]: gateway.grpc_endpoint}) as agent:
        server = ModelServer(tmp, agent.grpc_port, tmp / "buffer.db")
        server.env.update({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
        server.start()
        try:
            rng = np.random.default_rng(5)
            ids = []
            for i in range(30):  # the inputs drift after the first 15 requests
                rows = [{"age": float(rng.normal(40 + (25 if i >= 15 else 0), 12)), "income": float(rng.gamma(2, 2)),
                         "visits": int(rng.integers(0, 20))} for _ in range(5)]
                ids += [(p["id"], p["label"]) for p in server.predict(rows)["predictions"]]
            with pytest.raises((requests.HTTPError, requests.ConnectionError)):  # the error counter
                server.predict([{"age": "not a number"}])
            # The first_n reference is the first 40 predictions to arrive: the server's, not the direct records'
            # below (income and visits constant), whatever the Collectors' timing.
            wait_for(lambda: (proc.sample("ml_records_received_total", {"model": "churn", "signal": "prediction"})
                              or 0) >= 150, timeout=120, what="the model server's predictions received")
            provider = sdk_logger_provider(agent.grpc_endpoint, "grpc")
            for i in range(60):
                pid = otel_ml.record_prediction(
                    "churn", "1", {"age": float(rng.normal(40, 12)) if i % 20 else math.nan, "income": 4.0,
                                   "visits": 3.0},
                    label=str(rng.choice(["yes", "no"])), score=float(rng.uniform(0.5, 1)),
                    segments={"gender": str(rng.choice(["f", "m"]))}, logger_provider=provider)
                if i < 5:   # replaced by the second label below
                    otel_ml.record_label("churn", pid, "no", logger_provider=provider)
                otel_ml.record_label("churn", pid, str(rng.choice(["yes", "no"])), logger_provider=provider)
            provider.shutdown()
            for pid, label in ids:
                requests.post(f"{server.url}/label", json={"id": pid, "value": label if rng.random() < 0.8 else "no"},
                              timeout=10).raise_for_status()
            # 210 labeled predictions, less the first_n reference ones (not in the labeled window)
            labeled = 150 + 60 - MODEL["reference"]["first_n"]
            wait_for(lambda: (proc.sample("ml_window_labeled", {"model": "churn"}) or 0) >= labeled, timeout=120,
                     what="labels joined through both Collectors")
            prom = PrometheusProcess(tmp, targets=[proc.metrics_endpoint], rule_files=rule_files)
            cfg_path = prom.tmp / "prometheus.yml"
            cfg = yaml.safe_load(cfg_path.read_text())
            shipped = yaml.safe_load((gateway.config.parent / "prometheus.yml").read_text())
            job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "otel-collector")
            cfg["scrape_configs"].append({**job, "static_configs": [{"targets": [exporter]}]})
            cfg_path.write_text(yaml.safe_dump(cfg))
            with prom:
                yield prom
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=30)


QUERIES = list(panel_queries())


@pytest.mark.parametrize("dash, title, ref, expr", QUERIES, ids=[f"{d}:{t}:{r}" for d, t, r, _ in QUERIES])
def test_panel_query_returns_data_through_the_collectors(live, dash, title, ref, expr):
    promql = substitute(expr, VALUES)
    assert wait_for(lambda: live.query(promql), timeout=90, what=f"data for {dash} / {title} / {ref}: {promql}")


def test_model_server_metrics_come_through_the_gateway_with_the_service_as_job(live):
    series = wait_for(lambda: live.query('ml_client_predictions_total{ml_model_name="churn"}'), what="client counter")
    assert {s["metric"]["job"] for s in series} == {SERVICE}
