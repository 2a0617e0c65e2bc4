"""Windows of the model versions this replica owns, their references, and the periodic compute cycle.

The writer thread hands each committed prediction write to :meth:`ModelWindows.committed` (a
:class:`Committed`); once per cycle the compute thread follows the database
(:meth:`ModelWindows.sync`: which versions this replica owns, the labels joined anywhere since
the last cycle, windows to fill), snapshots each window, runs the engine on it, keeps the
results in the database (``model_snapshots``) and publishes them as one immutable
:class:`Snapshot` that the exporter reads (it never computes). On start the windows of the
owned versions are filled from the database, so a restart exports the same values as before it.
A ``first_n`` reference prepared before its labels came back is refitted on them as they join
(:meth:`ModelWindows.reference`: label-dependent parts only, :data:`RELABEL_SHARE` at a time).

Example::

    windows = ModelWindows(config, db, caps)
    windows.sync()                                   # owned versions filled from the database
    windows.committed(Committed(predictions=stored_records, ids=ids))
    computer = Computer(config, db, windows, counters)
    computer.run_once()
    computer.snapshot.models[("churn", "3")].performance
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Optional, Protocol, Sequence

import numpy as np

from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.compute import persist
from otel_ml_processor.compute.engine import ModelMetrics, ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import (
    PreparedReference, ReferenceData, ReferenceError, check_reference_columns, load_reference_file, prepare_reference,
    reference_from_window, relabel_reference,
)
from otel_ml_processor.compute.window import LabeledWindow, WindowBuffer, rows_to_window
from otel_ml import semconv as sc
from otel_ml_processor.config import Config, ConfigError, ModelConfig
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.join.labels import window_label
from otel_ml_processor.stats.registry import DriftConfigError, builtin_tests
from otel_ml_processor.store.database import Database, Join, SnapshotRow

log = logging.getLogger(__name__)

#: A compute cycle slower than this share of compute.interval is logged as a warning.
SLOW_CYCLE_SHARE = 0.5
#: A compute lease lives this many compute intervals past its last renewal (PostgreSQL): a
#: holder renews it every interval, so a cycle late by up to half an interval keeps it, and a
#: dead holder's versions are computed elsewhere within LEASE_INTERVALS + 1 intervals plus the
#: taker's compute (2.0 made that over three intervals on a loaded machine: 6.6 s at 2 s).
LEASE_INTERVALS = 1.5
#: A ``first_n`` reference's labels are read again (one query) every this many compute cycles
#: until all its rows have one, and its label-dependent parts (CBPE calibration, sampling-error
#: inputs, DLE) refitted when they grew by RELABEL_SHARE of its rows, or the last row got one:
#: at most 1 / RELABEL_SHARE + 1 refits per reference, each on a reference's rows only.
RELABEL_CYCLES = 4
RELABEL_SHARE = 0.1


def model_spec(m: ModelConfig, config: Config) -> ModelSpec:
    """The engine's view of one model's configuration."""
    return ModelSpec(
        task=m.task, positive_label=m.positive_label, window_size=m.window.size,
        window_max_age=m.window.max_age, drift_default_method=m.drift.default.method,
        drift_default_threshold=m.drift.default.threshold,
        drift_features={k: (v.method, v.threshold) for k, v in m.drift.features.items()},
        fairness_attributes=tuple(m.fairness.attributes),
        fairness_min_group_size=m.fairness.min_group_size,
        max_features=config.limits.max_features_per_model,
        max_groups_per_attribute=config.limits.max_groups_per_attribute,
        drift_alpha=m.drift.alpha, ood_margin=m.ood.margin,
    )


def check_drift_methods(config: Config) -> None:
    """Every configured drift method must exist: a typo is an error at start, naming the known ones.

    A companion test (``missing``) runs on every feature beside its method: it is not a method."""
    tests = builtin_tests()
    known = {sc.METHOD_AUTO, *(name for name, t in tests.items() if not t.companion)}
    for i, m in enumerate(config.models):
        entries = [("default", m.drift.default.method)] + [(f"features.{k}", v.method) for k, v in m.drift.features.items()]
        for where, method in entries:
            allowed = known | ({sc.METHOD_PCA_RECONSTRUCTION} if where == f"features.{sc.FEATURE_MULTIVARIATE}" else set())
            if method not in allowed:
                what = (f"drift method {method!r} runs on every feature beside its method and cannot be chosen as one"
                        if method in tests else f"unknown drift method {method!r}")
                raise ConfigError(f"models[{i}].drift.{where}.method",
                                  f"{what} (known: {', '.join(sorted(allowed))})", config.source)


@dataclass(frozen=True)
class Committed:
    """What the writer thread hands the compute stage once a write is committed: the predictions
    it stored, and the labels it joined. Labels joined by other replicas come through the
    database instead (:meth:`ModelWindows.sync`)."""

    predictions: Sequence[PredictionRecord] = ()   # newly stored (duplicates are not)
    ids: Sequence[int] = ()                        # their database ids, in the same order
    received_at: float = 0.0                       # when the write was stored
    joins: Sequence[Join] = ()                     # labels attached to a stored prediction


class CommitListener(Protocol):
    """The compute stage's input from the stages before it (wired in ``service.py``)."""

    def committed(self, batch: Committed) -> None: ...


#: Seconds a label poll looks back before the previous one: a write reads the database clock
#: (``labels.changed_at``) a moment before its transaction commits, and a poll in between must
#: not miss it. Labels seen already in that overlap are recognized and skipped.
LABEL_POLL_OVERLAP = 10.0

_ROW_KEYS = ("prediction_id", "timestamp", "features", "output_label", "output_value", "score", "probabilities",
             "segments", "label", "seq", "received_at")


@dataclass
class _Version:
    """The in-memory state of one owned model version."""

    buffer: WindowBuffer      # the window: predictions stored after its reference (id > cut)
    labeled: LabeledWindow    # the labeled window
    #: id of the last prediction of its first_n reference (0 with a reference file: every
    #: prediction is in the window); None while that reference is incomplete (the window is empty)
    cut: Optional[int] = None
    rebuilt: bool = False     # True once filled from the database (not just from live arrivals)
    takeovers: int = -1       # model_versions.takeovers when it was filled: a change means refill
    read_to: int = 0          # PostgreSQL: the committed watermark its window has read up to


@dataclass
class _FirstN:
    """A prepared ``first_n`` reference whose labels may still come back (:meth:`ModelWindows.reference`)."""

    data: ReferenceData          # its rows, in arrival order, with the labels the last fit used
    ids: list                    # their prediction ids, in the same order
    cut: int                     # the id of its last prediction (``_Version.cut``)
    task: str
    cycles: int = 0              # cycles since its labels were last read
    pending: Optional[PreparedReference] = None   # refitted, its deferred fits still running


class _Label(NamedTuple):
    """A joined label, with what the labeled window orders its prediction by."""

    prediction_id: str
    value: object
    time: float            # the prediction's record time
    seq: int               # the prediction's id
    received_at: float     # when the prediction was stored


@dataclass
class Sync:
    """What :meth:`ModelWindows.sync` did."""

    owned: list = field(default_factory=list)    # (model, version) this replica owns
    lost: list = field(default_factory=list)     # (model, version) another replica took
    rebuilt: list = field(default_factory=list)  # (model, version) filled from the database
    loaded: int = 0                              # rows read to fill them (window and labeled window)
    followed: int = 0                            # rows read since the last sync (PostgreSQL: any replica's)
    taken: list = field(default_factory=list)    # (model, version) whose lease this replica took
    labels: int = 0                              # labels joined (here or elsewhere) applied to a window held
    fetched: int = 0                             # labeled rows read for the labeled windows


class ModelWindows:
    """The windows of the model versions this replica owns, among the admitted models.

    On PostgreSQL (several replicas) a model version is owned by the holder of its compute lease
    (``store/leases.py``); every replica stores any model's events. Each :meth:`sync` (once per
    compute cycle) takes the committed watermark, runs the lease round (heartbeat, renew, take
    free leases, release past the fair share), drops the windows of versions it no longer holds,
    applies the labels other replicas joined since the last sync, reads the rows the labeled
    windows now want, fills the windows of versions it gained, and appends to the others the
    rows stored since the last sync by any replica (ids between the previous watermark and
    this one, at most ``window.size`` of them, newest by record time). Between syncs,
    :meth:`committed` takes the labels this replica joins.

    On SQLite (one processor) a version is owned by the replica that stored it
    (``model_versions``): :meth:`committed` also appends the predictions it stores, as they are
    committed, and :meth:`sync` fills what it gained from the database.

    Each version has two windows (DESIGN.md, "Statistics"): the window, its last
    ``window.size`` predictions stored after its reference was complete (a ``first_n``
    reference is never in it; with a reference file, every prediction is), and the labeled
    window (:class:`LabeledWindow`), its last ``window.size`` labeled predictions wherever they
    are, those of the ``first_n`` reference included (performance needs no reference, so it
    does not wait for one): a label joined for a prediction that left the window brings its row
    back from the database, and only when the labeled window would keep it.
    """

    def __init__(self, config: Config, db: Database, caps: Caps):
        self.config, self.db, self.caps = config, db, caps
        self.replica = db.replica
        #: PostgreSQL: windows follow the database (leases, watermark), not this replica's writes
        self.follow = db.leases is not None
        self.lease_ttl = LEASE_INTERVALS * config.compute.interval
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], _Version] = {}
        self._catchup: dict = {}         # (model, version) -> rows committed while it is being filled
        self._joins: list = []           # Join: labels joined here, applied at the next sync
        self._watermark: Optional[float] = None   # database clock of the last label poll
        self._seen: dict = {}            # (model, prediction_id) -> changed_at of the label applied
        # (model, version) -> the labels whose rows its labeled window wants
        self._wanted: dict[tuple[str, str], list[_Label]] = {}
        self.specs: dict = {}            # model -> ModelSpec
        self.references: dict = {}       # (model, version) -> PreparedReference
        self.file_references: dict = {}  # model -> ReferenceData loaded from the config's file
        self.reference_errors: dict = {}  # (model, version) -> why its reference cannot be used
        self._first_n: dict = {}         # (model, version) -> _FirstN, while its labels may grow
        self.relabel_cycles = RELABEL_CYCLES
        check_drift_methods(config)
        for m in config.models:
            self.specs[m.name] = model_spec(m, config)
            if m.reference.path:
                # A missing or mismatching reference is a start-up error (raised to the CLI).
                self.file_references[m.name] = load_reference_file(config.resolve_path(m.reference.path))

    def spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            spec = self.specs[model] = model_spec(self.config.model(model), self.config)
        return spec

    def _new_version(self, model: str, version: str, task: str, cut: Optional[int]) -> _Version:
        spec = self.spec(model)
        task = spec.task or task
        return _Version(WindowBuffer(model, version, task, spec.window_size, spec.window_max_age),
                        LabeledWindow(model, version, task, spec.window_size, spec.window_max_age,
                                      self.config.storage.retention), cut)

    @property
    def keys(self) -> list:
        """The (model, version) windows held now."""
        with self._lock:
            return list(self._versions)

    def __len__(self) -> int:
        return len(self._versions)

    # -- the writer thread -----------------------------------------------------------------------

    def committed(self, batch: Committed) -> None:
        """Take a committed write: append the stored predictions of admitted models that come after
        their version's reference (one lock and one bulk append per window), with the features
        under ``limits.max_features_per_model``; then the labels it joined."""
        features_of = self.caps.features
        groups: dict = {}
        for r, seq in zip(batch.predictions, batch.ids):
            groups.setdefault((r.model, r.model_version), []).append((r, seq))
        groups = {key: group for key, group in groups.items() if self.caps.admitted(key[0]) and not self.follow}
        if not groups and not batch.joins:
            return
        received_at = batch.received_at
        with self._lock:
            for (model, version), group in groups.items():
                rows = [{
                    "prediction_id": r.prediction_id, "timestamp": r.time, "features": features_of(model, r.features),
                    "output_label": r.output_label, "output_value": r.output_value, "score": r.score,
                    "probabilities": r.probabilities, "segments": r.segments, "label": None,
                    "seq": seq, "received_at": received_at,
                } for r, seq in group]
                key = (model, version)
                pending = self._catchup.get(key)
                if pending is not None:
                    pending.extend(rows)
                state = self._versions.get(key)
                if state is None:
                    # Storing it made this replica the owner: the next sync fills it from the database.
                    state = self._versions[key] = self._new_version(model, version, group[0][0].task, None)
                if state.cut is not None:
                    cut = state.cut
                    state.buffer.extend([row for row in rows if row["seq"] > cut])
                # else: the reference is incomplete, these rows are part of it (or the sync that
                # completes it fills the window from the database)
            # Labels are applied by the compute thread, at its next sync (they are read there).
            self._joins.extend(batch.joins)

    # -- the compute thread ----------------------------------------------------------------------

    def sync(self, now: Optional[float] = None) -> Sync:
        """Follow the database: owners, then labels, then the windows to fill (see the class)."""
        now = time.time() if now is None else now
        out = Sync()
        upto: Optional[int] = None
        if self.leases_round(out):
            upto = self.db.committed_watermark()   # before the reads below: each row read once
        mine = {(v.model, v.model_version): v for v in self.db.model_owners()
                if v.owner == self.replica and self.caps.admitted(v.model)}
        out.owned = sorted(mine)
        with self._lock:
            out.lost = [k for k in self._versions if k not in mine]
            for k in out.lost:
                del self._versions[k]
                self.references.pop(k, None)
                self.reference_errors.pop(k, None)
                self._first_n.pop(k, None)
        # Labels first, to the windows held: a window filled below reads its labels as they are then.
        out.labels = self._apply_labels(now)
        out.fetched = self._fetch_wanted()
        for key, info in sorted(mine.items()):
            cut = self._cut(key, info, upto=upto)
            state = self._versions.get(key)
            if state is None or not state.rebuilt or state.takeovers != info.takeovers or state.cut != cut:
                out.loaded += self._rebuild(key, info.task, info.takeovers, cut, now, upto)
                out.rebuilt.append(key)
            elif upto is not None and cut is not None:
                out.followed += self._follow(key, state, cut, upto, now)
        return out

    def leases_round(self, out: Sync) -> bool:
        """PostgreSQL: heartbeat, renew, take and release compute leases (``store/leases.py``);
        the models of the versions taken are admitted here. False on SQLite (no leases)."""
        if self.db.leases is None:
            return False
        rnd = self.db.leases.round(self.lease_ttl)
        out.taken = rnd.taken
        for model, _version in rnd.held:
            self.caps.model(model, count=False)
        if rnd.taken or rnd.released:
            log.info("compute leases: took %s, released %s; holding %d (share %d of %d live replicas)",
                     rnd.taken, rnd.released, len(rnd.held), rnd.share, rnd.live)
        return True

    def _follow(self, key: tuple, state: _Version, cut: int, upto: int, now: float) -> int:
        """Append to a held window the rows any replica stored since its last read: ids above what
        it read (and its reference) up to the committed watermark ``upto``; only the newest
        ``window.size`` of them by record time (older ones would be evicted at once)."""
        model, version = key
        if upto <= state.read_to:
            return 0
        spec = self.spec(model)
        min_time = now - spec.window_max_age if spec.window_max_age else None
        rows = self.db.window_rows(model, version, spec.window_size, min_time, after=max(cut, state.read_to), upto=upto)
        with self._lock:
            if self._versions.get(key) is state:
                state.buffer.extend([self._row(model, state.buffer.task, row) for row in rows])
                state.read_to = upto
        return len(rows)

    def _cut(self, key: tuple, info, record: bool = True, upto: Optional[int] = None) -> Optional[int]:
        """Where the version's window begins (see :class:`_Version`), recorded in the database once
        known (unless ``record`` is false: a reader such as the offline report writes nothing);
        ``upto``: counting only ids at or below the committed watermark (several writers)."""
        model, version = key
        if model in self.file_references:
            return 0
        n = self.config.model(model).reference.first_n
        if info.reference_first_n == n and info.reference_cut is not None:
            return info.reference_cut
        cut = self.db.reference_cut(model, version, n, upto=upto)
        if cut is not None and record:
            self.db.set_reference_cut(model, version, n, cut)
        return cut

    def load(self, model: str, version: str, now: Optional[float] = None) -> Optional[tuple]:
        """Fill one version's windows from the database, whichever replica owns it, writing nothing
        (the offline report: ``otel-ml report``); (window, labeled window), or None when the
        version has no stored prediction."""
        now = time.time() if now is None else now
        info = next((v for v in self.db.model_owners() if (v.model, v.model_version) == (model, version)), None)
        if info is None:
            return None
        key = (model, version)
        self._rebuild(key, info.task, info.takeovers, self._cut(key, info, record=False), now)
        with self._lock:
            state = self._versions[key]
            return state.buffer.snapshot(now), state.labeled.snapshot(now)

    def _poll_labels(self) -> list:
        """The label changes other replicas made since the last poll (from a little before it), each once."""
        clock = self.db.clock()
        since = (self._watermark if self._watermark is not None else clock) - LABEL_POLL_OVERLAP
        changes = self.db.label_changes(since)
        self._watermark = clock
        fresh, seen = [], self._seen
        for c in changes:
            key = (c.model, c.prediction_id)
            if seen.get(key) != c.changed_at:
                seen[key] = c.changed_at
                fresh.append(c)
        # what a later poll cannot return again need not be remembered
        self._seen = {k: t for k, t in seen.items() if t >= since}
        return fresh

    def _apply_labels(self, now: float) -> int:
        """The labels joined here since the last sync, and those other replicas joined, in the
        order they happened: the joins committed before the poll read the database, then what it
        read, then the joins committed since (a join here after the read is newer than it)."""
        with self._lock:
            before, self._joins = self._joins, []
        changes = self._poll_labels()
        with self._lock:
            after, self._joins = self._joins, []
        latest: dict = {}      # (model, version) -> {prediction id: _Label}, the last one of each
        for j in before:
            latest.setdefault((j.model, j.model_version), {})[j.prediction_id] = _Label(
                j.prediction_id, j.value, j.prediction_time, j.seq, j.received_at)
        newer = {(j.model, j.prediction_id) for j in after}
        for c in changes:
            if (c.model, c.prediction_id) not in newer:
                latest.setdefault((c.model, c.model_version), {})[c.prediction_id] = _Label(
                    c.prediction_id, c.value, c.time, c.seq, c.received_at)
        for j in after:
            latest.setdefault((j.model, j.model_version), {})[j.prediction_id] = _Label(
                j.prediction_id, j.value, j.prediction_time, j.seq, j.received_at)
        applied = 0
        with self._lock:
            for key, labels in latest.items():
                state = self._versions.get(key)
                if state is not None:
                    applied += self._labels(key, state, labels.values(), now)
        return applied

    def _labels(self, key: tuple, state: _Version, labels, now: float) -> int:
        """Apply a version's joined labels (under the lock): to the window's rows it holds, to the
        labeled window's rows it holds, and the rows the labeled window wants are queued for
        :meth:`_fetch_wanted` (only the newest ``window.size``: older ones could not stay).
        Labels of the ``first_n`` reference's predictions count too, complete or not."""
        if not state.rebuilt:
            return 0      # not filled yet: the fill reads the labels as they are then
        buf, lw, task = state.buffer, state.labeled, state.buffer.task
        min_received = now - self.config.storage.retention
        min_time = now - lw.max_age if lw.max_age is not None else -math.inf
        applied, candidates = 0, []
        for label in labels:
            value = window_label(task, label.value)
            hit = buf.set_label(label.prediction_id, value)
            if value is not None:
                if label.prediction_id in lw:
                    hit = lw.set_label(label.prediction_id, value)
                elif label.received_at >= min_received and label.time >= min_time:
                    candidates.append(label)
                    hit = True
            applied += hit
        if candidates:
            candidates.sort(key=lambda x: (x.time, x.seq), reverse=True)
            wanted = [c for c in candidates[:lw.size] if lw.wants(c.time, c.seq)]
            if wanted:
                self._wanted.setdefault(key, []).extend(wanted)
        return applied

    def _fetch_wanted(self) -> int:
        """Read the rows the labeled windows want (the newest ``window.size`` of each) and offer them."""
        with self._lock:
            wanted, self._wanted = self._wanted, {}
        fetched = 0
        for (model, version), labels in wanted.items():
            state = self._versions.get((model, version))
            if state is None:
                continue
            newest: dict[str, _Label] = {}      # prediction id -> its newest label
            for label in sorted(labels, key=lambda x: (x.time, x.seq), reverse=True):
                newest.setdefault(label.prediction_id, label)
                if len(newest) == state.labeled.size:
                    break
            rows = self.db.rows_by_id(model, list(newest))
            fetched += len(rows)
            with self._lock:
                if self._versions.get((model, version)) is state:
                    self._offer(state, rows)
        return fetched

    def _row(self, model: str, task: str, row: dict) -> dict:
        row = {k: row[k] for k in _ROW_KEYS}
        row["features"] = self.caps.features(model, row["features"], count=False)
        if row["label"] is not None:
            row["label"] = window_label(task, row["label"])
        return row

    def _offer(self, state: _Version, rows: list) -> int:
        lw, n = state.labeled, 0
        for row in rows:
            row = self._row(lw.buffer.model, lw.buffer.task, row)
            if row["label"] is not None:
                n += lw.offer(row)
        return n

    def _rebuild(self, key: tuple, task: str, takeovers: int, cut: Optional[int], now: float,
                 upto: Optional[int] = None) -> int:
        """Fill a version's windows from the database (up to the committed watermark ``upto``, which
        the next :meth:`_follow` reads on from); rows committed here meanwhile are appended after."""
        model, version = key
        spec = self.spec(model)
        state = self._new_version(model, version, task, cut)
        rows, labeled = [], []
        with self._lock:
            self._catchup[key] = []
        try:
            min_time = now - spec.window_max_age if spec.window_max_age else None
            if cut is not None:
                rows = self.db.window_rows(model, version, spec.window_size, min_time, after=cut, upto=upto)
                for row in rows:
                    state.buffer.append(self._row(model, state.buffer.task, row))
            # the labeled window does not wait for the reference (the first_n rows count too)
            labeled = self.db.labeled_rows(model, version, spec.window_size, min_time,
                                           min_received=now - self.config.storage.retention)
            self._offer(state, labeled)
        finally:
            with self._lock:
                pending = self._catchup.pop(key)
        with self._lock:
            if cut is not None:
                # the ids already read from the database are skipped
                state.buffer.extend([row for row in pending if row["seq"] > cut])
            # (labels joined meanwhile are in the queue the next sync applies)
            state.rebuilt, state.takeovers = True, takeovers
            state.read_to = upto or 0
            self._versions[key] = state
        return len(rows) + len(labeled)

    def snapshots(self, now: float) -> list:
        """(key, window, labeled window) of each version filled from the database (one held only
        from live arrivals since the last sync is partial: it waits for the next one)."""
        with self._lock:
            return [(key, state.buffer.snapshot(now), state.labeled.snapshot(now))
                    for key, state in self._versions.items() if state.rebuilt]

    def progress(self, model: str, version: str) -> tuple[Optional[int], Optional[int], Optional[int]]:
        """(rows of the reference so far, rows it will have, labeled-window rows after it) of a
        version held: a reference file's rows; for ``first_n``, the predictions stored towards it
        (counted up to ``first_n`` only, so a busy version costs no full count) while incomplete.
        The labeled window holds the reference's labeled predictions too; the last number is
        what the baseline comparison may use (None while the reference is incomplete)."""
        key = (model, version)
        with self._lock:
            state = self._versions.get(key)
            cut = None if state is None else state.cut
            after = None if cut is None or state is None else state.labeled.count_after(cut)
        data = self.file_references.get(model)
        if data is not None:
            return data.n_rows, data.n_rows, after
        first_n = self.config.model(model).reference.first_n
        if cut is not None:
            return first_n, first_n, after
        return self.db.count(model, version, limit=first_n), first_n, after

    def reference(self, model: str, version: str, task: str, features: Optional[list] = None):
        """The prepared reference of a model version, or None until it exists (or if it cannot be used).

        A reference file whose columns differ from the model's ``features``, or a drift method
        that cannot run on a feature's kind, raises at start (:meth:`check_references`); later it
        is logged once and the model is computed without a reference (no drift, no OOD).
        """
        key = (model, version)
        ref = self.references.get(key)
        if ref is not None and key in self._first_n:
            return self._relabel(key, ref)
        if ref is not None or key in self.reference_errors:
            return ref
        try:
            ref = self._prepare(model, version, task, features)
        except (ReferenceError, DriftConfigError) as exc:
            self.reference_errors[key] = str(exc)
            log.error("model %s version %s: reference unusable, computing without drift and OOD: %s",
                      model, version, exc)
            return None
        if ref is not None:
            self.references[key] = ref
        return ref

    def check_references(self) -> None:
        """At start: every model version with stored rows and a reference file must match it."""
        with self._lock:
            held = [(key, state.buffer) for key, state in self._versions.items()]
        for (model, version), buf in held:
            if model in self.file_references and len(buf):
                with self._lock:
                    window = buf.snapshot()
                self._prepare(model, version, window.task, sorted(window.features))

    def _prepare(self, model: str, version: str, task: str, features: Optional[list]):
        spec = self.spec(model)
        data = self.file_references.get(model)
        if data is not None and features:
            check_reference_columns(data, features)
        if data is None:
            first_n = self.config.model(model).reference.first_n
            with self._lock:
                state = self._versions.get((model, version))
            if state is None or state.cut is None:
                return None     # incomplete: its first first_n predictions are not all stored yet
            rows = self.db.first_rows(model, version, first_n)
            for row in rows:
                if row["label"] is not None:
                    row["label"] = window_label(task, row["label"])
            # arrival order, as the reference's rows came (the multivariate split is by position)
            window = rows_to_window(model, version, spec.task or task, rows, by_time=False)
            data = reference_from_window(window, first_n)
            prepared = prepare_reference(data, spec)
            if prepared.labeled_rows < prepared.n_rows and state.cut is not None:
                # labels joined later are read back and refitted on (:meth:`_relabel`)
                self._first_n[(model, version)] = _FirstN(
                    data, window.prediction_ids[:data.n_rows].tolist(), state.cut, window.task)
            return prepared
        return prepare_reference(data, spec)

    def _relabel(self, key: tuple, ref: PreparedReference) -> PreparedReference:
        """A ``first_n`` reference with the labels joined since it was prepared (DESIGN.md: the
        label-free estimates, as a reference file with ``__label__`` gives them): every
        ``relabel_cycles`` cycles its labels are read (one query over its ids); when
        :data:`RELABEL_SHARE` of its rows more have one than its last fit used, or all have one,
        the label-dependent parts are refitted (:func:`relabel_reference`; the multi-class and
        DLE fits on their own threads). Until those fits end the previous reference is used, so no
        estimate disappears meanwhile. Features, drift and OOD never change."""
        fn: _FirstN = self._first_n[key]
        if fn.pending is not None:
            new = fn.pending
            if not all(d is None or d.done() for d in (new.multiclass, new.dle)):
                return ref
            # a refit that failed (logged) keeps the previous fit's estimate
            keep = {k: getattr(ref, k) for k in ("multiclass", "dle")
                    if getattr(new, k) is not None and getattr(new, k).ready() is None and getattr(ref, k) is not None}
            new = replace(new, **keep) if keep else new
            fn.pending = None
            self.references[key] = new
            if new.labeled_rows >= new.n_rows:
                del self._first_n[key]       # every row labeled: nothing more to come
            return new
        fn.cycles += 1
        if fn.cycles < self.relabel_cycles:
            return ref
        fn.cycles = 0
        model, version = key
        joined = self.db.reference_labels(model, version, fn.cut)
        values = [window_label(fn.task, joined[pid]) if pid in joined else None for pid in fn.ids]
        count = sum(v is not None for v in values)
        step = max(1, math.ceil(RELABEL_SHARE * ref.n_rows))
        if count < ref.labeled_rows + step and not (count == ref.n_rows > ref.labeled_rows):
            return ref
        label = np.empty(len(values), dtype=object)
        label[:] = values
        fn.data = replace(fn.data, label=label)
        log.info("model %s version %s: %d of the %d rows of its reference now labeled (%d before): "
                 "refitting its label-free estimators", model, version, count, ref.n_rows, ref.labeled_rows)
        fn.pending = relabel_reference(ref, fn.data, self.spec(model))
        return self._relabel(key, ref)


@dataclass(frozen=True)
class Snapshot:
    """What the exporter serves: the last compute cycle's results."""

    models: dict = field(default_factory=dict)       # (model, version) -> ModelMetrics
    computed_at: dict = field(default_factory=dict)  # (model, version) -> unix seconds
    durations: dict = field(default_factory=dict)    # (model, version) -> seconds
    labels_pending: int = 0


class Computer:
    """The compute cycle, every ``compute.interval`` (start to start): housekeeping, :meth:`ModelWindows.sync`,
    the engine on each owned window, the snapshot persisted (``model_snapshots``) and published.

    A version another replica took is dropped from the published snapshot at the start of the
    cycle that notices it, before the (longer) computing: its former owner stops exporting it
    within one interval of the takeover.
    """

    def __init__(self, config: Config, db: Database, windows: ModelWindows, counters: Counters):
        self.config, self.db, self.windows, self.counters = config, db, windows, counters
        self.snapshot = Snapshot()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.cycles = 0
        self._synced = time.monotonic()   # the last successful sync (lease renewal on PostgreSQL)

    def run_once(self, now: Optional[float] = None) -> Snapshot:
        now = time.time() if now is None else now
        started = time.perf_counter()
        expired = self.db.expire_labels(now, self.config.labels.pending_ttl, self.config.labels.pending_max)
        if expired:
            self.counters.expired(expired)
        self.db.apply_retention(now, self.config.storage.retention)
        sync = self.windows.sync(now)
        self._synced = time.monotonic()
        if sync.lost:
            old = self.snapshot
            keep = lambda d: {k: v for k, v in d.items() if k not in sync.lost}  # noqa: E731
            self.snapshot = Snapshot(keep(old.models), keep(old.computed_at), keep(old.durations), old.labels_pending)
            log.info("model versions now owned by another replica, no longer exported here: %s", sync.lost)
        models, computed_at, durations = {}, {}, {}
        for (model, version), window, labeled in self.windows.snapshots(now):
            t0 = time.perf_counter()
            try:
                ref = self.windows.reference(model, version, window.task, sorted(window.features))
                metrics: ModelMetrics = compute_model_metrics(window, ref, self.windows.spec(model), labeled=labeled)
                (metrics.reference_predictions, metrics.reference_target,
                 metrics.window_labeled_after_reference) = self.windows.progress(model, version)
            except Exception:  # one model's failure must not stop the others' metrics
                log.exception("computing metrics of model %s version %s failed", model, version)
                continue
            models[(model, version)] = metrics
            computed_at[(model, version)] = time.time()
            durations[(model, version)] = time.perf_counter() - t0
        self._persist(models, computed_at, durations)
        self.snapshot = Snapshot(models, computed_at, durations, self.db.pending_labels())
        self.cycles += 1
        took = time.perf_counter() - started
        if took > SLOW_CYCLE_SHARE * self.config.compute.interval:
            log.warning("compute cycle took %.3fs (compute.interval is %ss)", took, self.config.compute.interval)
        return self.snapshot

    def _persist(self, models: dict, computed_at: dict, durations: dict) -> None:
        """Keep each version's metrics in the database, where any replica reads them (pages)."""
        rows = [SnapshotRow(key[0], key[1], self.db.replica, computed_at[key], durations[key], persist.dump(m))
                for key, m in models.items()]
        try:
            self.db.save_snapshots(rows)
        except Exception:  # the exported metrics do not depend on it
            log.exception("storing the computed snapshots failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="otel-ml-compute", daemon=True)
        self._thread.start()

    def cycle(self) -> None:
        """One cycle of the loop: :meth:`run_once`, a failure logged. On PostgreSQL, once the leases
        have gone unrenewed for their time to live (the database unreachable), they belong to
        other replicas by now: this one stops exporting every computed series rather than export
        them twice."""
        try:
            self.run_once()
        except Exception:
            log.exception("compute cycle failed")
            if self.db.leases is not None and time.monotonic() - self._synced > self.windows.lease_ttl:
                self.snapshot = Snapshot(labels_pending=self.snapshot.labels_pending)

    def _loop(self) -> None:
        interval = self.config.compute.interval
        due = time.monotonic()
        while not self._stop.is_set():
            due += interval
            self.cycle()
            # start to start: a cycle that took long does not push every later one back
            due = max(due, time.monotonic())
            self._stop.wait(due - time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
