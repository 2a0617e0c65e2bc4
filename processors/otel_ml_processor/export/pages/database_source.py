"""The pages' source when replicas share a database: any replica serves any model's page.

Each owner keeps its versions' last computed metrics in ``model_snapshots`` every compute cycle
(``compute.manager.Computer``); :class:`DatabaseSource` lists every version stored there, and
serves each from:

- this replica's own compute snapshot for the versions it computes (the freshest figures; no
  snapshot is read from the database for them);
- the database for the others: their owner's last snapshot, decoded once per (model, version,
  ``computed_at``) and kept until the owner stores a newer one, so repeated page loads within a
  compute interval cost one small query (:meth:`Database.snapshot_stamps`) and no decoding.

A 100-feature snapshot is ~110 KiB of JSON, ~10 ms to decode and ~0.3 MiB once decoded. ``/``
needs only a few of its fields (:data:`INDEX_FIELDS`): for it, a version not decoded whole yet is
decoded in part (a fifth of the time; see ``BENCHMARKS.md``, "Model pages").

Every call reads the database: call it off the event loop (``export/http.py`` renders the pages
on a worker thread). A snapshot's age is the reader's clock minus the owner's ``computed_at``:
the pages mark it stale past a few compute intervals (the owner may be down), which assumes the
replicas' clocks agree (NTP).

Example::

    local = ComputerSource(lambda: computer.snapshot, owner=db.replica)
    source = DatabaseSource(db, local)
    [(s.model, s.version, s.owner) for s in source.models()]   # every replica's versions
    source.latest("churn")          # from the local snapshot, or the owner's in the database
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

import orjson

from otel_ml_processor.compute import persist
from otel_ml_processor.compute.engine import ModelMetrics
from otel_ml_processor.export.pages.source import ComputerSource, ModelSnapshot, latest_version, sorted_keys
from otel_ml_processor.store.database import Database

__all__ = ["DatabaseSource", "INDEX_FIELDS", "load_index_fields"]

log = logging.getLogger(__name__)

#: The fields of ``ModelMetrics`` that ``/`` shows (render_index): window counts, OOD, what is flagged.
INDEX_FIELDS = frozenset({"window_predictions", "window_labeled", "ood_ratio", "drift"})


def load_index_fields(text: str) -> ModelMetrics:
    """A snapshot (``persist.dump`` of a ``ModelMetrics``) with only :data:`INDEX_FIELDS` decoded,
    the others at their defaults; the whole snapshot when it is not shaped as expected."""
    data = orjson.loads(text)
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, dict) or value.get("$dataclass") != ModelMetrics.__name__:
        return persist.load(text)
    fields = value.get("fields")
    if not isinstance(fields, dict):
        return persist.load(text)
    value["fields"] = {k: v for k, v in fields.items() if k in INDEX_FIELDS}
    return persist.load(orjson.dumps(data).decode())


class DatabaseSource:
    """A :class:`~.source.SnapshotSource` over the shared database and this replica's
    :class:`~.source.ComputerSource` (thread-safe: pages render on several worker threads).

    :meth:`models` (for ``/``) may hold only :data:`INDEX_FIELDS` of another replica's version
    (whole when it was decoded whole already); :meth:`latest` is always whole."""

    def __init__(self, db: Database, local: ComputerSource):
        self._db, self._local = db, local
        self._whole: dict = {}       # (model, version) -> ModelSnapshot decoded from the database
        self._index: dict = {}       # (model, version) -> ModelSnapshot of its INDEX_FIELDS only
        self._loading: dict = {}     # (model, version) -> Lock: one decode per snapshot at a time
        self._lock = threading.Lock()
        #: snapshots decoded from the database so far, whole or for the index (once per computed_at)
        self.decoded = 0

    def keys(self) -> list:
        return sorted_keys(set(self._db.snapshot_stamps()) | set(self._local.keys()))

    def models(self) -> list:
        stamps = self._db.snapshot_stamps()
        local = {(s.model, s.version): s for s in self._local.models()}
        out = []
        for key in sorted_keys(set(stamps) | set(local)):
            snap = local.get(key) or self._stored(key, stamps.get(key), whole=False)
            if snap is not None:
                out.append(snap)
        with self._lock:   # forget the versions whose snapshot went (retention)
            for cache in (self._whole, self._index, self._loading):
                for key in [k for k in cache if k not in stamps]:
                    del cache[key]
        return out

    def latest(self, model: str, version: Optional[str] = None) -> Optional[ModelSnapshot]:
        if version is not None:
            mine = self._local.latest(model, version)
            if mine is not None:
                return mine
            stamps = self._db.snapshot_stamps()
        else:   # the latest version may be another replica's (a newer version routed there)
            stamps = self._db.snapshot_stamps()
            version = latest_version({v for m, v in stamps if m == model}
                                     | {v for m, v in self._local.keys() if m == model})
            if version is None:
                return None
        return self._local.latest(model, version) or self._stored((model, version), stamps.get((model, version)))

    def _cached(self, key: tuple, computed_at: float, whole: bool) -> Optional[ModelSnapshot]:
        for cache in (self._whole,) if whole else (self._whole, self._index):
            snap = cache.get(key)
            if snap is not None and snap.computed_at >= computed_at:
                return snap
        return None

    def _stored(self, key: tuple, stamp: Optional[tuple], whole: bool = True) -> Optional[ModelSnapshot]:
        """The owner's last snapshot of ``key`` (``stamp``: its (owner, computed_at, duration)),
        from the cache when it is the one the database holds."""
        if stamp is None:
            return None
        computed_at = stamp[1]
        with self._lock:
            snap = self._cached(key, computed_at, whole)
            if snap is not None:
                return snap
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:   # concurrent requests for the same snapshot wait for one decode
            with self._lock:
                snap = self._cached(key, computed_at, whole)
            if snap is not None:
                return snap
            row = self._db.latest_snapshot(*key)
            if row is None:   # gone since the stamps were read
                return None
            try:
                metrics = persist.load(row.metrics) if whole else load_index_fields(row.metrics)
            except (ValueError, TypeError, KeyError, AttributeError):   # e.g. written by a newer codec
                log.warning("cannot read the snapshot of model %s version %s stored by %s", key[0], key[1],
                            row.owner, exc_info=True)
                return None
            snap = ModelSnapshot(row.model, row.model_version, metrics, row.computed_at, row.duration, row.owner)
            with self._lock:
                (self._whole if whole else self._index)[key] = snap
                if whole:
                    self._index.pop(key, None)
                self.decoded += 1
            return snap
