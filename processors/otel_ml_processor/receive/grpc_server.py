"""OTLP/gRPC receiver (LogsService, MetricsService, TraceService Export) on ``grpc.aio``.

Requests arrive as raw bytes and are parsed here, so a malformed body is answered with
``INVALID_ARGUMENT`` (grpc's own deserializer would answer ``INTERNAL``). A missing or wrong
bearer token gets ``UNAUTHENTICATED``; past ``receiver.max_inflight_bytes``, ``UNAVAILABLE``
(retryable, with a RetryInfo detail). The answer is sent only after the batch is committed.

Example::

    server = await start_grpc_server(config.receiver, handlers, executor, auth, gate)
    ...
    await server.stop(grace=5)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ml import semconv as sc
from otel_ml_processor.config import ReceiverConfig
from otel_ml_processor.receive.auth import BearerAuth
from otel_ml_processor.receive.handlers import Handlers
from otel_ml_processor.receive.limits import RETRY_AFTER_SECONDS, InflightGate
from otel_ml_processor.receive.otlp import MalformedRequest

SERVICES = {
    "opentelemetry.proto.collector.logs.v1.LogsService": (ExportLogsServiceRequest, "logs"),
    "opentelemetry.proto.collector.metrics.v1.MetricsService": (ExportMetricsServiceRequest, "metrics"),
    "opentelemetry.proto.collector.trace.v1.TraceService": (ExportTraceServiceRequest, "traces"),
}


def _retry_info_trailer() -> tuple:
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="busy: retry later")
    detail = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_SECONDS))
    status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _method(message_class: type, kind: str, handlers: Handlers, executor: Executor,
            auth: BearerAuth, gate: InflightGate) -> Callable:
    handle = getattr(handlers, kind)

    def work(body: bytes):
        request = message_class()
        try:
            request.ParseFromString(body)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeError
            raise MalformedRequest(str(exc)[:200]) from exc
        return handle(request)

    async def export(body: bytes, context: grpc.aio.ServicerContext):
        if auth.required:
            md = dict(context.invocation_metadata() or ())
            if not auth.allows(md.get("authorization")):
                handlers.request_rejected(sc.REASON_UNAUTHENTICATED)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        size = len(body)
        if not gate.acquire(size):
            handlers.request_rejected(sc.REASON_BUSY)
            context.set_trailing_metadata(_retry_info_trailer())
            await context.abort(grpc.StatusCode.UNAVAILABLE, "busy: retry later")
        try:
            response = await asyncio.get_running_loop().run_in_executor(executor, work, body)
        except MalformedRequest as exc:
            handlers.request_rejected(sc.REASON_MALFORMED)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed OTLP request: {exc}")
        finally:
            gate.release(size)
        return response

    return export


async def start_grpc_server(cfg: ReceiverConfig, handlers: Handlers, executor: Executor,
                            auth: BearerAuth, gate: InflightGate) -> grpc.aio.Server:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", cfg.max_request_bytes),
        ("grpc.max_send_message_length", 4 << 20),
    ])
    for service, (message_class, kind) in SERVICES.items():
        handler = grpc.unary_unary_rpc_method_handler(
            _method(message_class, kind, handlers, executor, auth, gate),
            request_deserializer=None, response_serializer=lambda m: m.SerializeToString())
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": handler}),))
    if cfg.tls.cert_file and cfg.tls.key_file:
        with open(cfg.tls.key_file, "rb") as k, open(cfg.tls.cert_file, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(cfg.grpc_endpoint, creds)
    else:
        port = server.add_insecure_port(cfg.grpc_endpoint)
    if not port:
        raise OSError(f"cannot listen on {cfg.grpc_endpoint} (OTLP/gRPC)")
    await server.start()
    return server
