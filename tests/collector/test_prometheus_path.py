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


import pytest
import yaml

from dashboards.prometheus import generate
from tests.ops import churn_traffic
from tests.ops.grafana_queries import panel_queries, substitute
from tests.sdk.test_e2e import ModelServer
from tests.support import (COLLECTOR_ENV, CollectorProcess, PrometheusProcess, ProcessorProcess, free_port,
                           wait_for)

pytestmark = pytest.mark.e2e

SERVICE = "churn-api"   # tests.sdk.test_e2e.ModelServer's OTEL_SERVICE_NAME: the series' job
VALUES = {"model": "churn", "model_version": "1", "feature": ".*", "metric": ".*", "job": SERVICE, "instance": ".*"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collector-grafana")
    rule_files = generate.render_to(generate.load_thresholds(), tmp / "rules")
    exporter = f"127.0.0.1:{free_port()}"
    with ProcessorProcess(tmp / "processor", models=[churn_traffic.MODEL]) as proc, \
            CollectorProcess(tmp, "gateway.yaml", name="gateway", env={
                COLLECTOR_ENV["processor"]: proc.grpc_endpoint, COLLECTOR_ENV["prometheus"]: exporter}) as gateway, \
            CollectorProcess(tmp, "agent.yaml", name="agent",
                             env={COLLECTOR_ENV["gateway"]: gateway.grpc_endpoint}) as agent:
        server = ModelServer(tmp, agent.grpc_port, tmp / "buffer.db")
        server.env.update({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
        server.start()
        try:
            churn_traffic.send(server, proc, logger_endpoint=agent.grpc_endpoint, seed=5, timeout=120)
            shipped = yaml.safe_load((gateway.config.parent / "prometheus.yml").read_text())
            job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "otel-collector")
            prom = PrometheusProcess(tmp, targets=[proc.metrics_endpoint], rule_files=rule_files,
                                     scrape_configs=[{**job, "static_configs": [{"targets": [exporter]}]}])
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
