"""otel-ml's encoded records back as OpenTelemetry SDK log records, for apps that ask for them.

The default path never decodes: records go from the encoder to the buffer to the wire as
bytes. Two options do need SDK objects, and pay for them here (``opentelemetry-proto``'s
parser): ``logger_provider=`` (the app's own LoggerProvider receives the ML events, each
emitted as it is encoded) and ``log_exporter=`` (a custom SDK exporter receives each batch).

Example::

    from otel_ml.decode import emit_records

    emit_records(app_logger_provider.get_logger("otel_ml"), framed_records)
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from opentelemetry import trace
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PBLogRecord
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs


def value_of(any_value: Any) -> Any:
    """The Python value of an OTLP ``AnyValue``."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(value_of(v) for v in any_value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind)


def attributes_of(key_values: Any) -> Dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in key_values}


def _context(lr: PBLogRecord) -> Any:
    if not lr.trace_id:
        return None
    span_context = trace.SpanContext(int.from_bytes(lr.trace_id, "big"), int.from_bytes(lr.span_id, "big"),
                                     is_remote=False, trace_flags=trace.TraceFlags(lr.flags & 0xFF))
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def _records(records: Sequence[bytes]) -> List[PBLogRecord]:
    # Framed records are ScopeLogs.log_records fields: together they parse as one ScopeLogs.
    return list(ScopeLogs.FromString(b"".join(records)).log_records)


def emit_records(logger: Any, records: Sequence[bytes]) -> None:
    """Emit framed records (``otel_ml.wire.frame``) through an OpenTelemetry ``Logger``."""
    from opentelemetry.context import Context

    empty = Context()
    for lr in _records(records):
        logger.emit(timestamp=lr.time_unix_nano or None, observed_timestamp=lr.observed_time_unix_nano or None,
                    context=_context(lr) or empty, event_name=lr.event_name or None,
                    attributes=attributes_of(lr.attributes))


def readable_log_records(request: bytes) -> list:
    """The SDK ``ReadableLogRecord`` objects of an ``ExportLogsServiceRequest``."""
    from opentelemetry.context import Context
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry._logs import LogRecord

    out = []
    for rl in ExportLogsServiceRequest.FromString(request).resource_logs:
        resource = Resource(attributes_of(rl.resource.attributes), rl.schema_url or None)
        for sl in rl.scope_logs:
            scope = InstrumentationScope(sl.scope.name, sl.scope.version or None)
            for lr in sl.log_records:
                record = LogRecord(timestamp=lr.time_unix_nano or None,
                                   observed_timestamp=lr.observed_time_unix_nano or None,
                                   context=_context(lr) or Context(), event_name=lr.event_name or None,
                                   attributes=attributes_of(lr.attributes))
                out.append(ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope))
    return out
