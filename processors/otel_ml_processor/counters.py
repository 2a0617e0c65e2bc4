"""Cumulative ingest counters and the caps on user-supplied label values, shared by the stages.

A leaf like ``otel_ml.semconv``: every stage may increment, only ``export`` reads. Label
values from users (model and feature names) are capped by :class:`Caps` before they get here,
and the same :class:`Caps` decides which models get a window: every stage that names a model
in a series asks it, so they all fold the same names into ``__other__``.

Example::

    counters = Counters()
    caps = Caps(max_models=100, max_features_per_model=500, counters=counters)
    counters.inc(counters.received, (caps.model("churn"), "prediction"), 512)
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

    def expired(self, n: int) -> None:
        """``n`` more waiting labels dropped (``ml_labels_expired_total``)."""
        with self._lock:
            self.labels_expired += n

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


class Caps:
    """``limits.max_models`` and ``limits.max_features_per_model``, applied to label values.

    Models are admitted in the order they are first seen (configured ones first, then stored
    ones at start, then arrivals); a model past the limit is ``__other__`` in every series and
    gets no window. Each admitted model admits its first ``max_features_per_model`` feature names.
    Every fold is counted in ``ml_cardinality_limited_total{kind}``.
    """

    def __init__(self, max_models: int, max_features_per_model: int, counters: Counters,
                 initial_models: Optional[list] = None):
        self._counters = counters
        self._max_features = max_features_per_model
        self._models = CardinalityGuard(max_models, sc.KIND_MODEL, counters, initial=initial_models)
        self._features: dict = {}   # model -> CardinalityGuard of its features

    def model(self, name: str, count: bool = True) -> str:
        """``name`` if admitted under ``limits.max_models``, else ``__other__`` (counted)."""
        return self._models.admit(name, count)

    def admitted(self, name: str) -> bool:
        """Whether ``name`` was admitted already (admits nothing)."""
        return self._models.admitted(name)

    def feature(self, model: str, feature: str, count: bool = True) -> str:
        """``feature`` if admitted for ``model``, else ``__other__`` (counted unless ``count`` is False)."""
        guard = self._features.get(model)
        if guard is None:
            guard = self._features[model] = CardinalityGuard(self._max_features, sc.KIND_FEATURE, self._counters)
        return guard.admit(feature, count)

    def features(self, model: str, features: dict, count: bool = True) -> dict:
        """``features`` without those beyond ``limits.max_features_per_model`` (each fold counted,
        unless ``count`` is False: rows read again from the database were counted when they came)."""
        guard = self._features.get(model)
        if guard is not None and features.keys() <= guard.values:
            return features
        return {k: v for k, v in features.items() if self.feature(model, k, count) != sc.OVERFLOW_LABEL_VALUE}
