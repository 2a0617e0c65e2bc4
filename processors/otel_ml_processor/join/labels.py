"""What follows a label join: counters, the join-delay histogram, and the window's label.

The join itself is atomic with the writes (``store.database``): a label that arrives first
waits in the ``labels`` table (``joined_at`` null) and joins when its prediction is stored; a
second label replaces the first (last one wins); a label that never finds its prediction
expires after ``labels.pending_ttl`` or when more than ``labels.pending_max`` wait.

Join delay = the time the join happened minus the prediction's record time (0 when the label
was there first and the prediction's time is later).

Example::

    joiner = LabelJoiner(counters, windows, model_label=lambda m: m)
    joiner.joined(write.joined, now=time.time())
"""

from __future__ import annotations

import math
from typing import Callable

from otel_ml import semconv as sc
from otel_ml_processor.counters import Counters


def window_label(task: str, value: object) -> object:
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
    def __init__(self, counters: Counters, windows, model_label: Callable[[str], str]):
        self.counters, self.windows, self.model_label = counters, windows, model_label

    def joined(self, joins: list, now: float) -> None:
        c = self.counters
        for j in joins:
            if j.first:
                c.inc(c.labels_joined, (self.model_label(j.model),))
                c.observe_join_delay(max(0.0, now - j.prediction_time))
            self.windows.set_label(j.model, j.model_version, j.prediction_id, j.value)
