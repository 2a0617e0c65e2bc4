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

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from otel_ml_processor.clean.values import is_number, number_text

__all__ = [
    "WindowData", "WindowBuffer", "LabeledWindow", "rows_to_window",
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
    numeric = all(v is None or is_number(v) for v in values)
    q = np.zeros(n, dtype=np.uint8) if with_quality else None
    if numeric:
        arr = np.full(n, np.nan)
    else:
        arr = np.full(n, None, dtype=object)
    for i, v in enumerate(values):
        if v is None:
            if q is not None:
                q[i] = QUALITY_MISSING
        elif is_number(v):
            f = float(v)
            if not math.isfinite(f):
                if q is not None:
                    q[i] = QUALITY_NAN
                if numeric:
                    arr[i] = f
            else:
                arr[i] = f if numeric else number_text(f)
        else:
            arr[i] = v if isinstance(v, str) else str(v)
    return arr, q


def _to_strings(arr: np.ndarray) -> np.ndarray:
    out = np.full(arr.size, None, dtype=object)
    finite = np.isfinite(arr)
    out[finite] = [number_text(v) for v in arr[finite].tolist()]
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
        textual = self.textual        # set exactly when the column is not numeric
        if arr.dtype != object and textual is not None:
            textual[start:end] = False
            arr = _to_strings(arr)
        elif textual is not None:
            textual[start:end] = [v is not None and not is_number(v) for v in values]
        self.data[start:end] = arr
        if q is not None and self.quality is not None:   # q is made exactly when the column has quality
            self.quality[start:end] = q

    def clear(self, start: int, end: int) -> None:
        self.data[start:end] = np.nan if self.numeric else None
        if self.textual is not None:
            self.textual[start:end] = False
        if self.quality is not None:
            self.quality[start:end] = QUALITY_MISSING

    def compact(self, live: "slice | np.ndarray", capacity: int) -> None:
        """Keep the rows ``live`` (a slice or row numbers), moved to the front of ``capacity`` rows."""
        kept = self.data[live]
        fresh = np.full(capacity, np.nan) if self.numeric else np.full(capacity, None, dtype=object)
        fresh[: kept.size] = kept
        self.data = fresh
        if self.quality is not None:
            q = np.full(capacity, QUALITY_MISSING, dtype=np.uint8)
            q[: kept.size] = self.quality[live]
            self.quality = q
        if self.textual is not None:
            t = np.zeros(capacity, dtype=bool)
            t[: kept.size] = self.textual[live]
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

    Rows are ordered by record time, ties by ``seq`` (the database id: arrival order; rows
    without one get their arrival number here). With ``evict=False`` the buffer never drops
    rows by itself: its owner decides, with :meth:`remove` (:class:`LabeledWindow` does).
    """

    def __init__(self, model: str, model_version: str, task: str, size: int,
                 max_age: Optional[float] = None, evict: bool = True):
        self.model, self.model_version, self.task = model, model_version, task
        self.size, self.max_age, self.evict = max(1, int(size)), max_age, evict
        self._cap = max(16, 2 * self.size)
        self._start = 0
        self._end = 0
        self._base = 0                    # absolute row number of physical index 0
        self._index: dict[str, int] = {}  # prediction id -> absolute row number
        self._pending: deque = deque()    # rows appended since the last materialization
        self._pending_base = 0            # absolute row number of self._pending[0]
        self._pending_labels: dict[int, object] = {}
        self._pending_holes: set = set()  # absolute row numbers of queued rows removed since
        self._removed = 0                 # rows removed between start and end (holes)
        cap = self._cap
        self._ids = np.full(cap, None, dtype=object)
        self._ts = np.full(cap, np.nan)
        self._seq = np.zeros(cap, dtype=np.int64)
        self._hole = np.zeros(cap, dtype=bool)
        self._label = np.full(cap, None, dtype=object)
        self._out_label = _Column(cap, numeric=False, with_quality=False)
        self._out_value = _Column(cap, numeric=True, with_quality=False)
        self._score = _Column(cap, numeric=True, with_quality=False)
        self._features: dict[str, _Column] = {}
        self._probs: dict[str, _Column] = {}
        self._segments: dict[str, _Column] = {}

    def __len__(self) -> int:
        return self._end - self._start - self._removed + len(self._pending) - len(self._pending_holes)

    def __contains__(self, prediction_id: str) -> bool:
        return prediction_id in self._index

    @property
    def capacity(self) -> int:
        """Rows each column holds (live rows, holes and free slots): its memory, in rows."""
        return self._cap

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
        if self.evict and len(self) > self.size:
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
        for _ in range(len(self) - self.size if self.evict else 0):
            self._evict_one()

    def _skip_holes(self) -> None:
        while self._start < self._end and self._hole[self._start]:
            self._hole[self._start] = False
            self._removed -= 1
            self._start += 1

    def _evict_one(self) -> None:
        if self._removed:
            self._skip_holes()
        if self._start < self._end:
            self._index.pop(self._ids[self._start], None)
            self._start += 1
            if self._removed:
                self._skip_holes()
        else:  # everything materialized is gone: drop the oldest queued row
            while self._pending_base in self._pending_holes:
                self._pending_holes.discard(self._pending_base)
                self._pending.popleft()
                self._pending_base += 1
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

    def remove(self, prediction_id: str) -> bool:
        """Drop one row, wherever it is (its slot stays a hole until the next compaction)."""
        a = self._index.pop(prediction_id, None)
        if a is None:
            return False
        if self._pending and a >= self._pending_base:
            self._pending_holes.add(a)          # made a hole when the queue is turned into columns
            self._pending_labels.pop(a, None)
            return True
        p = a - self._base
        self._hole[p] = True
        self._label[p] = None
        self._removed += 1
        self._skip_holes()
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
        """Move the live rows to the front (dropping holes), with room for ``room`` more."""
        s, e = self._start, self._end
        keep: "slice | np.ndarray" = slice(s, e)
        if self._removed:
            keep = np.arange(s, e)[~self._hole[s:e]]
        live = e - s - self._removed
        cap = max(self._cap, 2 * self.size, live + room, 16)
        for name in ("_ids", "_label"):
            fresh = np.full(cap, None, dtype=object)
            fresh[:live] = getattr(self, name)[keep]
            setattr(self, name, fresh)
        ts = np.full(cap, np.nan)
        ts[:live] = self._ts[keep]
        self._ts = ts
        seq = np.zeros(cap, dtype=np.int64)
        seq[:live] = self._seq[keep]
        self._seq = seq
        self._hole = np.zeros(cap, dtype=bool)
        for col in self._all_columns():
            col.compact(keep, cap)
        # absolute numbers of the queued rows stay; the live rows end where the queue begins
        self._base = self._base + e - live
        if self._removed:
            base = self._base
            self._index.update((pid, base + i) for i, pid in enumerate(self._ids[:live].tolist()))
        self._start, self._end, self._cap, self._removed = 0, live, cap, 0

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
        first = self._base + s
        self._seq[s:e] = [first + i if r.get("seq") is None else r["seq"] for i, r in enumerate(rows)]
        labels = [r.get("label") for r in rows]
        for a, lab in self._pending_labels.items():
            labels[a - self._pending_base] = lab
        self._label[s:e] = np.array(labels + [None], dtype=object)[:-1]
        self._out_label.write(s, [None if r.get("output_label") is None else str(r["output_label"]) for r in rows])
        self._out_value.write(s, [v if is_number(v) else None for v in (r.get("output_value") for r in rows)])
        self._score.write(s, [v if is_number(v) else None for v in (r.get("score") for r in rows)])
        for table, key, quality, default in ((self._features, "features", True, None),
                                             (self._probs, "probabilities", False, None),
                                             (self._segments, "segments", False, None)):
            dicts = [r.get(key) or {} for r in rows]
            names = set().union(*dicts)
            # existing columns keep their order; new ones are added in sorted order
            for name in [*(k for k in table if k in names), *sorted(names.difference(table))]:
                values = [d.get(name, default) for d in dicts]
                if key == "probabilities":
                    values = [v if is_number(v) else None for v in values]
                elif key == "segments":
                    values = [v if v is None or isinstance(v, str) else
                              number_text(v) if is_number(v) else str(v) for v in values]
                col = table.get(name)
                if col is None:
                    col = table[name] = _Column(self._cap, numeric=key != "segments", with_quality=quality)
                col.write(s, values)
            for name, col in table.items():
                if name not in names:
                    col.clear(s, e)
        self._end = e
        for a in self._pending_holes:
            p = s + a - self._pending_base
            self._hole[p] = True
            self._label[p] = None
        self._removed += len(self._pending_holes)
        self._pending.clear()
        self._pending_labels.clear()
        self._pending_holes.clear()
        self._skip_holes()

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self, now: Optional[float] = None, by_time: bool = True) -> WindowData:
        """A copy of the window, oldest first (``by_time=False``: in arrival order, by ``seq``);
        rows older than ``now - max_age`` are left out."""
        self._materialize()
        if self.max_age is not None and now is not None:
            # free the slots of rows that can never be in a snapshot again
            self.evict_older_than(now - self.max_age)
        s, e = self._start, self._end
        keep = np.arange(s, e)
        if self._removed:
            keep = keep[~self._hole[s:e]]
        if self.max_age is not None and now is not None:
            keep = keep[self._ts[keep] >= now - self.max_age]
        if by_time:
            order = keep[np.lexsort((self._seq[keep], self._ts[keep]))]
        else:
            order = keep[np.argsort(self._seq[keep], kind="stable")]
        # (feature columns always have their quality)
        quality = {k: c.quality[order].copy() for k, c in self._features.items() if c.quality is not None}
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


class LabeledWindow:
    """The labeled window of one model version: its last ``size`` predictions that have a joined
    label, by record time (ties by arrival, ``seq``), none older than ``max_age`` seconds by record
    time nor stored longer ago than ``retention`` (the database no longer has those).

    Rows come in through :meth:`offer` (a row with its label and its ``seq``, ``received_at``);
    the smallest (time, seq) is evicted past ``size``. :meth:`wants` says whether a row would be
    kept, before fetching it. Every row held has a label.

    Example::

        lw = LabeledWindow("churn", "3", "classification", size=2)
        for i, t in enumerate([5.0, 1.0, 7.0]):
            lw.offer(dict(prediction_id=f"p{i}", timestamp=t, seq=i, received_at=t, label="1", features={},
                          output_label="1", output_value=None, score=None, probabilities={}, segments={}))
        lw.snapshot().prediction_ids          # array(['p0', 'p2'], dtype=object)
    """

    def __init__(self, model: str, model_version: str, task: str, size: int, max_age: Optional[float] = None,
                 retention: Optional[float] = None):
        self.size, self.max_age, self.retention = max(1, int(size)), max_age, retention
        self.buffer = WindowBuffer(model, model_version, task, self.size, evict=False)
        self._keys: dict = {}     # prediction id -> (time, seq, received_at)
        self._heap: list = []     # (time, seq, prediction id); entries of removed rows are skipped

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, prediction_id: str) -> bool:
        return prediction_id in self._keys

    def _smallest(self) -> tuple:
        heap, keys = self._heap, self._keys
        while True:
            t, q, pid = heap[0]
            k = keys.get(pid)
            if k is not None and k[0] == t and k[1] == q:
                return t, q, pid
            heapq.heappop(heap)

    def wants(self, time: float, seq: int) -> bool:
        """Would a labeled row recorded at ``time`` (arrival ``seq``) be in the window?"""
        return len(self._keys) < self.size or (time, seq) > self._smallest()[:2]

    def offer(self, row: dict) -> bool:
        """Take a labeled row (a :meth:`WindowBuffer.append` row with ``seq`` and ``received_at``):
        a row held already gets the row's label; a new one is kept if :meth:`wants` it."""
        pid = row["prediction_id"]
        if pid in self._keys:
            return self.buffer.set_label(pid, row["label"])
        t, q = float(row["timestamp"]), int(row["seq"])
        if not self.wants(t, q):
            return False
        self._keys[pid] = (t, q, row.get("received_at", math.inf))
        heapq.heappush(self._heap, (t, q, pid))
        self.buffer.append(row)
        if len(self._keys) > self.size:
            self._remove(self._smallest()[2])
        return True

    def set_label(self, prediction_id: str, label: object) -> bool:
        return prediction_id in self._keys and self.buffer.set_label(prediction_id, label)

    def _remove(self, prediction_id: str) -> None:
        del self._keys[prediction_id]
        self.buffer.remove(prediction_id)
        if len(self._heap) > 4 * self.size + 64:   # entries of removed rows: keep the heap bounded
            self._heap = [(t, q, pid) for pid, (t, q, _r) in self._keys.items()]
            heapq.heapify(self._heap)

    def count_after(self, seq: int) -> int:
        """Rows held whose prediction was stored after the one with id ``seq`` (e.g. after the
        ``first_n`` reference: what the baseline comparison may use)."""
        return sum(1 for _t, q, _r in self._keys.values() if q > seq)

    def expire(self, now: float) -> int:
        """Drop the rows past ``max_age`` (record time) or ``retention`` (storage time)."""
        min_time = now - self.max_age if self.max_age is not None else -math.inf
        min_received = now - self.retention if self.retention is not None else -math.inf
        old = [pid for pid, (t, _q, r) in self._keys.items() if t < min_time or r < min_received]
        for pid in old:
            self._remove(pid)
        return len(old)

    def snapshot(self, now: Optional[float] = None) -> WindowData:
        if now is not None:
            self.expire(now)
        return self.buffer.snapshot()


def rows_to_window(model: str, version: str, task: str, rows: list, by_time: bool = True) -> WindowData:
    """A WindowData of ``rows`` (dicts as :meth:`WindowBuffer.append` takes), sorted by time (ties
    by arrival), or in arrival order (``by_time=False``: by their ``seq``, else as given)."""
    buf = WindowBuffer(model, version, task, size=max(1, len(rows)))
    for r in rows:
        buf.append(r)
    return buf.snapshot(by_time=by_time)
