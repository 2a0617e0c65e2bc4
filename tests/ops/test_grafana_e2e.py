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
instance, every feature and metric (the repeated panels' variables), a 1m $__rate_interval, and
must return at least one series: q-values (ks features), distance scores and their thresholds
(the multivariate score), Wilson intervals (binary model), fairness p-values and their adjusted
record included. The variables' own label_values() queries must find the model, the job, the
features and the metrics.
"""

from __future__ import annotations

import re

import pytest

from dashboards.prometheus import generate
from tests.ops import churn_traffic
from tests.ops.grafana_queries import dashboards, panel_queries, substitute
from tests.sdk.test_e2e import ModelServer
from tests.support import PrometheusProcess, ProcessorProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

VALUES = {"model": "churn", "model_version": "1", "feature": ".*", "metric": ".*", "job": "model-server", "instance": ".*"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grafana")
    rule_files = generate.render_to(generate.load_thresholds(), tmp / "rules")
    with ProcessorProcess(tmp / "processor", models=[churn_traffic.MODEL]) as proc:
        server = ModelServer(tmp, proc.grpc_port, tmp / "buffer.db")
        metrics_port = free_port()
        server.env.update({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                           "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port), "OTEL_TRACES_EXPORTER": "none",
                           "OTEL_LOGS_EXPORTER": "none"})
        server.start()
        try:
            churn_traffic.send(server, proc, logger_endpoint=proc.grpc_endpoint, seed=11)
            prom = PrometheusProcess(tmp, targets=[proc.metrics_endpoint], rule_files=rule_files, scrape_configs=[
                {"job_name": "model-server", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}])
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
    variables = [
        (var["name"], re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]))
        for dash in dashboards().values()
        for var in dash["templating"]["list"]
        if var["type"] == "query"
    ]

    def values() -> dict:
        found: dict = {}
        for name, m in variables:
            series = live.query(substitute(m.group(1), VALUES))
            found.setdefault(name, set()).update(s["metric"][m.group(2)] for s in series)
        return found

    def complete(found: dict) -> bool:
        # The series appear scrape by scrape (the multivariate score after the first compute cycle):
        # wait until every value the dashboards need is there, not just any series.
        return (
            {"churn"} <= found.get("model", set())
            and "1" in found.get("model_version", set())
            and "model-server" in found.get("job", set())
            and bool(found.get("instance"))
            and {"age", "income", "visits", "__multivariate__"} <= found.get("feature", set())
            and {"accuracy", "precision", "recall"} <= found.get("metric", set())
        )

    last: dict = {}

    def ready() -> bool:
        last.clear()
        last.update(values())
        return complete(last)

    try:
        wait_for(ready, timeout=90, what="the dashboards' variable values")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; found: {last}") from None
    assert complete(last), last
