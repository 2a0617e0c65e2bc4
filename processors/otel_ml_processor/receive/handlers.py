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
import logging
import time
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Optional

from sqlalchemy import exc as sa_exc

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_ml_processor.clean.batch import KIND_LOGS, KIND_METRICS, CleanBatch, clean_in_worker
from otel_ml_processor.counters import Counters
from otel_ml_processor.pipeline import Ingest

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """Retryable: storage unreachable, or an ingest worker died. Answered HTTP 503 + Retry-After /
    gRPC UNAVAILABLE, so OTLP clients resend and nothing is lost."""


#: Database errors that mean "try again later" (connection lost, server down, lock timeout).
RETRYABLE_DB_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


class Handlers:
    def __init__(self, ingest: Ingest, counters: Counters, writer: Executor, pool: Optional[Executor] = None,
                 max_bytes: int = 16 << 20, pool_factory: Optional[Callable[[], Executor]] = None):
        self.ingest, self.counters, self.writer, self.pool, self.max_bytes = ingest, counters, writer, pool, max_bytes
        self.pool_factory = pool_factory

    def commit(self, kind: str, batch: CleanBatch):
        try:
            result = self.ingest.commit(batch, time.time())
        except RETRYABLE_DB_ERRORS as exc:
            log.warning("storage unavailable, asking the client to retry: %s", type(exc).__name__)
            raise Unavailable("storage unavailable: retry later") from exc
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
            pool = self.pool
            try:
                batch = await loop.run_in_executor(pool, clean_in_worker, kind, body, content_type, encoding,
                                                   self.max_bytes, now)
            except BrokenProcessPool as exc:
                # A worker died (killed, out of memory): start a new pool; this request is retried.
                log.error("an ingest worker died; restarting the ingest workers")
                if self.pool is pool and self.pool_factory is not None:
                    self.pool = self.pool_factory()
                raise Unavailable("ingest worker restarting: retry later") from exc
        else:
            batch = await loop.run_in_executor(self.writer, self.ingest.cleaner.request, kind, body, content_type,
                                               encoding, self.max_bytes, now)
        return await loop.run_in_executor(self.writer, self.commit, kind, batch)

    def request_rejected(self, reason: str) -> None:
        self.counters.inc(self.counters.rejected, (reason,))
