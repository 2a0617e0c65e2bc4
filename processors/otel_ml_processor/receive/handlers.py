"""Request handling shared by the gRPC and HTTP receivers.

An OTLP body is cleaned (decoded, validated, anonymized) in an ingest worker process when a
pool is given, else on the writer thread, then committed on the writer thread; the OTLP
response (with ``partial_success`` when records were rejected) is built only after the
commit. Metrics and traces are accepted and counted so that a Collector pipeline pointed at
the processor does not fail.

Example::

    handlers = Handlers(ingest, counters, writer=ThreadPoolExecutor(1), pool=None)
    response = await handlers.export("logs", body, "application/x-protobuf", None)
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_ml_processor.clean.batch import KIND_LOGS, KIND_METRICS, CleanBatch, clean_in_worker
from otel_ml_processor.counters import Counters
from otel_ml_processor.pipeline import Ingest


class Handlers:
    def __init__(self, ingest: Ingest, counters: Counters, writer: Executor, pool: Optional[Executor] = None,
                 max_bytes: int = 16 << 20):
        self.ingest, self.counters, self.writer, self.pool, self.max_bytes = ingest, counters, writer, pool, max_bytes

    def commit(self, kind: str, batch: CleanBatch):
        result = self.ingest.commit(batch, time.time())
        if kind == KIND_LOGS:
            response = ExportLogsServiceResponse()
            if result.rejected:
                response.partial_success.CopyFrom(ExportLogsPartialSuccess(
                    rejected_log_records=result.rejected, error_message=result.message[:1000]))
            return response
        return ExportMetricsServiceResponse() if kind == KIND_METRICS else ExportTraceServiceResponse()

    async def export(self, kind: str, body: bytes, content_type: str, encoding: Optional[str]):
        """Clean and commit one OTLP body; raises MalformedRequest / RequestTooLarge."""
        loop = asyncio.get_running_loop()
        now = time.time()
        if self.pool is not None:
            batch = await loop.run_in_executor(self.pool, clean_in_worker, kind, body, content_type, encoding,
                                               self.max_bytes, now)
        else:
            batch = await loop.run_in_executor(self.writer, self.ingest.cleaner.request, kind, body, content_type,
                                               encoding, self.max_bytes, now)
        return await loop.run_in_executor(self.writer, self.commit, kind, batch)

    def request_rejected(self, reason: str) -> None:
        self.counters.inc(self.counters.rejected, (reason,))
