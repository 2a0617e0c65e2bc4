"""The pages' source when replicas share a database: any replica serves any model's page.

Each owner keeps its versions' last computed metrics in ``model_snapshots`` every compute cycle
(``compute.manager.Computer``); :class:`DatabaseSource` lists every version stored there, and
serves each from:

- this replica's own compute snapshot for the versions it computes (the freshest figures; no
  snapshot is read from the database for them);
- the database for the others: their owner's last snapshot, decoded once per (model, version,
  ``computed_at``) and kept until the owner stores a newer one (a 100-feature snapshot is
  ~110 KiB of JSON, ~10 ms to decode, ~0.3 MiB once decoded), so repeated page loads within a
  compute interval cost one small query (:meth:`Database.snapshot_stamps`) and no decoding.

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

from otel_ml_processor.compute import persist
from otel_ml_processor.export.pages.source import ComputerSource, ModelSnapshot, latest_version, sorted_keys
from otel_ml_processor.store.database import Database

__all__ = ["DatabaseSource"]

log = logging.getLogger(__name__)


class DatabaseSource:
    """A :class:`~.source.SnapshotSource` over the shared database and this replica's
    :class:`~.source.ComputerSource` (thread-safe: pages render on several worker threads)."""

    def __init__(self, db: Database, local: ComputerSource):
        self._db, self._local = db, local
        self._cache: dict = {}       # (model, version) -> ModelSnapshot decoded from the database
        self._loading: dict = {}     # (model, version) -> Lock: one decode per snapshot at a time
        self._lock = threading.Lock()
        #: snapshots decoded from the database so far (each one once per computed_at)
        self.decoded = 0

    def keys(self) -> list:
        return sorted_keys(set(self._db.snapshot_stamps()) | set(self._local.keys()))

    def models(self) -> list:
        stamps = self._db.snapshot_stamps()
        local = {(s.model, s.version): s for s in self._local.models()}
        out = []
        for key in sorted_keys(set(stamps) | set(local)):
            snap = local.get(key) or self._stored(key, stamps.get(key))
            if snap is not None:
                out.append(snap)
        with self._lock:   # forget the versions whose snapshot went (retention)
            for key in [k for k in self._cache if k not in stamps]:
                del self._cache[key]
                self._loading.pop(key, None)
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

    def _stored(self, key: tuple, stamp: Optional[tuple]) -> Optional[ModelSnapshot]:
        """The owner's last snapshot of ``key`` (``stamp``: its (owner, computed_at, duration)),
        from the cache when it is the one the database holds."""
        if stamp is None:
            return None
        computed_at = stamp[1]
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.computed_at >= computed_at:
                return cached
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:   # concurrent requests for the same snapshot wait for one decode
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None and cached.computed_at >= computed_at:
                return cached
            row = self._db.latest_snapshot(*key)
            if row is None:   # gone since the stamps were read
                return None
            try:
                metrics = persist.load(row.metrics)
            except (ValueError, TypeError, KeyError):   # e.g. written by a newer otel-ml's codec
                log.warning("cannot read the snapshot of model %s version %s stored by %s", key[0], key[1],
                            row.owner, exc_info=True)
                return None
            snap = ModelSnapshot(row.model, row.model_version, metrics, row.computed_at, row.duration, row.owner)
            with self._lock:
                self._cache[key] = snap
                self.decoded += 1
            return snap
