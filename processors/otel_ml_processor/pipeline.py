"""The ingest pipeline: OTLP events -> validate -> anonymize -> store (+ label join) -> windows.

Two halves: cleaning (``clean.batch.Cleaner``: decode, validate, anonymize; stateless, so it
runs in ingest worker processes) and :meth:`Ingest.commit` on the one writer thread (SQLite has
one writer): counters, cardinality limits, feature kinds, store, label join, windows. The
receivers answer success only after ``commit`` returned, so an acknowledged batch is committed. Cardinality caps apply to the label values it counts with: models beyond
``limits.max_models`` are stored but counted as ``__other__`` and get no window.

Example::

    ingest = Ingest(config, db, counters, windows)
    result = ingest.logs(request, received_at=time.time())   # or ingest.commit(batch, now)
    result.rejected, result.message
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable

from otel_ml import semconv as sc
from otel_ml_processor.clean.batch import CleanBatch, Cleaner
from otel_ml_processor.clean.kinds import FeatureKinds
from otel_ml_processor.config import Config
from otel_ml_processor.counters import CardinalityGuard, Counters
from otel_ml_processor.join.labels import LabelJoiner
from otel_ml_processor.receive.otlp import LogEvent
from otel_ml_processor.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    message: str = ""


class Ingest:
    def __init__(self, config: Config, db: Database, counters: Counters, windows) -> None:
        self.config, self.db, self.counters, self.windows = config, db, counters, windows
        self.models = CardinalityGuard(config.limits.max_models, sc.KIND_MODEL, counters,
                                       initial=[m.name for m in config.models])
        self._features: dict = {}   # model -> CardinalityGuard of its features
        self.cleaner = Cleaner(config.anonymization)
        self.kinds = FeatureKinds(self._issue)
        self.joiner = LabelJoiner(counters, windows, self.model_label)

    def model_label(self, model: str) -> str:
        """``model`` if admitted under ``limits.max_models``, else ``__other__`` (counted)."""
        return self.models.admit(model)

    def _feature_label(self, model: str, feature: str) -> str:
        guard = self._features.get(model)
        if guard is None:
            guard = self._features[model] = CardinalityGuard(
                self.config.limits.max_features_per_model, sc.KIND_FEATURE, self.counters)
        return guard.admit(feature)

    def window_features(self, model: str, features: dict) -> dict:
        """``features`` without those beyond ``limits.max_features_per_model`` (counted)."""
        guard = self._features.get(model)
        if guard is not None and features.keys() <= guard.values:
            return features
        return {k: v for k, v in features.items() if self._feature_label(model, k) != sc.OVERFLOW_LABEL_VALUE}

    def _issue(self, model: str, feature: str, issue: str, n: int = 1) -> None:
        m = self.model_label(model)
        f = self._feature_label(m, feature) if m != sc.OVERFLOW_LABEL_VALUE else sc.OVERFLOW_LABEL_VALUE
        self.counters.inc(self.counters.data_quality, (m, f, issue), n)

    def logs(self, request, received_at: float | None = None) -> IngestResult:
        """Clean and commit a decoded ExportLogsServiceRequest on this thread."""
        now = time.time() if received_at is None else received_at
        return self.commit(self.cleaner.message("logs", request, now), now)

    def events(self, events: Iterable[LogEvent], now: float) -> IngestResult:
        return self.commit(self.cleaner.events(events), now)

    def commit(self, batch: CleanBatch, now: float) -> IngestResult:
        """The stateful half of ingest (writer thread): count, check kinds, store, join."""
        result = IngestResult()
        inc, c = self.counters.inc, self.counters
        for (model, feature, issue), n in batch.issues.items():
            self._issue(model, feature, issue, n)
        if batch.logs:
            inc(c.received, ("", sc.SIGNAL_LOG), batch.logs)
            result.accepted += batch.logs
        if batch.points:
            inc(c.received, ("", sc.SIGNAL_METRIC), batch.points)
        if batch.spans:
            inc(c.received, ("", sc.SIGNAL_SPAN), batch.spans)
        for rec in batch.rejections:
            inc(c.received, (self.model_label(rec.model) if rec.model else "", rec.signal))
            inc(c.rejected, (rec.reason,))
            result.rejected += 1
            if not result.message:
                result.message = f"{rec.reason}: {rec.message}"
        preds = batch.predictions
        if preds:
            checked = {m for m, (names, kinds) in batch.kinds.items()
                       if self.model_label(m) != sc.OVERFLOW_LABEL_VALUE and self.kinds.accept(m, names, kinds)}
            for r in preds:
                if r.model not in checked and self.model_label(r.model) != sc.OVERFLOW_LABEL_VALUE:
                    self.kinds.check(r)
            write = self.db.insert_predictions(preds, now=now)
            per_model: dict = {}
            for r in write.inserted:
                per_model[r.model] = per_model.get(r.model, 0) + 1
            admitted = {m for m in per_model if self.models.admitted(m)}
            self.windows.add_predictions([r for r in write.inserted if r.model in admitted], self.window_features)
            for r in write.duplicates:
                per_model[r.model] = per_model.get(r.model, 0) + 1
            for model, n in per_model.items():
                inc(c.received, (self.model_label(model), sc.SIGNAL_PREDICTION), n)
            if write.duplicates:
                inc(c.rejected, (sc.REASON_DUPLICATE,), len(write.duplicates))
            result.accepted += len(write.inserted)
            result.rejected += len(write.duplicates)
            if write.duplicates and not result.message:
                result.message = f"{sc.REASON_DUPLICATE}: {len(write.duplicates)} prediction id(s) already stored"
            self.joiner.joined(write.joined, now)
        if batch.labels:
            labels = batch.labels
            write = self.db.upsert_labels(labels, now=now)
            for r in labels:
                inc(c.received, (self.model_label(r.model), sc.SIGNAL_LABEL))
            for model in write.replaced:
                inc(c.labels_replaced, (self.model_label(model),))
            result.accepted += len(labels)
            self.joiner.joined(write.joined, now)
        if batch.audits:
            self.db.insert_audit(batch.audits)
            for r in batch.audits:
                inc(c.received, (self.model_label(r.model), sc.SIGNAL_AUDIT))
            result.accepted += len(batch.audits)
        return result
