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

VALUES = {"model": "churn", "model_version": "1", "feature": ".*", "metric": ".*", "job": "model-server", "instance": ".*"}
MODEL = {"name": "churn", "task": "classification", "positive_label": "yes", "reference": {"first_n": 40},
         # ks features have q-values, income (psi) a distance score and its noise floor: both kinds are drawn
         "drift": {"default": {"method": "ks"}, "features": {"income": {"method": "psi"}}},
         "fairness": {"attributes": ["gender"], "min_group_size": 5}}


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
            # The reference is the first 40 predictions to *arrive*: let the server's buffer ship its 150 before the
            # direct records below (income and visits constant) arrive, or the reference could be those, and a
            # constant reference has no multivariate score.
            wait_for(lambda: (proc.sample("ml_records_received_total", {"model": "churn", "signal": "prediction"})
                              or 0) >= 150, timeout=90, what="the model server's predictions received")
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
            # 210 labeled predictions, less the first_n reference ones (not in the labeled window)
            labeled = 150 + 60 - MODEL["reference"]["first_n"]
            wait_for(lambda: (proc.sample("ml_window_labeled", {"model": "churn"}) or 0) >= labeled, timeout=90,
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
