"""Request handling shared by the gRPC and HTTP receivers, and what they hand requests to.

The receivers know nothing of the stages after them: they hand each request to an
:class:`Ingestor` (the protocol below; ``service.py`` wires the implementation). An OTLP body
is cleaned in an ingest worker process when a pool is given (``pool_task``, a picklable
function), else on the writer thread, then committed on the writer thread; the OTLP response
(with ``partial_success`` when records were rejected) is built only after the commit. Metrics
and traces are accepted and counted so that a Collector pipeline pointed at the processor does
not fail.

Example::

    handlers = Handlers(ingestor, counters, writer=ThreadPoolExecutor(1), pool=None)
    response = await handlers.export("logs", body, "application/x-protobuf", None)
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_ml_processor.counters import Counters
from otel_ml_processor.receive.otlp import KIND_LOGS, KIND_METRICS, LogEvent

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """Retryable: storage unreachable, or an ingest worker died. Answered HTTP 503 + Retry-After /
    gRPC UNAVAILABLE, so OTLP clients resend and nothing is lost."""


@dataclass
class CommitResult:
    """What a committed request comes to: the receivers answer from it."""

    accepted: int = 0
    rejected: int = 0
    message: str = ""       # the first rejection's reason and message

    def reject(self, n: int, message: str) -> None:
        self.rejected += n
        if not self.message:
            self.message = message

    def add(self, other: "CommitResult") -> "CommitResult":
        self.accepted += other.accepted
        if other.rejected:
            self.reject(other.rejected, other.message)
        return self


class Ingestor(Protocol):
    """The stages after receive, as the receivers see them (implemented in ``service.py``).

    ``clean`` and ``clean_events`` return a batch the receivers never look into; ``commit``
    runs on the writer thread and raises :class:`Unavailable` when storage is unavailable.
    """

    def clean(self, kind: str, body: bytes, content_type: str, encoding: Optional[str], max_bytes: int,
              received_at: float) -> Any: ...

    def clean_events(self, events: Sequence[LogEvent]) -> Any: ...

    def commit(self, batch: Any, now: float) -> CommitResult: ...


class Handlers:
    def __init__(self, ingestor: Ingestor, counters: Counters, writer: Executor, pool: Optional[Executor] = None,
                 max_bytes: int = 16 << 20, pool_factory: Optional[Callable[[], Executor]] = None,
                 pool_task: Optional[Callable[..., Any]] = None):
        self.ingestor, self.counters, self.writer, self.pool, self.max_bytes = ingestor, counters, writer, pool, max_bytes
        self.pool_factory = pool_factory
        #: what a worker process runs: pool_task(kind, body, content_type, encoding, max_bytes, received_at)
        self.pool_task = pool_task

    def commit(self, kind: str, batch: Any):
        result = self.ingestor.commit(batch, time.time())
        if kind == KIND_LOGS:
            response = ExportLogsServiceResponse()
            if result.rejected:
                response.partial_success.CopyFrom(ExportLogsPartialSuccess(
                    rejected_log_records=result.rejected, error_message=result.message[:1000]))
            return response
        return ExportMetricsServiceResponse() if kind == KIND_METRICS else ExportTraceServiceResponse()

    async def export(self, kind: str, body: bytes, content_type: str, encoding: Optional[str]):
        """Clean and commit one OTLP body; raises MalformedRequest / RequestTooLarge / Unavailable."""
        loop = asyncio.get_running_loop()
        now = time.time()
        if self.pool is not None and self.pool_task is not None:
            pool = self.pool
            try:
                batch = await loop.run_in_executor(pool, self.pool_task, kind, body, content_type, encoding,
                                                   self.max_bytes, now)
            except BrokenProcessPool as exc:
                # A worker died (killed, out of memory): start a new pool; this request is retried.
                log.error("an ingest worker died; restarting the ingest workers")
                if self.pool is pool and self.pool_factory is not None:
                    self.pool = self.pool_factory()
                raise Unavailable("ingest worker restarting: retry later") from exc
        else:
            batch = await loop.run_in_executor(self.writer, self.ingestor.clean, kind, body, content_type,
                                               encoding, self.max_bytes, now)
        return await loop.run_in_executor(self.writer, self.commit, kind, batch)

    async def events(self, events: Sequence[LogEvent]) -> CommitResult:
        """Clean and commit already decoded events (``POST /v1/labels``) on the writer thread."""
        ingestor = self.ingestor
        return await asyncio.get_running_loop().run_in_executor(
            self.writer, lambda: ingestor.commit(ingestor.clean_events(events), time.time()))

    def request_rejected(self, reason: str) -> None:
        self.counters.inc(self.counters.rejected, (reason,))
