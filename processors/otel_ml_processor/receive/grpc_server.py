"""OTLP/gRPC receiver (LogsService, MetricsService, TraceService Export) on ``grpc.aio``.

Requests arrive as raw bytes and are parsed here, so a malformed body is answered with
``INVALID_ARGUMENT`` (grpc's own deserializer would answer ``INTERNAL``). A missing or wrong
bearer token gets ``UNAUTHENTICATED``; past ``receiver.max_inflight_bytes``, ``UNAVAILABLE``
(retryable, with a RetryInfo detail). The answer is sent only after the batch is committed.

Example::

    server = await start_grpc_server(config.receiver, handlers, auth, gate)
    ...
    await server.stop(grace=5)
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Callable

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from otel_ml import semconv as sc
from otel_ml_processor.config import ReceiverConfig
from otel_ml_processor.receive.auth import BearerAuth
from otel_ml_processor.receive.handlers import Handlers, Unavailable
from otel_ml_processor.receive.limits import RETRY_AFTER_SECONDS, InflightGate
from otel_ml_processor.receive.otlp import KIND_LOGS, KIND_METRICS, KIND_TRACES, MalformedRequest

SERVICES = {
    "opentelemetry.proto.collector.logs.v1.LogsService": KIND_LOGS,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": KIND_METRICS,
    "opentelemetry.proto.collector.trace.v1.TraceService": KIND_TRACES,
}
PROTOBUF = "application/x-protobuf"


def _retry_info_trailer() -> tuple:
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="busy: retry later")
    detail = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_SECONDS))
    status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _method(kind: str, handlers: Handlers, auth: BearerAuth, gate: InflightGate) -> Callable:
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
            # grpc already decompressed the body (grpc-encoding), so it is plain protobuf.
            response = await handlers.export(kind, body, PROTOBUF, None)
        except MalformedRequest as exc:
            handlers.request_rejected(sc.REASON_MALFORMED)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed OTLP request: {exc}")
        except Unavailable as exc:
            context.set_trailing_metadata(_retry_info_trailer())
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            gate.release(size)
        return response

    return export


#: Milliseconds a client connection lives before the server asks it to reconnect (GOAWAY, then
#: MAX_CONNECTION_AGE_GRACE_MS for the requests in flight): a gateway balancing over DNS
#: (collector-config/gateway-replicas.yaml, round_robin) resolves the name again when it
#: reconnects, so replicas added since get their share of the traffic.
MAX_CONNECTION_AGE_MS = 300_000
MAX_CONNECTION_AGE_GRACE_MS = 30_000


async def start_grpc_server(cfg: ReceiverConfig, handlers: Handlers, auth: BearerAuth,
                            gate: InflightGate) -> grpc.aio.Server:
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", cfg.max_request_bytes),
        ("grpc.max_send_message_length", 4 << 20),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
    ])
    for service, kind in SERVICES.items():
        handler = grpc.unary_unary_rpc_method_handler(
            _method(kind, handlers, auth, gate),
            request_deserializer=None, response_serializer=lambda m: m.SerializeToString())
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": handler}),))
    if cfg.tls.cert_file and cfg.tls.key_file:
        with open(cfg.tls.key_file, "rb") as k, open(cfg.tls.cert_file, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    _check_free(cfg.grpc_endpoint)
    try:
        if cfg.tls.cert_file and cfg.tls.key_file:
            port = server.add_secure_port(cfg.grpc_endpoint, creds)
        else:
            port = server.add_insecure_port(cfg.grpc_endpoint)
    except RuntimeError:      # grpcio raises it when the port cannot be bound (e.g. in use)
        port = 0
    if not port:
        raise OSError(f"receiver.grpc_endpoint {cfg.grpc_endpoint}: cannot listen (OTLP/gRPC; is the port in use?)")
    await server.start()
    return server


def _check_free(endpoint: str) -> None:
    """Raise an OSError naming ``receiver.grpc_endpoint`` when its port is taken. gRPC would fail
    too, but only after writing its own multi-line log to stderr; it binds with SO_REUSEPORT,
    so this probe binds the plain way, which another listener on the port refuses."""
    host, _, port = endpoint.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, ValueError):
        return      # a name that does not resolve: gRPC says so itself
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT is no obstacle
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise OSError(exc.errno, f"receiver.grpc_endpoint {endpoint}: cannot listen: "
                                             f"{os.strerror(exc.errno).lower()}") from None
