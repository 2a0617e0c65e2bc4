"""The store stage on the writer thread: write a cleaned batch, count what was stored.

Predictions, labels and audit events are written in that order, each in its own transaction
(:class:`~otel_ml_processor.store.database.Database`); each write returns what the later
stages need (the stored rows, the labels joined). A prediction id (or an audit id) already
stored is a duplicate: counted, reported in the request's result, and dropped.

Example::

    writer = StoreWriter(db, counters, caps)
    stored = writer.predictions(batch.predictions, now)
    stored.result.accepted, stored.inserted, stored.joins
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import AuditRecord, LabelRecord, PredictionRecord
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.receive.handlers import CommitResult
from otel_ml_processor.store.database import Database, Join


@dataclass
class Stored:
    """One write's outcome, handed forward: the request's counts, the new rows, the joins."""

    result: CommitResult = field(default_factory=CommitResult)
    inserted: list = field(default_factory=list)     # PredictionRecord, newly stored
    ids: list = field(default_factory=list)          # their database ids (arrival order)
    joins: list = field(default_factory=list)        # Join: labels attached to their prediction


class StoreWriter:
    def __init__(self, db: Database, counters: Counters, caps: Caps):
        self.db, self.counters, self.caps = db, counters, caps

    def predictions(self, records: Sequence[PredictionRecord], now: float) -> Stored:
        """Store new predictions and join the labels waiting for them."""
        out = Stored()
        if not records:
            return out
        c, inc, model = self.counters, self.counters.inc, self.caps.model
        write = self.db.insert_predictions(records, now=now)
        per_model: dict = {}
        for r in records:
            per_model[r.model] = per_model.get(r.model, 0) + 1
        for name, n in per_model.items():
            inc(c.received, (model(name), sc.SIGNAL_PREDICTION), n)
        if write.duplicates:
            inc(c.rejected, (sc.REASON_DUPLICATE,), len(write.duplicates))
            out.result.reject(len(write.duplicates),
                              f"{sc.REASON_DUPLICATE}: {len(write.duplicates)} prediction id(s) already stored")
        out.result.accepted = len(write.inserted)
        out.inserted, out.ids, out.joins = write.inserted, write.ids, write.joined
        return out

    def labels(self, records: Sequence[LabelRecord], now: float) -> Stored:
        """Store labels (last one wins) and join those whose prediction is stored."""
        out = Stored()
        if not records:
            return out
        c, inc, model = self.counters, self.counters.inc, self.caps.model
        write = self.db.upsert_labels(records, now=now)
        for r in records:
            inc(c.received, (model(r.model), sc.SIGNAL_LABEL))
        for name in write.replaced:
            inc(c.labels_replaced, (model(name),))
        out.result.accepted = len(records)
        out.joins = write.joined
        return out

    def audits(self, records: Sequence[AuditRecord]) -> CommitResult:
        if not records:
            return CommitResult()
        duplicates = self.db.insert_audit(records)
        for r in records:
            self.counters.inc(self.counters.received, (self.caps.model(r.model), sc.SIGNAL_AUDIT))
        result = CommitResult(accepted=len(records) - duplicates)
        if duplicates:
            self.counters.inc(self.counters.rejected, (sc.REASON_DUPLICATE,), duplicates)
            result.reject(duplicates, f"{sc.REASON_DUPLICATE}: {duplicates} audit id(s) already stored")
        return result


__all__ = ["StoreWriter", "Stored", "Join"]
