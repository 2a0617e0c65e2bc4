"""Build OpenTelemetry SDK providers that export over OTLP, configured by OTEL_* variables.

The exporters read the standard variables themselves (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ...); the resource reads ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. The protocol follows ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` or
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` by default, as the Python SDK's own default).

Example::

    from otel_ml.providers import build_logger_provider

    provider = build_logger_provider()   # set it global with opentelemetry._logs.set_logger_provider
    ...
    provider.shutdown()                  # flushes what is queued
"""

from __future__ import annotations

import os
from typing import Optional

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource


def otlp_protocol(signal: str = "LOGS") -> str:
    """The OTLP protocol chosen by the environment: ``grpc``, ``http/protobuf`` or ``http/json``."""
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip().lower()


def otlp_log_exporter(protocol: Optional[str] = None):
    """An OTLP log exporter for ``protocol`` (default: from the environment)."""
    protocol = protocol or otlp_protocol("LOGS")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter()
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

        return HttpLogExporter()
    raise ValueError(f"unsupported OTLP protocol {protocol!r}: use grpc or http/protobuf")


def build_logger_provider(
    protocol: Optional[str] = None, resource: Optional[Resource] = None
) -> LoggerProvider:
    """A LoggerProvider with a batching OTLP exporter."""
    provider = LoggerProvider(resource=resource or Resource.create())
    provider.add_log_record_processor(BatchLogRecordProcessor(otlp_log_exporter(protocol)))
    return provider
