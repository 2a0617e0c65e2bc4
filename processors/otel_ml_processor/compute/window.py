"""Windows of predictions: :class:`WindowData` (one immutable snapshot, numpy columns) and
:class:`WindowBuffer` (the incremental, size- and age-bounded buffer kept by the service).

Column typing (the engine relies on it): a feature column is float64 (NaN = missing) while every
present value is a number (int or float; bool counts as categorical); as soon as one value is
not, the whole column becomes an object array of str (None = missing), numbers written as
``str(int(v))`` when integral else ``repr(float(v))``. ``feature_quality`` keeps, per feature
and row, 0 = present, 1 = missing (absent or None), 2 = NaN / infinite number.

Example::

    buf = WindowBuffer("churn", "3", "classification", size=3)
    buf.append(dict(prediction_id="a", timestamp=1.0, features={"age": 40}, output_label="1",
                    output_value=None, score=0.8, probabilities={}, segments={}, label=None))
    buf.set_label("a", "0")
    w = buf.snapshot()
    w.features["age"], w.label          # array([40.]), array(['0'], dtype=object)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = [
    "WindowData", "WindowBuffer", "rows_to_window", "number_str",
    "QUALITY_OK", "QUALITY_MISSING", "QUALITY_NAN"]

QUALITY_OK = 0
QUALITY_MISSING = 1
QUALITY_NAN = 2


@dataclass
class WindowData:
    """The window of ONE (model, model_version), oldest first (by record time)."""

    model: str
    model_version: str
    task: str                       # "classification" | "regression"
    prediction_ids: np.ndarray      # object (str)
    timestamps: np.ndarray          # float64 seconds (record time)
    features: dict                  # name -> float64 (NaN missing) or object str (None missing)
    output_label: np.ndarray        # object: predicted class str, or None
    output_value: np.ndarray        # float64, NaN when absent
    score: np.ndarray               # float64, NaN when absent
    probabilities: dict             # class -> float64 (NaN when absent)
    segments: dict                  # attribute -> object str (None = missing)
    label: np.ndarray               # object: joined label (str / float) or None
    #: name -> uint8 per row: 0 present, 1 missing, 2 NaN/inf (absent key: derived from the values)
    feature_quality: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.prediction_ids.size)


def number_str(v: float) -> str:
    """How a number is written once its column holds strings."""
    f = float(v)
    if math.isfinite(f) and f.is_integer():
        return str(int(f))
    return repr(f)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


class _Column:
    """A growable column: float64 (NaN missing) or object; converts to object on a non-number."""

    __slots__ = ("data", "numeric", "quality")

    def __init__(self, capacity: int, numeric: bool, with_quality: bool):
        self.numeric = numeric
        self.data = np.full(capacity, np.nan) if numeric else np.full(capacity, None, dtype=object)
        self.quality = np.full(capacity, QUALITY_MISSING, dtype=np.uint8) if with_quality else None

    def to_object(self) -> None:
        obj = np.full(self.data.size, None, dtype=object)
        finite = np.isfinite(self.data)
        obj[finite] = [number_str(v) for v in self.data[finite].tolist()]
        self.data, self.numeric = obj, False

    def set(self, i: int, v: object) -> None:
        if v is None:
            if self.quality is not None:
                self.quality[i] = QUALITY_MISSING
            return  # already NaN / None (fresh slots are)
        if _is_number(v):
            f = float(v)
            bad = not math.isfinite(f)
            if self.quality is not None:
                self.quality[i] = QUALITY_NAN if bad else QUALITY_OK
            if self.numeric:
                self.data[i] = f
            elif not bad:
                self.data[i] = number_str(f)
            return
        if self.numeric:
            self.to_object()
        if self.quality is not None:
            self.quality[i] = QUALITY_OK
        self.data[i] = v if isinstance(v, str) else str(v)

    def compact(self, start: int, end: int, capacity: int) -> None:
        live = self.data[start:end]
        fresh = np.full(capacity, np.nan) if self.numeric else np.full(capacity, None, dtype=object)
        fresh[: live.size] = live
        self.data = fresh
        if self.quality is not None:
            q = np.full(capacity, QUALITY_MISSING, dtype=np.uint8)
            q[: live.size] = self.quality[start:end]
            self.quality = q


class WindowBuffer:
    """The latest ``size`` predictions (none older than ``max_age`` seconds) of one model version.

    Rows live in column arrays of capacity 2 x size (plus growth when more arrive between two
    compactions); evicting is moving a start index, and the live rows are moved to the front
    when the end reaches the capacity, so appends are amortized O(columns). A prediction id
    already in the window is ignored (the store keeps the first one). ``set_label`` finds a row
    by prediction id in O(1).
    """

    def __init__(self, model: str, model_version: str, task: str, size: int,
                 max_age: Optional[float] = None):
        self.model, self.model_version, self.task = model, model_version, task
        self.size, self.max_age = int(size), max_age
        self._cap = max(16, 2 * self.size)
        self._start = 0
        self._end = 0
        self._base = 0                    # absolute row number of physical index 0
        self._index: dict[str, int] = {}  # prediction id -> absolute row number
        cap = self._cap
        self._ids = np.full(cap, None, dtype=object)
        self._ts = np.full(cap, np.nan)
        self._out_label = _Column(cap, numeric=False, with_quality=False)
        self._out_value = _Column(cap, numeric=True, with_quality=False)
        self._score = _Column(cap, numeric=True, with_quality=False)
        self._label = np.full(cap, None, dtype=object)
        self._features: dict[str, _Column] = {}
        self._probs: dict[str, _Column] = {}
        self._segments: dict[str, _Column] = {}

    def __len__(self) -> int:
        return self._end - self._start

    def __contains__(self, prediction_id: str) -> bool:
        return prediction_id in self._index

    # -- writing ---------------------------------------------------------------------------
    def _all_columns(self):
        yield self._out_label
        yield self._out_value
        yield self._score
        yield from self._features.values()
        yield from self._probs.values()
        yield from self._segments.values()

    def _compact(self) -> None:
        live = self._end - self._start
        cap = max(self._cap, 2 * max(live, self.size), 16)
        for name in ("_ids", "_label"):
            fresh = np.full(cap, None, dtype=object)
            fresh[:live] = getattr(self, name)[self._start:self._end]
            setattr(self, name, fresh)
        ts = np.full(cap, np.nan)
        ts[:live] = self._ts[self._start:self._end]
        self._ts = ts
        for col in self._all_columns():
            col.compact(self._start, self._end, cap)
        self._base += self._start
        self._start, self._end, self._cap = 0, live, cap

    def _col(self, table: dict, key: str, value: object, with_quality: bool) -> _Column:
        col = table.get(key)
        if col is None:
            col = table[key] = _Column(self._cap, numeric=_is_number(value) or value is None,
                                       with_quality=with_quality)
        return col

    def append(self, row: dict) -> None:
        """Append one prediction: dict(prediction_id, timestamp, features, output_label,
        output_value, score, probabilities, segments, label)."""
        pid = row["prediction_id"]
        if pid in self._index:
            return
        if self._end == self._cap:
            self._compact()
        i = self._end
        self._ids[i] = pid
        self._ts[i] = float(row["timestamp"])
        self._out_label.set(i, None if row.get("output_label") is None else str(row["output_label"]))
        v, sc_ = row.get("output_value"), row.get("score")
        self._out_value.set(i, v if _is_number(v) else None)
        self._score.set(i, sc_ if _is_number(sc_) else None)
        self._label[i] = row.get("label")
        for k, v in (row.get("features") or {}).items():
            self._col(self._features, k, v, True).set(i, v)
        for k, v in (row.get("probabilities") or {}).items():
            self._col(self._probs, k, 0.0, False).set(i, v if _is_number(v) else None)
        for k, v in (row.get("segments") or {}).items():
            col = self._col(self._segments, k, "", False)
            col.set(i, None if v is None else (v if isinstance(v, str) else
                                               number_str(v) if _is_number(v) else str(v)))
        self._index[pid] = self._base + i
        self._end += 1
        while len(self) > self.size:
            self._evict_one()

    def _evict_one(self) -> None:
        i = self._start
        self._index.pop(self._ids[i], None)
        # clear the slot so a later compaction never copies stale values
        self._ids[i] = None
        self._label[i] = None
        for col in self._all_columns():
            col.data[i] = np.nan if col.numeric else None
            if col.quality is not None:
                col.quality[i] = QUALITY_MISSING
        self._start += 1

    def evict_older_than(self, min_time: float) -> int:
        """Drop rows (oldest arrivals first) whose record time is before ``min_time``."""
        n = 0
        while self._start < self._end and self._ts[self._start] < min_time:
            self._evict_one()
            n += 1
        return n

    def set_label(self, prediction_id: str, label: object) -> bool:
        """Attach (or replace) the joined label of a prediction in the window."""
        a = self._index.get(prediction_id)
        if a is None:
            return False
        self._label[a - self._base] = label
        return True

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self, now: Optional[float] = None) -> WindowData:
        """A copy of the window, oldest first; rows older than ``now - max_age`` are left out."""
        s, e = self._start, self._end
        ts = self._ts[s:e]
        keep = np.arange(s, e)
        if self.max_age is not None and now is not None:
            keep = keep[ts >= now - self.max_age]
            ts = self._ts[keep]
        order = keep[np.argsort(ts, kind="stable")]
        quality = {k: c.quality[order].copy() for k, c in self._features.items()}
        return WindowData(
            model=self.model, model_version=self.model_version, task=self.task,
            prediction_ids=self._ids[order].copy(), timestamps=self._ts[order].copy(),
            features={k: c.data[order].copy() for k, c in self._features.items()},
            output_label=self._out_label.data[order].copy(),
            output_value=self._out_value.data[order].astype(float),
            score=self._score.data[order].astype(float),
            probabilities={k: c.data[order].astype(float) for k, c in self._probs.items()},
            segments={k: c.data[order].copy() for k, c in self._segments.items()},
            label=self._label[order].copy(),
            feature_quality=quality,
        )


def rows_to_window(model: str, version: str, task: str, rows: list) -> WindowData:
    """A WindowData of ``rows`` (dicts as :meth:`WindowBuffer.append` takes), sorted by time."""
    buf = WindowBuffer(model, version, task, size=max(1, len(rows)))
    for r in rows:
        buf.append(r)
    return buf.snapshot()
