"""The stateless half of ingest: a request in, a :class:`CleanBatch` out.

It decodes, validates and anonymizes, and can run in ingest worker processes (so that both
cores work) or on the writer thread. What it found wrong travels in the batch: on the writer
thread, :mod:`.admit` counts it and applies the cardinality limits and the per-model feature
kinds before the batch goes on to the store.

Example::

    cleaner = Cleaner(config.anonymization)
    batch = cleaner.request("logs", body, "application/x-protobuf", None, 16 << 20, time.time())
    batch.predictions, batch.rejections, batch.issues
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

from otel_ml_processor.clean.anonymize import Anonymizer
from otel_ml_processor.clean.kinds import signature
from otel_ml_processor.clean.records import AuditRecord, LabelRecord, PredictionRecord
from otel_ml_processor.clean.validate import Rejection, Validator
from otel_ml_processor.config import AnonymizationConfig
from otel_ml_processor.receive.otlp import KIND_LOGS, KIND_METRICS, MESSAGES, LogEvent, decode_request, events_from_request


@dataclass
class CleanBatch:
    predictions: list = field(default_factory=list)   # PredictionRecord, anonymized
    labels: list = field(default_factory=list)        # LabelRecord
    audits: list = field(default_factory=list)        # AuditRecord, anonymized
    rejections: list = field(default_factory=list)    # Rejection
    issues: dict = field(default_factory=dict)        # (model, feature, issue) -> count
    logs: int = 0                                     # non-ML log records
    points: int = 0                                   # metric data points (metrics requests)
    spans: int = 0                                    # spans (traces requests)
    #: model -> (feature names, their value types) when every prediction of the model in this
    #: batch had exactly those (``FeatureKinds.accept`` then checks the batch at once)
    kinds: dict = field(default_factory=dict)


def _points(metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


class Cleaner:
    def __init__(self, anonymization: AnonymizationConfig, environ: Optional[dict] = None):
        self._batch: Optional[CleanBatch] = None
        self.validator = Validator(self._issue)
        self.anonymizer = Anonymizer(anonymization, environ)

    def _issue(self, model: str, feature: str, issue: str) -> None:
        key = (model, feature, issue)
        batch = self._batch
        assert batch is not None, "the validator reports issues only inside events()"
        batch.issues[key] = batch.issues.get(key, 0) + 1

    def events(self, events: Iterable[LogEvent]) -> CleanBatch:
        batch = self._batch = CleanBatch()
        validate, anonymizer = self.validator.validate, self.anonymizer
        for ev in events:
            rec = validate(ev)
            if rec is None:
                batch.logs += 1
            elif type(rec) is PredictionRecord:
                batch.predictions.append(anonymizer.prediction(rec))
            elif type(rec) is Rejection:
                batch.rejections.append(rec)
            elif type(rec) is LabelRecord:
                batch.labels.append(rec)
            elif type(rec) is AuditRecord:
                batch.audits.append(anonymizer.audit(rec))
        self._batch = None
        return batch

    def request_encoded(self, *args) -> CleanBatch:
        """:meth:`request`, with each prediction's JSON made here (in the worker) already."""
        batch = self.request(*args)
        signatures: dict = {}
        for r in batch.predictions:
            r.encode()
            sig = signature(r.features)
            if signatures.setdefault(r.model, sig) != sig:
                signatures[r.model] = None
        batch.kinds = {m: sig for m, sig in signatures.items() if sig is not None}
        return batch

    def request(self, kind: str, body: bytes, content_type: str, encoding: Optional[str],
                max_bytes: int, received_at: float) -> CleanBatch:
        """Decode an OTLP body of ``kind`` (logs, metrics, traces) and clean it."""
        request = decode_request(MESSAGES[kind], body, content_type, encoding, max_bytes)
        return self.message(kind, request, received_at)

    def message(self, kind: str, request, received_at: float) -> CleanBatch:
        if kind == KIND_LOGS:
            return self.events(events_from_request(request, received_at))
        if kind == KIND_METRICS:
            return CleanBatch(points=sum(_points(m) for rm in request.resource_metrics
                                         for sm in rm.scope_metrics for m in sm.metrics))
        return CleanBatch(spans=sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans))


# --- ingest worker processes ------------------------------------------------------------------

_worker_cleaner: Optional[Cleaner] = None


#: Seconds between two checks that the processor that started a worker is still alive.
PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    # A worker blocks on its task queue; if the processor is SIGKILLed nothing would tell it.
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(0)


def init_worker(anonymization: AnonymizationConfig, environ: dict) -> None:
    """Pool initializer: one Cleaner per worker process."""
    global _worker_cleaner
    # Ctrl-C reaches the whole foreground process group; the parent handles it and shuts the
    # pool down in order. SIGTERM keeps its default: it is how the pool ends the surviving
    # workers of a broken pool (ignoring it left the pool's manager joining them forever).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="otel-ml-parent-watch").start()
    os.environ.update(environ)
    _worker_cleaner = Cleaner(anonymization, environ)


def clean_in_worker(kind: str, body: bytes, content_type: str, encoding: Optional[str],
                    max_bytes: int, received_at: float) -> CleanBatch:
    assert _worker_cleaner is not None, "init_worker runs first in each worker process"
    return _worker_cleaner.request_encoded(kind, body, content_type, encoding, max_bytes, received_at)


def warm_up() -> bool:
    return _worker_cleaner is not None
