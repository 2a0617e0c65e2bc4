"""What follows a label join: counters, the join-delay histogram, and labels as windows read them.

The join itself is atomic with the writes (``store.database``): a label that arrives first
waits in the ``labels`` table (``joined_at`` null) and joins when its prediction is stored; a
second label replaces the first (last one wins); a label that never finds its prediction
expires after ``labels.pending_ttl`` or when more than ``labels.pending_max`` wait.

Join delay = the time the join happened minus the prediction's record time (0 when the label
was there first and the prediction's time is later).

Example::

    joiner = LabelJoiner(counters, caps)
    joiner.joined(write.joined, now=time.time())
    window_label("classification", 1.0)      # "1"
"""

from __future__ import annotations

import math
from typing import Sequence

from otel_ml import semconv as sc
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.store.database import Join


def window_label(task: str, value: str | float) -> str | float | None:
    """A label as the window compares it: classes are strings (1.0 sent as a number is "1")."""
    if task == sc.TASK_CLASSIFICATION:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return value if math.isfinite(value) else None


class LabelJoiner:
    def __init__(self, counters: Counters, caps: Caps):
        self.counters, self.caps = counters, caps

    def joined(self, joins: Sequence[Join], now: float) -> Sequence[Join]:
        """Count first joins and their delay; returns ``joins`` for the stages after this one."""
        c = self.counters
        for j in joins:
            if j.first:
                c.inc(c.labels_joined, (self.caps.model(j.model),))
                c.observe_join_delay(max(0.0, now - j.prediction_time))
        return joins
