"""Walking skeleton, end to end with real parts (issue 3).

The official OTel SDK sends predictions and labels over OTLP/gRPC and over OTLP/HTTP to the
processor started from the console script; a real Prometheus scrapes it; the accuracy and the
KS statistic Prometheus returns equal scikit-learn's and scipy's on the same rows: the first_n
reference against the predictions after it (the window never holds its reference).
"""

from __future__ import annotations

import math
import subprocess

import grpc
import numpy as np
import pytest
import requests
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score

import otel_ml
from tests.support import PrometheusProcess, ProcessorProcess, otel_ml_command, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

N, FIRST_N = 300, 100


def _send(provider, model: str, rng: np.random.Generator) -> dict:
    """Predictions (inputs shifted after the reference), then labels; returns the rows sent."""
    x = np.concatenate([rng.normal(0, 1, FIRST_N), rng.normal(1.5, 1, N - FIRST_N)])
    color = rng.choice(["red", "green", "blue"], N)
    predicted = np.where(x > 0.5, "1", "0")
    truth = np.where(rng.random(N) < 0.8, predicted, np.where(predicted == "1", "0", "1"))
    ids = []
    for i in range(N):
        ids.append(otel_ml.record_prediction(
            model, "1", {"x": float(x[i]), "color": str(color[i])}, label=str(predicted[i]),
            score=0.8, logger_provider=provider))
    provider.force_flush()
    # The first ten labels are sent twice, the second time with the true value: last one wins.
    for i in range(10):
        otel_ml.record_label(model, ids[i], "1" if truth[i] == "0" else "0", logger_provider=provider)
    provider.force_flush()
    for i in range(N):
        otel_ml.record_label(model, ids[i], str(truth[i]), logger_provider=provider)
    provider.shutdown()
    return {"x": x, "predicted": predicted, "truth": truth}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("skeleton")
    models = [{"name": name, "task": "classification", "reference": {"first_n": FIRST_N},
               "drift": {"default": {"method": "ks"}}} for name in ("over-grpc", "over-http")]
    with ProcessorProcess(tmp, models=models) as proc:
        rng = np.random.default_rng(7)
        sent = {
            "over-grpc": _send(sdk_logger_provider(proc.grpc_endpoint, "grpc"), "over-grpc", rng),
            "over-http": _send(sdk_logger_provider(f"127.0.0.1:{proc.http_port}", "http"), "over-http", rng),
        }
        with PrometheusProcess(tmp, targets=[proc.metrics_endpoint]) as prom:
            yield proc, prom, sent


@pytest.mark.parametrize("model", ["over-grpc", "over-http"])
def test_prometheus_serves_sklearn_accuracy_and_scipy_ks(pipeline, model):
    proc, prom, sent = pipeline
    rows = sent[model]
    after = slice(FIRST_N, None)      # the window: after the reference
    # the labeled window: every labeled prediction, the reference's too (performance needs no reference)
    expected_accuracy = accuracy_score(rows["truth"], rows["predicted"])
    expected_ks = ks_2samp(rows["x"][:FIRST_N], rows["x"][after])

    def accuracy():
        v = prom.value(f'ml_performance{{model="{model}",metric="accuracy"}}')
        return v is not None and math.isclose(v, expected_accuracy, rel_tol=1e-9) and v

    assert wait_for(accuracy, timeout=60, what=f"accuracy {expected_accuracy} in Prometheus")
    ks = wait_for(lambda: prom.value(f'ml_drift_score{{model="{model}",feature="x",method="ks"}}'),
                  what="ks in Prometheus")
    assert math.isclose(ks, expected_ks.statistic, rel_tol=1e-9, abs_tol=1e-12)
    pvalue = prom.value(f'ml_drift_pvalue{{model="{model}",feature="x",method="ks"}}')
    assert math.isclose(pvalue, expected_ks.pvalue, rel_tol=1e-9, abs_tol=1e-12)
    assert prom.value(f'ml_drift_detected{{model="{model}",feature="x",method="ks"}}') == 1.0
    assert prom.value(f'ml_window_predictions{{model="{model}"}}') == N - FIRST_N
    assert prom.value(f'ml_window_labeled{{model="{model}"}}') == N
    assert prom.value(f'ml_window_labeled_after_reference{{model="{model}"}}') == N - FIRST_N
    assert prom.value(f'ml_records_received_total{{model="{model}",signal="prediction"}}') == N
    assert prom.value(f'ml_records_received_total{{model="{model}",signal="label"}}') == N + 10
    assert prom.value(f'ml_labels_replaced_total{{model="{model}"}}') == 10
    assert prom.value(f'time() - ml_last_computed_timestamp_seconds{{model="{model}"}}') < 60


def test_malformed_requests_get_protocol_errors_and_service_continues(pipeline):
    proc, _prom, _sent = pipeline
    before = proc.sample("ml_records_rejected_total", {"reason": "malformed"})
    r = requests.post(f"{proc.http_url}/v1/logs", data=b"\x0a\xff\xff\xffnot protobuf",
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 400
    r = requests.post(f"{proc.http_url}/v1/logs", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400
    with grpc.insecure_channel(proc.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        with pytest.raises(grpc.RpcError) as err:
            export(b"\x0a\xff\xff\xff garbage", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert proc.sample("ml_records_rejected_total", {"reason": "malformed"}) == before + 3
    # Still serving: a valid request is accepted and counted.
    provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
    otel_ml.record_prediction("after-garbage", "1", {"x": 1.0}, label="1", logger_provider=provider)
    provider.shutdown()
    wait_for(lambda: proc.sample("ml_records_received_total", {"model": "after-garbage", "signal": "prediction"}) == 1,
             what="prediction accepted after malformed requests")
    assert requests.get(f"http://{proc.metrics_endpoint}/-/healthy", timeout=5).status_code == 200


def test_sigterm_exits_zero_with_everything_stored(tmp_path):
    import sqlite3

    proc = ProcessorProcess(tmp_path).start()
    provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
    for i in range(200):
        otel_ml.record_prediction("m", "1", {"x": float(i)}, label="1", prediction_id=f"p{i}", logger_provider=provider)
    provider.shutdown()  # returns once the exporter got its answers
    assert proc.stop() == 0
    with sqlite3.connect(proc.db_path) as conn:
        assert conn.execute("select count(distinct prediction_id) from predictions").fetchone()[0] == 200


@pytest.mark.parametrize("text, key", [
    ("receiver: {grpc_endpont: 127.0.0.1:4317}\n", "receiver.grpc_endpont"),
    ("compute: {interval: soon}\n", "compute.interval"),
    ("models: [{name: churn, window: {size: large}}]\n", "models[0].window.size"),
    ("models: [{name: churn, drift: {features: {age: {method: kstest}}}}]\n", "models[0].drift.features.age.method"),
], ids=["unknown-key", "bad-duration", "bad-size", "unknown-drift-method"])
def test_bad_config_exits_2_naming_key_and_file(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run(otel_ml_command() + ["processor", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert key in result.stderr and str(path) in result.stderr
    if "kstest" in text:
        assert "known: auto, chi2, jensenshannon, ks, psi, wasserstein" in result.stderr
