"""Auth, TLS, partial success, label endpoint and the PII scan, against a real processor (issue 5)."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from pathlib import Path

import grpc
import pytest
import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

import otel_ml
from otel_ml import semconv as sc
from tests.support import ProcessorProcess, otlp_logs_request, prediction, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "s3cret-token-for-tests"
HASH_KEY = "test-hash-key"


def _prediction(pid: str, **extra) -> tuple:
    return prediction("sec", pid, **extra)


_request = otlp_logs_request


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with ProcessorProcess(tmp_path_factory.mktemp("auth"), extra={"receiver": {"bearer_token_env": "OTEL_ML_TOKEN"}},
                          env={"OTEL_ML_TOKEN": TOKEN}) as proc:
        yield proc


@pytest.mark.parametrize("header, ok", [(None, False), ("Bearer wrong", False), (f"Bearer {TOKEN}", True)],
                         ids=["missing", "wrong", "right"])
def test_http_bearer_token(secured, header, ok):
    headers = {"Content-Type": "application/x-protobuf", **({"Authorization": header} if header else {})}
    before = secured.sample("ml_records_rejected_total", {"reason": "unauthenticated"})
    r = requests.post(f"{secured.http_url}/v1/logs", data=_request([_prediction(f"h-{header}")]), headers=headers, timeout=10)
    assert r.status_code == (200 if ok else 401)
    labels = requests.post(f"{secured.http_url}/v1/labels", json=[{"model": "sec", "prediction_id": "x", "value": "1"}],
                           headers={k: v for k, v in headers.items() if k == "Authorization"}, timeout=10)
    assert labels.status_code == (200 if ok else 401)
    after = secured.sample("ml_records_rejected_total", {"reason": "unauthenticated"})
    assert after == before + (0 if ok else 2)


@pytest.mark.parametrize("token, ok", [(None, False), ("wrong", False), (TOKEN, True)], ids=["missing", "wrong", "right"])
def test_grpc_bearer_token(secured, token, ok):
    with grpc.insecure_channel(secured.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        if ok:
            export(_request([_prediction(f"g-{token}")]), metadata=metadata, timeout=10)
        else:
            with pytest.raises(grpc.RpcError) as err:
                export(_request([_prediction(f"g-{token}")]), metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_sdk_with_token_header_is_accepted(secured):
    provider = sdk_logger_provider(secured.grpc_endpoint, "grpc", headers={"authorization": f"Bearer {TOKEN}"})
    otel_ml.record_prediction("sec-sdk", "1", {"x": 1.0}, label="1", logger_provider=provider)
    provider.shutdown()
    wait_for(lambda: secured.sample("ml_records_received_total", {"model": "sec-sdk", "signal": "prediction"}) == 1,
             what="SDK prediction with token accepted")


def test_token_never_in_logs_or_metrics(secured):
    assert TOKEN not in secured.log()
    assert TOKEN not in secured.metrics_text()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    with ProcessorProcess(tmp_path_factory.mktemp("plain")) as proc:
        yield proc


def test_partial_success_counts_each_rejected_record(plain):
    records = [
        _prediction("ok-1"),
        (sc.EVENT_PREDICTION, {sc.ML_MODEL_NAME: "sec", sc.ML_PREDICTION_ID: "no-version", sc.ML_OUTPUT_LABEL: "1"}),
        (sc.EVENT_PREDICTION, {sc.ML_MODEL_NAME: "sec", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: "bad-task",
                               sc.ML_MODEL_TASK: "clustering", sc.ML_OUTPUT_LABEL: "1"}),
        _prediction("ok-1"),   # a duplicate of the first
    ]
    r = requests.post(f"{plain.http_url}/v1/logs", data=_request(records),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    response = ExportLogsServiceResponse.FromString(r.content)
    assert response.partial_success.rejected_log_records == 3
    assert plain.sample("ml_records_rejected_total", {"reason": "missing_attribute"}) == 1
    assert plain.sample("ml_records_rejected_total", {"reason": "invalid_attribute"}) == 1
    assert plain.sample("ml_records_rejected_total", {"reason": "duplicate"}) == 1
    # JSON body, same request: JSON answer with the same partial success.
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "eventName": sc.EVENT_PREDICTION, "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "attributes": [{"key": sc.ML_MODEL_NAME, "value": {"stringValue": "sec"}},
                       {"key": sc.ML_PREDICTION_ID, "value": {"stringValue": "json-1"}}]}]}]}]})
    r = requests.post(f"{plain.http_url}/v1/logs", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200 and int(r.json()["partialSuccess"]["rejectedLogRecords"]) == 1  # int64 is a JSON string


def test_data_quality_issues_are_counted_not_fatal(plain):
    records = [_prediction("dq-1", **{sc.feature_key("x"): float("nan")}),
               _prediction("dq-2", **{sc.feature_key("x"): "text now"}),
               _prediction("dq-3", **{sc.ML_OUTPUT_SCORE: 1.7})]
    r = requests.post(f"{plain.http_url}/v1/logs", data=_request(records),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    assert ExportLogsServiceResponse.FromString(r.content).partial_success.rejected_log_records == 0
    assert plain.sample("ml_data_quality_issues_total", {"model": "sec", "feature": "x", "issue": "nan"}) == 1
    assert plain.sample("ml_data_quality_issues_total", {"model": "sec", "feature": "x", "issue": "type_changed"}) == 1
    assert plain.sample("ml_data_quality_issues_total", {"model": "sec", "feature": "__score__", "issue": "out_of_range"}) == 1


def test_gzip_and_size_limit(tmp_path):
    import gzip

    with ProcessorProcess(tmp_path, extra={"receiver": {"max_request_bytes": 4096}}) as proc:
        small = _request([_prediction("gz-1")])
        r = requests.post(f"{proc.http_url}/v1/logs", data=gzip.compress(small),
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 200
        bomb = gzip.compress(b"\0" * 10_000_000)   # 10 MB of zeros in ~10 kB: refused while decompressing
        r = requests.post(f"{proc.http_url}/v1/logs", data=bomb[:4000] if len(bomb) > 4096 else bomb,
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, timeout=10)
        assert r.status_code in (400, 413)
        r = requests.post(f"{proc.http_url}/v1/logs", data=gzip.compress(b"\0" * 100_000),
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 413
        r = requests.post(f"{proc.http_url}/v1/logs", data=b"\0" * 5000,
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 413
        assert proc.sample("ml_records_rejected_total", {"reason": "too_large"}) >= 2
        assert requests.get(f"http://{proc.metrics_endpoint}/-/healthy", timeout=5).status_code == 200


def test_pii_never_reaches_the_database_or_logs(tmp_path):
    raw = {"enduser.id": "alice.martin-7731", "email": "alice.martin@example.org", "phone": "+33 6 12 34 56 78",
           "zip": "75011"}
    with ProcessorProcess(tmp_path) as proc:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        for i in range(20):
            otel_ml.record_prediction(
                "pii", "1", {"x": float(i), "email": raw["email"], "contact": f"call {raw['phone']}",
                             "zip": raw["zip"]},
                label="1", segments={"customer": raw["email"]}, logger_provider=provider)
        provider.get_logger("test").emit(event_name=sc.EVENT_PREDICTION, attributes={
            sc.ML_MODEL_NAME: "pii", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: "with-user",
            sc.ML_OUTPUT_LABEL: "1", sc.ENDUSER_ID: raw["enduser.id"], sc.CLIENT_ADDRESS: "203.0.113.9"})
        provider.shutdown()
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "pii", "signal": "prediction"}) == 21,
                 what="PII predictions stored")
        metrics = proc.metrics_text()
    stored = b"".join(p.read_bytes() for p in Path(tmp_path).glob("otel-ml.db*"))
    logs = proc.log().encode() + metrics.encode()
    for value in [*raw.values(), "203.0.113.9", HASH_KEY]:
        if value == raw["zip"]:
            continue  # generalized, checked below
        assert value.encode() not in stored, f"{value!r} found in the database file"
        assert value.encode() not in logs, f"{value!r} found in logs or metrics"
    assert b"75011" not in stored and b"750*" in stored
    expected_hash = hmac.new(HASH_KEY.encode(), raw["enduser.id"].encode(), hashlib.sha256).hexdigest()
    assert expected_hash.encode() in stored


def test_tls_on_both_receivers(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    with ProcessorProcess(tmp_path, extra={"receiver": {"tls": {"cert_file": str(cert), "key_file": str(key)}}}) as proc:
        r = requests.post(f"https://127.0.0.1:{proc.http_port}/v1/logs", data=_request([_prediction("tls-http")]),
                          headers={"Content-Type": "application/x-protobuf"}, verify=str(cert), timeout=10)
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(f"http://127.0.0.1:{proc.http_port}/v1/logs", data=b"", timeout=5)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(proc.grpc_endpoint, creds) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            export(_request([_prediction("tls-grpc")]), timeout=10)
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "sec", "signal": "prediction"}) == 2,
                 what="both TLS predictions")
