"""The writer-thread half of cleaning: count what cleaning found, and check feature kinds.

:class:`~otel_ml_processor.clean.batch.Cleaner` runs anywhere (often in a worker process) and
only reports; this runs on the one writer thread, in request order, where the counters and
the per-model memory live. It counts the records that reached validation but are not stored
(plain logs, metric points, spans, rejections), the data-quality issues (under the cardinality
caps), and repairs feature kinds against what each admitted model sent before
(:mod:`.kinds`). The batch then goes on to the store unchanged but for those repairs.

Example::

    admission = Admission(counters, caps)
    result = admission.check(batch)      # CommitResult: plain logs accepted, rejections
"""

from __future__ import annotations

from otel_ml import semconv as sc
from otel_ml_processor.clean.batch import CleanBatch
from otel_ml_processor.clean.kinds import FeatureKinds
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.receive.handlers import CommitResult


class Admission:
    def __init__(self, counters: Counters, caps: Caps):
        self.counters, self.caps = counters, caps
        self.kinds = FeatureKinds(self._issue)

    def _issue(self, model: str, feature: str, issue: str, n: int = 1) -> None:
        m = self.caps.model(model)
        f = self.caps.feature(m, feature) if m != sc.OVERFLOW_LABEL_VALUE else sc.OVERFLOW_LABEL_VALUE
        self.counters.inc(self.counters.data_quality, (m, f, issue), n)

    def check(self, batch: CleanBatch) -> CommitResult:
        """Count the batch's issues, rejections and non-ML records; repair feature kinds in place."""
        result = CommitResult()
        inc, c, caps = self.counters.inc, self.counters, self.caps
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
            inc(c.received, (caps.model(rec.model) if rec.model else "", rec.signal))
            inc(c.rejected, (rec.reason,))
            result.reject(1, f"{rec.reason}: {rec.message}")
        if batch.predictions:
            # Feature kinds of admitted models only: a model past limits.max_models gets no window.
            checked = {m for m, (names, kinds) in batch.kinds.items()
                       if caps.model(m) != sc.OVERFLOW_LABEL_VALUE and self.kinds.accept(m, names, kinds)}
            for r in batch.predictions:
                if r.model not in checked and caps.model(r.model) != sc.OVERFLOW_LABEL_VALUE:
                    self.kinds.check(r)
        return result
