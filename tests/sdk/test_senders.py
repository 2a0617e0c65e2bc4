"""The OTLP senders against real loopback servers, and their configuration from OTEL_* variables."""

from __future__ import annotations

import gzip
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from otel_ml.senders import LOGS_EXPORT_METHOD, GrpcSender, HttpSender, sender_from_env
from tests.support import free_port

BODY = b"\x0a\x03abc" * 1000


class GrpcReceiver:
    """A gRPC server answering LogsService/Export with OK (or ``code``), keeping bodies and metadata."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.OK) -> None:
        self.bodies, self.metadata, self.code = [], [], code

        def export(body, context):
            self.bodies.append(body)
            self.metadata.append(dict(context.invocation_metadata()))
            if self.code != grpc.StatusCode.OK:
                context.abort(self.code, "no")
            return b""

        service, method = LOGS_EXPORT_METHOD.strip("/").split("/")
        handler = grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(export)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)


def test_grpc_sender_sends_the_bytes_with_headers_and_gzip():
    receiver = GrpcReceiver()
    sender = GrpcSender(f"127.0.0.1:{receiver.port}", headers=[("Authorization", "Bearer t0k")], compression="gzip")
    try:
        assert sender.send(BODY) and sender.send(BODY[:10])
        assert receiver.bodies == [BODY, BODY[:10]]
        assert receiver.metadata[0]["authorization"] == "Bearer t0k"
        assert receiver.metadata[0]["user-agent"].startswith("otel-ml/")
    finally:
        sender.shutdown()
        receiver.stop()


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT])
def test_grpc_sender_reports_a_refusal_as_a_failure(code):
    receiver = GrpcReceiver(code)
    sender = GrpcSender(f"127.0.0.1:{receiver.port}")
    try:
        assert sender.send(BODY) is False and receiver.bodies == [BODY]
    finally:
        sender.shutdown()
        receiver.stop()


def test_grpc_sender_to_nobody_fails_within_its_timeout():
    sender = GrpcSender(f"127.0.0.1:{free_port()}", timeout=2.0)
    assert sender.send(BODY) is False
    sender.shutdown()


class HttpReceiver:
    """An HTTP server keeping each POST (path, headers, decompressed body); answers ``status``."""

    def __init__(self, status: int = 200, close: bool = False) -> None:
        self.posts, self.status = [], status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                outer.posts.append((self.path, dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                if close:
                    self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "server-closes"])
def test_http_sender_posts_protobuf_with_headers_and_gzip(close):
    receiver = HttpReceiver(close=close)
    sender = HttpSender(f"http://127.0.0.1:{receiver.port}/v1/logs", headers=[("Authorization", "Bearer x")],
                        compression="gzip")
    try:
        for _ in range(3):
            assert sender.send(BODY)
        assert [p for p, _, _ in receiver.posts] == ["/v1/logs"] * 3
        assert all(b == BODY for _, _, b in receiver.posts)
        headers = receiver.posts[0][1]
        assert headers["Content-Type"] == "application/x-protobuf" and headers["Authorization"] == "Bearer x"
    finally:
        sender.shutdown()
        receiver.stop()


def test_http_sender_reports_an_error_status_as_a_failure():
    receiver = HttpReceiver(status=503)
    sender = HttpSender(f"http://127.0.0.1:{receiver.port}/v1/logs")
    try:
        assert sender.send(BODY) is False and len(receiver.posts) == 1
    finally:
        sender.shutdown()
        receiver.stop()
    assert HttpSender(f"http://127.0.0.1:{free_port()}/v1/logs", timeout=2).send(BODY) is False


def test_configuration_follows_the_otlp_exporter_variables(monkeypatch):
    for var in ("ENDPOINT", "PROTOCOL", "HEADERS", "INSECURE", "TIMEOUT", "COMPRESSION"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{var}", raising=False)
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_LOGS_{var}", raising=False)
    default = sender_from_env()
    assert isinstance(default, GrpcSender) and (default.target, default.insecure) == ("localhost:4317", True)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://hub:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc,x-tenant=7")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    secure = sender_from_env()
    assert (secure.target, secure.insecure, secure.timeout) == ("hub:4317", False, 3.0)
    assert dict(secure.headers) == {"authorization": "Bearer abc", "x-tenant": "7"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs-hub:4317")
    assert sender_from_env().target == "logs-hub:4317", "the _LOGS_ variable wins"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://hub:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    http = sender_from_env()
    assert isinstance(http, HttpSender) and http.url == "http://hub:4318/v1/logs" and http.compression == "gzip"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://other:9999/custom")
    assert sender_from_env().url == "http://other:9999/custom", "a _LOGS_ endpoint is used as it is"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="protobuf"):
        sender_from_env()
