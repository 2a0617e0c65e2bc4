"""Windows of predictions: :class:`WindowData` (one immutable snapshot, numpy columns) and
:class:`WindowBuffer` (the incremental, size- and age-bounded buffer kept by the service).

Column typing (the engine relies on it): a feature column is float64 (NaN = missing) while every
present value is a number (int or float; bool counts as categorical); as soon as one value is
not, the whole column becomes an object array of str (None = missing), numbers written as
``str(int(v))`` when integral else ``repr(float(v))``. ``feature_quality`` keeps, per feature
and row, 0 = present, 1 = missing (absent or None), 2 = NaN / infinite number.

Example::

    from otel_ml_processor.compute.window import WindowBuffer

    buf = WindowBuffer("churn", "3", "classification", size=3)
    buf.append(dict(prediction_id="a", timestamp=1.0, features={"age": 40}, output_label="1",
                    output_value=None, score=0.8, probabilities={}, segments={}, label=None))
    buf.set_label("a", "0")
    w = buf.snapshot()
    w.features["age"], w.label          # array([40.]), array(['0'], dtype=object)
"""

from __future__ import annotations

import math
from collections import deque
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


_FAST_TYPES = frozenset({float, int, type(None)})


def _block(values: list, with_quality: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """One column's new cells as (float64 or object str array, quality codes)."""
    n = len(values)
    if set(map(type, values)) <= _FAST_TYPES:
        # plain Python numbers and None: numpy turns None into NaN
        arr = np.array(values, dtype=float)
        q = None
        if with_quality:
            q = np.zeros(n, dtype=np.uint8)
            q[~np.isfinite(arr)] = QUALITY_NAN
            if None in values:
                q[np.fromiter((v is None for v in values), dtype=bool, count=n)] = QUALITY_MISSING
        return arr, q
    numeric = all(v is None or _is_number(v) for v in values)
    q = np.zeros(n, dtype=np.uint8) if with_quality else None
    if numeric:
        arr = np.full(n, np.nan)
    else:
        arr = np.full(n, None, dtype=object)
    for i, v in enumerate(values):
        if v is None:
            if q is not None:
                q[i] = QUALITY_MISSING
        elif _is_number(v):
            f = float(v)
            if not math.isfinite(f):
                if q is not None:
                    q[i] = QUALITY_NAN
                if numeric:
                    arr[i] = f
            else:
                arr[i] = f if numeric else number_str(f)
        else:
            arr[i] = v if isinstance(v, str) else str(v)
    return arr, q


def _to_strings(arr: np.ndarray) -> np.ndarray:
    out = np.full(arr.size, None, dtype=object)
    finite = np.isfinite(arr)
    out[finite] = [number_str(v) for v in arr[finite].tolist()]
    return out


class _Column:
    """A growable column: float64 (NaN missing) or object; becomes object on a non-number."""

    __slots__ = ("data", "numeric", "quality", "textual")

    def __init__(self, capacity: int, numeric: bool, with_quality: bool):
        self.numeric = numeric
        self.data = np.full(capacity, np.nan) if numeric else np.full(capacity, None, dtype=object)
        self.quality = np.full(capacity, QUALITY_MISSING, dtype=np.uint8) if with_quality else None
        # object columns: True where the value was sent as a non-number (a number written as
        # text is False), so a snapshot can return floats again once the text has left the window
        self.textual = None if numeric else np.zeros(capacity, dtype=bool)

    def write(self, start: int, values: Optional[list]) -> None:
        """Write the cells of rows [start, start + len(values)); None = the column is absent."""
        if values is None:
            return
        arr, q = _block(values, self.quality is not None)
        end = start + len(values)
        if arr.dtype == object and self.numeric:
            self.data, self.numeric = _to_strings(self.data), False
            self.textual = np.zeros(self.data.size, dtype=bool)
        if arr.dtype != object and not self.numeric:
            self.textual[start:end] = False
            arr = _to_strings(arr)
        elif not self.numeric:
            self.textual[start:end] = [v is not None and not _is_number(v) for v in values]
        self.data[start:end] = arr
        if q is not None:
            self.quality[start:end] = q

    def clear(self, start: int, end: int) -> None:
        self.data[start:end] = np.nan if self.numeric else None
        if self.textual is not None:
            self.textual[start:end] = False
        if self.quality is not None:
            self.quality[start:end] = QUALITY_MISSING

    def compact(self, start: int, end: int, capacity: int) -> None:
        live = self.data[start:end]
        fresh = np.full(capacity, np.nan) if self.numeric else np.full(capacity, None, dtype=object)
        fresh[: live.size] = live
        self.data = fresh
        if self.quality is not None:
            q = np.full(capacity, QUALITY_MISSING, dtype=np.uint8)
            q[: live.size] = self.quality[start:end]
            self.quality = q
        if self.textual is not None:
            t = np.zeros(capacity, dtype=bool)
            t[: live.size] = self.textual[start:end]
            self.textual = t

    def take(self, order: np.ndarray) -> np.ndarray:
        """The cells of rows ``order``: floats again when no text is left among them."""
        out = self.data[order]
        if self.numeric:
            return out
        if self.textual is not None and not self.textual[order].any():
            return np.array([np.nan if v is None else float(v) for v in out.tolist()], dtype=float)
        return out


class WindowBuffer:
    """The latest ``size`` predictions (none older than ``max_age`` seconds) of one model version.

    ``append`` is cheap (it runs on the ingest path): the row is queued as it is. The queue is
    turned into columns in one vectorized step per column at the next :meth:`snapshot` (on the
    compute path). Columns have capacity 2 x size; evicting moves a start index, and the live
    rows are moved to the front when the end reaches the capacity. A prediction id already in
    the window is ignored (the store keeps the first one); ``set_label`` is O(1) by id.
    """

    def __init__(self, model: str, model_version: str, task: str, size: int,
                 max_age: Optional[float] = None):
        self.model, self.model_version, self.task = model, model_version, task
        self.size, self.max_age = max(1, int(size)), max_age
        self._cap = max(16, 2 * self.size)
        self._start = 0
        self._end = 0
        self._base = 0                    # absolute row number of physical index 0
        self._index: dict[str, int] = {}  # prediction id -> absolute row number
        self._pending: deque = deque()    # rows appended since the last materialization
        self._pending_base = 0            # absolute row number of self._pending[0]
        self._pending_labels: dict[int, object] = {}
        cap = self._cap
        self._ids = np.full(cap, None, dtype=object)
        self._ts = np.full(cap, np.nan)
        self._label = np.full(cap, None, dtype=object)
        self._out_label = _Column(cap, numeric=False, with_quality=False)
        self._out_value = _Column(cap, numeric=True, with_quality=False)
        self._score = _Column(cap, numeric=True, with_quality=False)
        self._features: dict[str, _Column] = {}
        self._probs: dict[str, _Column] = {}
        self._segments: dict[str, _Column] = {}

    def __len__(self) -> int:
        return self._end - self._start + len(self._pending)

    def __contains__(self, prediction_id: str) -> bool:
        return prediction_id in self._index

    # -- writing ---------------------------------------------------------------------------
    def append(self, row: dict) -> None:
        """Queue one prediction: dict(prediction_id, timestamp, features, output_label,
        output_value, score, probabilities, segments, label)."""
        pid = row["prediction_id"]
        if pid in self._index:
            return
        self._index[pid] = self._pending_base + len(self._pending) if self._pending else self._base + self._end
        if not self._pending:
            self._pending_base = self._base + self._end
        self._pending.append(row)
        if len(self) > self.size:
            self._evict_one()

    def extend(self, rows: list) -> None:
        """:meth:`append` each of ``rows``, with the bookkeeping done once (the ingest path)."""
        index = self._index
        ids = [r["prediction_id"] for r in rows]
        if not rows or len(set(ids)) != len(ids) or not index.keys().isdisjoint(ids):
            # an id seen before (the store makes this rare): evictions decide, row by row
            for r in rows:
                self.append(r)
            return
        if not self._pending:
            self._pending_base = self._base + self._end
        first = self._pending_base + len(self._pending)
        index.update(zip(ids, range(first, first + len(rows))))
        self._pending.extend(rows)
        for _ in range(len(self) - self.size):
            self._evict_one()

    def _evict_one(self) -> None:
        if self._start < self._end:
            self._index.pop(self._ids[self._start], None)
            self._start += 1
        else:  # everything materialized is gone: drop the oldest queued row
            row = self._pending.popleft()
            self._index.pop(row["prediction_id"], None)
            self._pending_labels.pop(self._pending_base, None)
            self._pending_base += 1

    def set_label(self, prediction_id: str, label: object) -> bool:
        """Attach (or replace) the joined label of a prediction in the window."""
        a = self._index.get(prediction_id)
        if a is None:
            return False
        if self._pending and a >= self._pending_base:
            self._pending_labels[a] = label
        else:
            self._label[a - self._base] = label
        return True

    def evict_older_than(self, min_time: float) -> int:
        """Drop rows (oldest arrivals first) whose record time is before ``min_time``."""
        self._materialize()
        n = 0
        while self._start < self._end and self._ts[self._start] < min_time:
            self._evict_one()
            n += 1
        return n

    def _all_columns(self):
        yield self._out_label
        yield self._out_value
        yield self._score
        yield from self._features.values()
        yield from self._probs.values()
        yield from self._segments.values()

    def _compact(self, room: int) -> None:
        live = self._end - self._start
        cap = max(self._cap, 2 * self.size, live + room, 16)
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

    def _materialize(self) -> None:
        if not self._pending:
            return
        rows = list(self._pending)
        m = len(rows)
        if self._base + self._end != self._pending_base:
            # the materialized part was emptied by evictions: restart it at the queue's position
            self._base = self._pending_base - self._end
        if self._end + m > self._cap:
            self._compact(m)
        s, e = self._end, self._end + m
        self._ids[s:e] = [r["prediction_id"] for r in rows]
        self._ts[s:e] = [float(r["timestamp"]) for r in rows]
        labels = [r.get("label") for r in rows]
        for a, lab in self._pending_labels.items():
            labels[a - self._pending_base] = lab
        self._label[s:e] = np.array(labels + [None], dtype=object)[:-1]
        self._out_label.write(s, [None if r.get("output_label") is None else str(r["output_label"]) for r in rows])
        self._out_value.write(s, [v if _is_number(v) else None for v in (r.get("output_value") for r in rows)])
        self._score.write(s, [v if _is_number(v) else None for v in (r.get("score") for r in rows)])
        for table, key, quality, default in ((self._features, "features", True, None),
                                             (self._probs, "probabilities", False, None),
                                             (self._segments, "segments", False, None)):
            dicts = [r.get(key) or {} for r in rows]
            names = set().union(*dicts)
            # existing columns keep their order; new ones are added in sorted order
            for name in [*(k for k in table if k in names), *sorted(names.difference(table))]:
                values = [d.get(name, default) for d in dicts]
                if key == "probabilities":
                    values = [v if _is_number(v) else None for v in values]
                elif key == "segments":
                    values = [v if v is None or isinstance(v, str) else
                              number_str(v) if _is_number(v) else str(v) for v in values]
                col = table.get(name)
                if col is None:
                    col = table[name] = _Column(self._cap, numeric=key != "segments", with_quality=quality)
                col.write(s, values)
            for name, col in table.items():
                if name not in names:
                    col.clear(s, e)
        self._end = e
        self._pending.clear()
        self._pending_labels.clear()

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self, now: Optional[float] = None) -> WindowData:
        """A copy of the window, oldest first; rows older than ``now - max_age`` are left out."""
        self._materialize()
        if self.max_age is not None and now is not None:
            # free the slots of rows that can never be in a snapshot again
            self.evict_older_than(now - self.max_age)
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
            features={k: c.take(order) for k, c in self._features.items()},
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
