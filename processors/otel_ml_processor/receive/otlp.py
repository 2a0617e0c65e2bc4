"""Decode OTLP log export requests (protobuf or OTLP/JSON, optionally gzip) into flat events.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters here: trace
and span ids are hex strings, not base64; they are converted before parsing. Unknown JSON
fields are ignored, as the OTLP specification requires of receivers.

Example::

    from otel_ml_processor.receive.otlp import decode_logs_request, events_from_request

    request = decode_logs_request(body, content_type="application/x-protobuf", encoding="gzip",
                                  max_bytes=16 << 20)
    for event in events_from_request(request, received_at=time.time()):
        print(event.event_name, event.attributes)
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Iterator, Optional

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ml import semconv as sc

#: The OTLP signals the receivers take: each names its Export request message.
KIND_LOGS, KIND_METRICS, KIND_TRACES = "logs", "metrics", "traces"
MESSAGES: dict[str, type[Message]] = {KIND_LOGS: ExportLogsServiceRequest, KIND_METRICS: ExportMetricsServiceRequest,
            KIND_TRACES: ExportTraceServiceRequest}


class MalformedRequest(ValueError):
    """The request body cannot be decoded: OTLP answers HTTP 400 / gRPC INVALID_ARGUMENT."""


class RequestTooLarge(ValueError):
    """The body (after decompression) exceeds ``receiver.max_request_bytes``: HTTP 413."""


@dataclass(slots=True)
class LogEvent:
    """One OTLP LogRecord, flattened: what the clean stage needs and nothing more."""

    event_name: str
    time: float                   # seconds since the epoch
    attributes: dict
    trace_id: str                 # hex, "" when absent
    span_id: str


def gunzip_bounded(body: bytes, max_bytes: int) -> bytes:
    """Decompress gzip ``body``, refusing (before finishing) output larger than ``max_bytes``."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"invalid gzip body: {exc}") from exc
    if len(out) > max_bytes or d.unconsumed_tail:
        raise RequestTooLarge(f"decompressed body exceeds {max_bytes} bytes")
    if not d.eof:
        raise MalformedRequest("truncated gzip body")
    return out


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(obj: object) -> None:
    """OTLP/JSON ids are hex; protobuf's JSON mapping wants base64 for bytes fields."""
    if isinstance(obj, dict):
        for key, v in obj.items():
            if key in _ID_KEYS and isinstance(v, str) and v:
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError as exc:
                    raise MalformedRequest(f"{key} is not hex: {v[:40]!r}") from exc
            elif isinstance(v, (dict, list)):
                _hex_ids_to_base64(v)
    elif isinstance(obj, list):
        for v in obj:
            _hex_ids_to_base64(v)


def decode_request(
    message_class: type, body: bytes, content_type: str = "application/x-protobuf",
    encoding: Optional[str] = None, max_bytes: int = 16 << 20,
):
    """Parse an OTLP/HTTP body into ``message_class``; raises MalformedRequest or RequestTooLarge."""
    if encoding and encoding.lower() == "gzip":
        body = gunzip_bounded(body, max_bytes)
    elif encoding and encoding.lower() not in ("identity", ""):
        raise MalformedRequest(f"unsupported Content-Encoding {encoding!r}")
    if len(body) > max_bytes:
        raise RequestTooLarge(f"body exceeds {max_bytes} bytes")
    request = message_class()
    if is_json(content_type):
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedRequest(f"invalid JSON: {str(exc)[:200]}") from exc
        if not isinstance(obj, dict):
            raise MalformedRequest("OTLP/JSON body must be an object")
        _hex_ids_to_base64(obj)
        try:
            json_format.ParseDict(obj, request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise MalformedRequest(f"invalid OTLP/JSON: {str(exc)[:200]}") from exc
    else:
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise MalformedRequest(f"invalid OTLP protobuf: {str(exc)[:200]}") from exc
    return request


def is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def decode_logs_request(
    body: bytes, content_type: str = "application/x-protobuf", encoding: Optional[str] = None,
    max_bytes: int = 16 << 20,
) -> ExportLogsServiceRequest:
    """Parse an OTLP/HTTP ``/v1/logs`` body; raises MalformedRequest or RequestTooLarge."""
    return decode_request(ExportLogsServiceRequest, body, content_type, encoding, max_bytes)


_SCALAR_KINDS = frozenset(("string_value", "double_value", "int_value", "bool_value"))


def any_value(v) -> object:
    """The Python value of an OTLP AnyValue (arrays and maps as lists and dicts)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "double_value":
        return v.double_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value
    return None


def events_from_request(request: ExportLogsServiceRequest, received_at: float) -> Iterator[LogEvent]:
    """Every LogRecord of ``request`` as a :class:`LogEvent`.

    The event name is the LogRecord's ``event_name`` field, else the legacy ``event.name``
    attribute; the time is ``time_unix_nano``, else ``observed_time_unix_nano``, else
    ``received_at`` (the Python SDK leaves the first at 0).
    """
    legacy = sc.LEGACY_EVENT_NAME_ATTRIBUTE
    scalars = _SCALAR_KINDS
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                attrs = {}
                for kv in lr.attributes:
                    v = kv.value
                    kind = v.WhichOneof("value")
                    # Scalars are read inline: this loop runs once per attribute of every record.
                    attrs[kv.key] = getattr(v, kind) if kind in scalars else any_value(v)
                name = lr.event_name or attrs.pop(legacy, "") or ""
                if not isinstance(name, str):
                    name = ""
                t = lr.time_unix_nano or lr.observed_time_unix_nano
                yield LogEvent(
                    event_name=name,
                    time=t / 1e9 if t else received_at,
                    attributes=attrs,
                    trace_id=lr.trace_id.hex() if lr.trace_id else "",
                    span_id=lr.span_id.hex() if lr.span_id else "",
                )
