"""Protocol-independent request handling shared by the gRPC and HTTP receivers.

Each handler takes a decoded request, runs it through the ingest pipeline on the writer
thread and returns the OTLP response message (with ``partial_success`` when some records were
rejected). Metrics and traces are accepted and counted so that a Collector pipeline pointed
at the processor does not fail.

Example::

    handlers = Handlers(ingest, counters)
    response = handlers.logs(request)          # ExportLogsServiceResponse
"""

from __future__ import annotations

import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)

from otel_ml import semconv as sc
from otel_ml_processor.counters import Counters
from otel_ml_processor.pipeline import Ingest


def _points(metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


class Handlers:
    def __init__(self, ingest: Ingest, counters: Counters):
        self.ingest, self.counters = ingest, counters

    def logs(self, request: ExportLogsServiceRequest) -> ExportLogsServiceResponse:
        result = self.ingest.logs(request, time.time())
        response = ExportLogsServiceResponse()
        if result.rejected:
            response.partial_success.CopyFrom(ExportLogsPartialSuccess(
                rejected_log_records=result.rejected, error_message=result.message[:1000]))
        return response

    def metrics(self, request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
        n = sum(_points(m) for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        self.counters.inc(self.counters.received, ("", sc.SIGNAL_METRIC), n)
        return ExportMetricsServiceResponse()

    def traces(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.counters.inc(self.counters.received, ("", sc.SIGNAL_SPAN), n)
        return ExportTraceServiceResponse()

    def request_rejected(self, reason: str) -> None:
        self.counters.inc(self.counters.rejected, (reason,))
