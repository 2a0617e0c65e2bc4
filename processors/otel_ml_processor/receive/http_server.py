"""OTLP/HTTP receiver (``/v1/logs``, ``/v1/metrics``, ``/v1/traces``) and ``POST /v1/labels``.

Bodies are protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``), plain
or gzip. Answers follow the OTLP/HTTP specification: 200 with the Export response (in the
request's encoding, with ``partial_success`` when records were rejected), 400 with a
``google.rpc.Status`` for a malformed body, 401 without the bearer token, 413 past
``receiver.max_request_bytes`` (checked on the raw body and while decompressing), 415 for an
unknown content type, 503 with ``Retry-After`` when busy.

``POST /v1/labels`` takes a JSON array of ``{"model", "prediction_id", "value"}`` and answers
``{"accepted": n, "rejected": m, "errors": [...]}``.

Example::

    curl -X POST http://127.0.0.1:4318/v1/labels -H 'Content-Type: application/json' \\
         -d '[{"model": "churn", "prediction_id": "p1", "value": "1"}]'
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Optional

from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from otel_ml import semconv as sc
from otel_ml_processor.config import ReceiverConfig
from otel_ml_processor.receive.auth import BearerAuth
from otel_ml_processor.receive.handlers import Handlers, Unavailable
from otel_ml_processor.receive.limits import RETRY_AFTER_SECONDS, InflightGate
from otel_ml_processor.receive.otlp import (
    KIND_LOGS, KIND_METRICS, KIND_TRACES, LogEvent, MalformedRequest, RequestTooLarge, is_json,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ROUTES = {"/v1/logs": KIND_LOGS, "/v1/metrics": KIND_METRICS, "/v1/traces": KIND_TRACES}


def _status(code: int, message: str, as_json: bool, http_status: int, headers: Optional[dict] = None) -> web.Response:
    status = status_pb2.Status(code=code, message=message)
    if as_json:
        return web.Response(status=http_status, body=json_format.MessageToJson(status).encode(),
                            content_type=JSON, headers=headers)
    return web.Response(status=http_status, body=status.SerializeToString(), content_type=PROTOBUF, headers=headers)


def label_events(body: bytes, received_at: float) -> list:
    """``/v1/labels`` JSON -> ``ml.label`` events (validated later like OTLP ones)."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"invalid JSON: {str(exc)[:200]}") from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedRequest('expected a JSON array of {"model", "prediction_id", "value"} objects')
    return [LogEvent(sc.EVENT_LABEL, received_at, {
        sc.ML_MODEL_NAME: i.get("model"), sc.ML_PREDICTION_ID: i.get("prediction_id"),
        sc.ML_LABEL_VALUE: i.get("value")}, "", "") for i in items]


class HttpReceiver:
    def __init__(self, cfg: ReceiverConfig, handlers: Handlers, auth: BearerAuth, gate: InflightGate):
        self.cfg, self.handlers, self.auth, self.gate = cfg, handlers, auth, gate

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_request_bytes)
        for path in ROUTES:
            app.router.add_post(path, self.otlp)
        app.router.add_post("/v1/labels", self.labels)
        return app

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.cfg.max_request_bytes:
            raise RequestTooLarge(f"body exceeds {self.cfg.max_request_bytes} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestTooLarge(f"body exceeds {self.cfg.max_request_bytes} bytes") from exc

    async def otlp(self, request: web.Request) -> web.StreamResponse:
        kind = ROUTES[request.path]
        ctype = request.headers.get("Content-Type", PROTOBUF)
        as_json = is_json(ctype)
        if not as_json and ctype.split(";")[0].strip().lower() != PROTOBUF:
            self.handlers.request_rejected(sc.REASON_MALFORMED)
            return _status(code_pb2.INVALID_ARGUMENT, f"unsupported Content-Type {ctype!r}", False, 415)
        if not self.auth.allows(request.headers.get("Authorization")):
            self.handlers.request_rejected(sc.REASON_UNAUTHENTICATED)
            return _status(code_pb2.UNAUTHENTICATED, "missing or invalid bearer token", as_json, 401)
        try:
            body = await self._body(request)
        except RequestTooLarge as exc:
            self.handlers.request_rejected(sc.REASON_TOO_LARGE)
            return _status(code_pb2.INVALID_ARGUMENT, str(exc), as_json, 413)
        if not self.gate.acquire(len(body)):
            self.handlers.request_rejected(sc.REASON_BUSY)
            return _status(code_pb2.UNAVAILABLE, "busy: retry later", as_json, 503,
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        encoding = request.headers.get("Content-Encoding")
        try:
            response = await self.handlers.export(kind, body, ctype, encoding)
        except RequestTooLarge as exc:
            self.handlers.request_rejected(sc.REASON_TOO_LARGE)
            return _status(code_pb2.INVALID_ARGUMENT, str(exc), as_json, 413)
        except MalformedRequest as exc:
            self.handlers.request_rejected(sc.REASON_MALFORMED)
            return _status(code_pb2.INVALID_ARGUMENT, f"malformed OTLP request: {exc}", as_json, 400)
        except Unavailable as exc:
            return _status(code_pb2.UNAVAILABLE, str(exc), as_json, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        finally:
            self.gate.release(len(body))
        if as_json:
            return web.Response(body=json_format.MessageToJson(response).encode(), content_type=JSON)
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)

    async def labels(self, request: web.Request) -> web.StreamResponse:
        if not self.auth.allows(request.headers.get("Authorization")):
            self.handlers.request_rejected(sc.REASON_UNAUTHENTICATED)
            return web.json_response({"error": "missing or invalid bearer token"}, status=401)
        try:
            body = await self._body(request)
            events = label_events(body, time.time())
        except RequestTooLarge as exc:
            self.handlers.request_rejected(sc.REASON_TOO_LARGE)
            return web.json_response({"error": str(exc)}, status=413)
        except MalformedRequest as exc:
            self.handlers.request_rejected(sc.REASON_MALFORMED)
            return web.json_response({"error": str(exc)}, status=400)
        try:
            result = await self.handlers.events(events)
        except Unavailable as exc:
            return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return web.json_response({"accepted": result.accepted, "rejected": result.rejected,
                                  "errors": [result.message] if result.message else []})


def ssl_context(cfg: ReceiverConfig) -> Optional[ssl.SSLContext]:
    if not (cfg.tls.cert_file and cfg.tls.key_file):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    return ctx
