"""Cumulative ingest counters shared by the stages and read by the exporter.

A leaf like ``otel_ml.semconv``: every stage may increment, only ``export`` reads. Label
values from users are capped by :class:`CardinalityGuard` before they get here.

Example::

    counters = Counters()
    counters.inc(counters.received, ("churn", "prediction"), 512)
    counters.snapshot()["received"]
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Optional

from otel_ml import semconv as sc

#: Upper bounds (seconds) of ml_label_join_delay_seconds: labels come seconds to weeks late.
JOIN_DELAY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: dict = defaultdict(int)          # (model, signal)
        self.rejected: dict = defaultdict(int)          # (reason,)
        self.data_quality: dict = defaultdict(int)      # (model, feature, issue)
        self.cardinality_limited: dict = defaultdict(int)  # (kind,)
        self.labels_joined: dict = defaultdict(int)     # (model,)
        self.labels_replaced: dict = defaultdict(int)   # (model,)
        self.labels_expired = 0
        # ml_label_join_delay_seconds: cumulative fixed-bucket histogram (mergeable).
        self.join_delay_counts = [0] * (len(JOIN_DELAY_BUCKETS) + 1)
        self.join_delay_sum = 0.0

    def inc(self, table: dict, key: tuple, n: int = 1) -> None:
        with self._lock:
            table[key] += n

    def observe_join_delay(self, seconds: float) -> None:
        with self._lock:
            self.join_delay_counts[bisect.bisect_left(JOIN_DELAY_BUCKETS, seconds)] += 1
            self.join_delay_sum += seconds

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "received": dict(self.received), "rejected": dict(self.rejected),
                "data_quality": dict(self.data_quality), "cardinality_limited": dict(self.cardinality_limited),
                "labels_joined": dict(self.labels_joined), "labels_replaced": dict(self.labels_replaced),
                "labels_expired": self.labels_expired,
                "join_delay_counts": list(self.join_delay_counts), "join_delay_sum": self.join_delay_sum,
            }


class CardinalityGuard:
    """Admits at most ``limit`` distinct values; the rest become ``__other__`` (and are counted)."""

    def __init__(self, limit: int, kind: str, counters: Counters, initial: Optional[list] = None):
        self.limit, self.kind, self._counters = limit, kind, counters
        self._admitted: set = set()
        self._lock = threading.Lock()
        for v in initial or ():
            self.admit(v, count=False)

    @property
    def values(self) -> set:
        """The admitted values (read-only use)."""
        return self._admitted

    def admitted(self, value: str) -> bool:
        return value in self._admitted

    def admit(self, value: str, count: bool = True) -> str:
        if value in self._admitted:
            return value
        with self._lock:
            if len(self._admitted) < self.limit:
                self._admitted.add(value)
                return value
        if count:
            self._counters.inc(self._counters.cardinality_limited, (self.kind,))
        return sc.OVERFLOW_LABEL_VALUE
