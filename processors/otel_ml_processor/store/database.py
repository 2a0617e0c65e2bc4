"""The database layer: batch writes of cleaned records, the label join, windows and retention.

One class for SQLite and PostgreSQL through SQLAlchemy Core. SQLite runs in WAL mode with
``synchronous=NORMAL``: a committed batch survives a process crash (SIGKILL), which is the
promise the receivers make when they answer success.

On PostgreSQL several processor replicas may share the database (``docs/scaling.md``): any of
them stores any model's events, and the housekeeping (label expiry, retention) runs in one
replica at a time under a transaction-scoped advisory lock; the others skip that cycle. The
compute of a model version belongs to the holder of its lease (``store/leases.py``,
:attr:`Database.leases`); on SQLite, one processor, to the replica that stored it. A holder
follows the rows any replica stored with :meth:`Database.committed_watermark`: every
prediction write holds a shared advisory lock from before its ids are drawn until it commits,
and the watermark is read under the exclusive one, so every id at or below it is committed
(ids drawn by concurrent writers may otherwise become visible out of order). Labels carry the
database's clock of their last change (``changed_at``), so a replica reads the labels joined
since it last looked (:meth:`Database.label_changes`), whichever replica joined them; each
owner keeps its last computed snapshot in ``model_snapshots`` for any replica to read.
On PostgreSQL a prediction batch is one binary ``COPY`` into ``predictions``, a table
partitioned by day of record time, and retention drops whole days (``store/pg_copy.py``,
``store/partitions.py``, ``docs/scaling.md``).
A URL without a driver (``postgresql://user@host/db``) uses psycopg 3, the driver the
``postgresql`` extra installs (SQLAlchemy 2.0 would otherwise pick psycopg2).

The label join lives here because it must be atomic with the writes: a prediction batch and
the labels it completes are committed in one transaction, and so is a label batch with the
predictions it finds.

Example::

    db = Database("sqlite:///otel-ml.db", replica="host-a/0.0.0.0:4317")
    result = db.insert_predictions(records, now=time.time())
    result.inserted, result.duplicates, result.joined, result.ids
    [(v.model, v.model_version, v.owner) for v in db.model_owners()]
    db.latest_snapshot("churn", "3")        # SnapshotRow(owner, computed_at, metrics JSON, ...)
    db.snapshot_stamps()                    # {(model, version): (owner, computed_at, duration)}
"""

from __future__ import annotations

import json
import time as _time

import orjson
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence, Union

from sqlalchemy import String, Table, and_, any_, bindparam, case, create_engine, delete, event, func, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.engine import Connection, Engine, make_url

from otel_ml_processor.clean.records import AuditRecord, LabelRecord, PredictionRecord
from otel_ml_processor.store import partitions, pg_copy, schema
from otel_ml_processor.store.leases import NOBODY, Leases
from otel_ml_processor.store.migrations import migrate

_P, _L = schema.predictions, schema.labels
_MV, _MS = schema.model_versions, schema.model_snapshots
_LEASE = schema.compute_leases
_CHUNK = 500  # bound on the size of IN (...) lists
#: Database errors that mean "try again later" (connection lost, server down, lock timeout): the
#: receivers answer them with OTLP's retryable codes.
RETRYABLE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
#: Advisory lock key of the housekeeping (PostgreSQL); "otelmlhk" in ASCII.
HOUSEKEEPING_LOCK_KEY = 0x6F74656C6D6C686B
#: Advisory lock key of prediction writes (shared) and of the watermark read (exclusive)
INGEST_LOCK_KEY = pg_copy.INGEST_LOCK_KEY


@dataclass(slots=True)
class Join:
    """A label attached to a prediction (from either side's arrival)."""

    model: str
    model_version: str
    prediction_id: str
    value: object
    prediction_time: float
    first: bool           # False when it replaced an earlier joined label
    seq: int = 0          # the prediction's id (arrival order)
    received_at: float = 0.0   # when the prediction was stored


@dataclass
class PredictionWrite:
    inserted: list = field(default_factory=list)     # PredictionRecord
    duplicates: list = field(default_factory=list)   # PredictionRecord
    joined: list = field(default_factory=list)       # Join
    ids: list = field(default_factory=list)          # the database id of each inserted record (arrival order)


@dataclass(frozen=True, slots=True)
class LabelChange:
    """A joined label as it is now, with its prediction's keys (:meth:`Database.label_changes`)."""

    model: str
    model_version: str
    prediction_id: str
    value: object
    changed_at: float      # the database's clock
    time: float            # the prediction's record time
    seq: int               # the prediction's id (arrival order)
    received_at: float     # when the prediction was stored


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A row of ``model_versions``: a stored model version and its owner."""

    model: str
    model_version: str
    task: str
    owner: Optional[str]          # the replica that stored its latest prediction (None: not claimed yet)
    stored_at: float              # when that was
    takeovers: int                # times the owner changed
    reference_first_n: Optional[int] = None
    reference_cut: Optional[int] = None   # id of the last of its first reference_first_n predictions


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """A model version's last computed metrics (``metrics``: the JSON of ``compute.persist.dump``)."""

    model: str
    model_version: str
    owner: str
    computed_at: float
    duration: float
    metrics: str


@dataclass
class LabelWrite:
    stored: int = 0
    replaced: list = field(default_factory=list)     # model of each replaced label
    joined: list = field(default_factory=list)       # Join


def _json(text: str) -> dict:
    """A stored JSON object: orjson (a fifth of ``json.loads``' time; rows are read by the
    thousand for the labeled windows), ``json`` for what orjson refuses (NaN written by older
    versions)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def label_value(row) -> object:
    return row.value_text if row.value_text is not None else row.value_num


def engine_url(url: str):
    """``url`` with psycopg 3 as the driver of a bare ``postgresql://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


_COLUMNS = tuple(c for c, _t in pg_copy.COLUMNS)
#: SQLSTATEs of a PostgreSQL write: a key stored concurrently; a row whose day has no partition
_UNIQUE_VIOLATION, _NO_PARTITION = "23505", "23514"
_SQLITE_INSERT_PREDICTIONS = (
    f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (model, prediction_id) DO NOTHING"
)


#: The columns of a prediction that windows hold (``Database._window_rows``).
_WINDOW_COLUMNS = (_P.c.model, _P.c.model_version, _P.c.task, _P.c.prediction_id, _P.c.time, _P.c.id,
                   _P.c.received_at, _P.c.features, _P.c.segments, _P.c.probabilities, _P.c.output_label,
                   _P.c.output_value, _P.c.score)

#: Is any label waiting at all? Seeks the (joined_at, received_at) index. Filtering on the model
#: too made SQLite walk the primary key of every label of that model (found by the soak).
LABELS_WAITING_PROBE = select(_L.c.prediction_id).where(_L.c.joined_at.is_(None)).limit(1)


#: Joined labels another replica than ``:me`` changed since ``:since``, with their prediction's
#: keys: a range of the ``(changed_at, changed_by)`` index (a replica's own changes are skipped
#: there, without reading their rows), then one keyed lookup per label (``test_query_plans.py``).
LABEL_CHANGES = select(
    _L.c.model, _P.c.model_version, _L.c.prediction_id, _L.c.value_text, _L.c.value_num, _L.c.changed_at,
    _P.c.time, _P.c.id, _P.c.received_at,
).select_from(_L.join(_P, and_(_P.c.model == _L.c.model, _P.c.prediction_id == _L.c.prediction_id))).where(
    _L.c.changed_at >= bindparam("since"), _L.c.changed_by != bindparam("me"), _L.c.joined_at.is_not(None))


def _prediction_tuple(r: PredictionRecord, now: float) -> tuple:
    """The row of ``r`` in ``_COLUMNS`` order."""
    # The JSON is usually made by the ingest worker already (PredictionRecord.encode).
    features, segments, probabilities, extra = r.encode()
    return (r.model, r.model_version, r.prediction_id, r.task, r.time, now, features, segments,
            r.output_label, r.output_value, r.score, probabilities, extra, r.trace_id, r.span_id)


class _NotAllNew(Exception):
    """Some rows of a fast insert were already stored: roll back and store them again."""


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class Database:
    """The database, as one replica (``replica``: its identity in ``model_versions``) sees it."""

    def __init__(self, url: str, engine: Optional[Engine] = None, replica: str = ""):
        self.url = url
        self.replica = replica
        url_ = engine_url(url)
        # A server connection can drop between batches; a SQLite file cannot (the ping was a
        # statement per batch).
        self.engine = engine or create_engine(url_, pool_pre_ping=url_.get_backend_name() != "sqlite")
        self.dialect = self.engine.dialect.name
        # INSERT .. ON CONFLICT, in the dialect's own construct
        insert: Callable[[Table], Union[sqlite.Insert, postgresql.Insert]]
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            insert = sqlite.insert
        elif self.dialect == "postgresql":
            insert = postgresql.insert
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite:// or postgresql://")
        self._insert = insert
        self.schema_version = migrate(self.engine)
        #: the days that have a partition of ``predictions`` (PostgreSQL), as far as this replica knows
        self._days: set = set()
        if self.dialect == "postgresql":
            event.listen(self.engine, "connect", pg_copy.prepare)
            self.engine.dispose()   # connections made before the listener have no staging table
            self.ensure_partitions(_time.time())
        own = insert(_MV).values(takeovers=0)
        #: SQLite (one processor): a prediction write makes its replica the owner of the versions it
        #: stored (counting takeovers). PostgreSQL: it only records the version (leases own compute).
        self._own = own.on_conflict_do_update(index_elements=[_MV.c.model, _MV.c.model_version], set_={
            "owner": own.excluded.owner, "stored_at": own.excluded.stored_at,
            "takeovers": _MV.c.takeovers + case((_MV.c.owner == own.excluded.owner, 0), else_=1)}) \
            if self.dialect == "sqlite" else own.on_conflict_do_nothing()
        #: the compute leases (several replicas on PostgreSQL); None on SQLite
        self.leases: Optional[Leases] = Leases(self.engine, replica) if self.dialect == "postgresql" else None

    def _changed(self):
        """What ``labels.changed_at`` is set to: :meth:`clock`, the database server's clock on
        PostgreSQL, so that replicas whose clocks differ write one time scale."""
        return func.extract("epoch", func.clock_timestamp()) if self.dialect == "postgresql" else _time.time()

    def clock(self) -> float:
        """The clock ``labels.changed_at`` is written with (see :meth:`label_changes`): the
        server's on PostgreSQL, this host's on SQLite (one host writes it)."""
        if self.dialect != "postgresql":
            return _time.time()
        with self.engine.connect() as conn:
            return float(conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one())

    def close(self) -> None:
        self.engine.dispose()

    def _housekeeper(self, conn: Connection) -> bool:
        """True when this transaction may do the housekeeping (always on SQLite: one writer)."""
        if self.dialect != "postgresql":
            return True
        return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": HOUSEKEEPING_LOCK_KEY}).scalar())

    def _ensure_partitions(self, times: Iterable[float]) -> None:
        days = partitions.days_of(times) - self._days
        if days:
            with self.engine.begin() as conn:
                partitions.ensure(conn, days)
            self._days |= days

    def ensure_partitions(self, now: float) -> None:
        """PostgreSQL: the partitions of today and the next ``partitions.AHEAD_DAYS`` days exist
        (run at start and by the housekeeping, so that writes rarely create one)."""
        if self.dialect == "postgresql":
            today = partitions.day_of(now)
            with self.engine.begin() as conn:
                partitions.ensure(conn, range(today, today + partitions.AHEAD_DAYS + 1))
                self._days = set(partitions.partitions(conn))

    def keys_in(self, table, keys: list) -> list:
        """WHERE clauses that together match the ``(model, prediction_id)`` pairs in ``keys``.

        PostgreSQL: one ``model = m AND prediction_id = ANY(array)`` per model (one parameter,
        whatever the batch size); SQLite: ``model = m AND prediction_id IN (...)`` lists of at
        most ``_CHUNK`` ids. Never a row-value ``(model, prediction_id) IN (...)``: SQLite answers
        that with a full scan, which made label joins slow down as the tables grew.
        """
        by_model: dict = {}
        for m, p in keys:
            by_model.setdefault(m, []).append(p)
        if self.dialect == "postgresql":
            return [and_(table.c.model == m, table.c.prediction_id == any_(
                bindparam("pids", pids, type_=PG_ARRAY(String), unique=True))) for m, pids in by_model.items()]
        return [and_(table.c.model == m, table.c.prediction_id.in_(chunk))
                for m, pids in by_model.items() for chunk in _chunks(pids)]

    # --- writes ---------------------------------------------------------------------------------

    def insert_predictions(self, records: Sequence[PredictionRecord], now: Optional[float] = None) -> PredictionWrite:
        """Store new predictions (a repeated id is a duplicate) and join waiting labels.

        The unique ``(model, prediction_id)`` constraint, not a prior read, decides duplicates:
        ``INSERT ... ON CONFLICT DO NOTHING`` (``RETURNING`` the new rows when some were not).
        """
        now = _time.time() if now is None else now
        out = PredictionWrite()
        if not records:
            return out
        seen: set = set()
        fresh: list = []
        for r in records:
            key = (r.model, r.prediction_id)
            (out.duplicates if key in seen else fresh).append(r)
            seen.add(key)
        rows = [_prediction_tuple(r, now) for r in fresh]
        if self.dialect == "postgresql":
            self._ensure_partitions(r.time for r in fresh)
            try:
                return self._store_predictions(fresh, rows, now, out, fast=True)
            except sa_exc.IntegrityError as e:
                # rolled back, nothing recorded in out
                state = getattr(e.orig, "sqlstate", None)
                if state == _NO_PARTITION:
                    # another replica's retention dropped a day this one still thought it had
                    self._days.clear()
                    self._ensure_partitions(r.time for r in fresh)
                elif state != _UNIQUE_VIOLATION:
                    raise
                # else another replica stored some of these ids a moment ago: the staging way skips them
                return self._store_predictions(fresh, rows, now, out, fast=False)
        if self.dialect == "sqlite":
            try:
                return self._store_predictions(fresh, rows, now, out, fast=True)
            except _NotAllNew:
                pass   # rolled back, nothing recorded in out: store again, naming the duplicates
        return self._store_predictions(fresh, rows, now, out, fast=False)

    def _store_predictions(self, fresh: list, rows: list, now: float, out: PredictionWrite,
                           fast: bool) -> PredictionWrite:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # COPY into the table (fast), or into a staging table then INSERT ... SELECT the
                # new rows (store/pg_copy.py; each takes the shared ingest lock before its ids are
                # drawn: committed_watermark()). Batches of 512 x 20 features: a lookup then one INSERT per row ran at ~3 300
                # rows/s, multi-row VALUES at ~8 700, INSERT ... SELECT unnest(one binary array per
                # column) at ~21 000; BENCHMARKS.md, "Database floor", has this one against COPY.
                copy = pg_copy.copy_predictions if fast else pg_copy.copy_via_staging
                stored, waiting_somewhere = copy(conn, rows, self.replica, now)
            elif fast:
                # The driver's executemany with plain tuples: when every row was new (duplicates
                # are rare: they come from retries) its rowcount is the whole answer. Otherwise the
                # transaction is rolled back and the statement below names the new rows.
                # SQLAlchemy's insertmanyvalues with RETURNING cost 17 µs per row of 20
                # features here, this 6 µs.
                if conn.exec_driver_sql(_SQLITE_INSERT_PREDICTIONS, rows).rowcount != len(rows):
                    raise _NotAllNew()
                # One writer, no row skipped: SQLite gave the rows the ids after the largest one,
                # in order (the column is the rowid, so the last id is last_insert_rowid()).
                last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
                stored = None
            else:
                # The unique (model, prediction_id) constraint, not a prior read, decides duplicates.
                stmt = self._insert(_P).on_conflict_do_nothing().returning(_P.c.model, _P.c.prediction_id, _P.c.id)
                stored = {(m, p): i for m, p, i in conn.execute(stmt, [dict(zip(_COLUMNS, row)) for row in rows])}
            if stored is None:
                out.inserted.extend(fresh)
                out.ids.extend(range(last - len(fresh) + 1, last + 1))
            else:
                for r in fresh:
                    i = stored.get((r.model, r.prediction_id))
                    if i is None:
                        out.duplicates.append(r)
                    else:
                        out.inserted.append(r)
                        out.ids.append(i)
            if out.inserted and self.dialect != "postgresql":   # PostgreSQL: in the move already
                versions = {(r.model, r.model_version): r.task for r in out.inserted}
                # sorted: concurrent writers take the rows' locks in one order (no deadlock); on
                # PostgreSQL a known version is skipped without a lock (DO NOTHING), so replicas
                # storing one hot model do not queue on its row
                conn.execute(self._own, [
                    {"model": m, "model_version": v, "task": t, "owner": self.replica, "stored_at": now}
                    for (m, v), t in sorted(versions.items())])
            by_model: dict = {}
            for r, seq in zip(out.inserted, out.ids):
                by_model.setdefault(r.model, {})[r.prediction_id] = (r, seq)
            # Most batches find no label waiting: a one-row probe spares the key lookups.
            if self.dialect != "postgresql":
                waiting_somewhere = bool(by_model) and conn.execute(LABELS_WAITING_PROBE).first() is not None
            for model, preds in by_model.items():
                if not waiting_somewhere:
                    break
                for where in self.keys_in(_L, [(model, pid) for pid in preds]):
                    waiting = conn.execute(select(_L).where(and_(where, _L.c.joined_at.is_(None)))).all()
                    if not waiting:
                        continue
                    conn.execute(update(_L).where(and_(where, _L.c.joined_at.is_(None))).values(
                        joined_at=now, changed_at=self._changed(), changed_by=self.replica))
                    for w in waiting:
                        p, seq = preds[w.prediction_id]
                        out.joined.append(Join(p.model, p.model_version, p.prediction_id, label_value(w), p.time, True,
                                               seq, now))
        return out

    def upsert_labels(self, records: Sequence[LabelRecord], now: Optional[float] = None) -> LabelWrite:
        """Store labels (last one wins) and join those whose prediction is stored."""
        now = _time.time() if now is None else now
        out = LabelWrite()
        latest: dict = {}
        for r in records:
            key = (r.model, r.prediction_id)
            if key in latest:
                out.replaced.append(r.model)
            latest[key] = r
        if not latest:
            return out
        with self.engine.begin() as conn:
            keys = list(latest)
            previous, preds = {}, {}
            for where in self.keys_in(_L, keys):
                for row in conn.execute(select(_L.c.model, _L.c.prediction_id, _L.c.joined_at).where(where)):
                    previous[(row.model, row.prediction_id)] = row.joined_at
            for where in self.keys_in(_P, keys):
                for found in conn.execute(select(_P.c.model, _P.c.prediction_id, _P.c.model_version, _P.c.time,
                                                 _P.c.id, _P.c.received_at).where(where)):
                    preds[(found.model, found.prediction_id)] = found
            rows = []
            for key, r in latest.items():
                if key in previous:
                    out.replaced.append(r.model)
                pred = preds.get(key)
                joined_at = previous.get(key) or (now if pred is not None else None)
                rows.append({
                    "model": r.model, "prediction_id": r.prediction_id,
                    "value_text": r.value if isinstance(r.value, str) else None,
                    "value_num": r.value if not isinstance(r.value, str) else None,
                    "received_at": now, "joined_at": joined_at,
                })
                if pred is not None:
                    out.joined.append(Join(r.model, pred.model_version, r.prediction_id, r.value, pred.time,
                                           previous.get(key) is None, pred.id, pred.received_at))
            stmt = self._insert(_L).values(changed_at=self._changed(), changed_by=self.replica)
            stmt = stmt.on_conflict_do_update(
                index_elements=[_L.c.model, _L.c.prediction_id],
                set_={"value_text": stmt.excluded.value_text, "value_num": stmt.excluded.value_num,
                      "received_at": stmt.excluded.received_at, "joined_at": stmt.excluded.joined_at,
                      "changed_at": stmt.excluded.changed_at, "changed_by": stmt.excluded.changed_by})
            conn.execute(stmt, rows)
            out.stored = len(rows)
        return out

    def insert_audit(self, records: Sequence[AuditRecord]) -> int:
        """Store audit events; an ``audit_id`` already stored (or repeated in the batch) is a
        duplicate, left out. Returns how many were duplicates."""
        if not records:
            return 0
        rows, seen = [], set()
        for r in records:
            if r.audit_id is not None:
                if r.audit_id in seen:
                    continue
                seen.add(r.audit_id)
            rows.append({"model": r.model, "model_version": r.model_version, "action": r.action,
                         "actor": r.actor, "detail": r.detail, "time": r.time, "audit_id": r.audit_id})
        with self.engine.begin() as conn:
            # The unique index decides, not a prior read: replicas may store the same event at once.
            stmt = self._insert(schema.audit).on_conflict_do_nothing().returning(schema.audit.c.id)
            stored = len(conn.execute(stmt, rows).fetchall())
        return len(records) - stored

    # --- housekeeping ------------------------------------------------------------------------------

    def pending_labels(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(_L).where(_L.c.joined_at.is_(None))).scalar_one()

    def expire_labels(self, now: float, ttl: float, pending_max: int, batch: int = 10_000) -> int:
        """Delete waiting labels older than ``ttl``, then the oldest past ``pending_max``."""
        expired = 0
        with self.engine.begin() as conn:
            if not self._housekeeper(conn):
                return 0   # another replica is doing it right now
            while True:
                old = select(_L.c.model, _L.c.prediction_id).where(and_(
                    _L.c.joined_at.is_(None), _L.c.received_at < now - ttl)).limit(batch)
                keys = [tuple(r) for r in conn.execute(old)]
                if not keys:
                    break
                self._delete_labels(conn, keys)
                expired += len(keys)
            pending = conn.execute(select(func.count()).select_from(_L).where(_L.c.joined_at.is_(None))).scalar_one()
            excess = pending - pending_max
            while excess > 0:
                oldest = select(_L.c.model, _L.c.prediction_id).where(_L.c.joined_at.is_(None)).order_by(
                    _L.c.received_at).limit(min(excess, batch))
                keys = [tuple(r) for r in conn.execute(oldest)]
                if not keys:
                    break
                self._delete_labels(conn, keys)
                expired += len(keys)
                excess -= len(keys)
        return expired

    def _delete_labels(self, conn, keys: list) -> None:
        for where in self.keys_in(_L, keys):
            conn.execute(delete(_L).where(where))

    def apply_retention(self, now: float, retention: float, batch: int = 10_000) -> int:
        """Remove predictions (and their labels) older than ``retention``; returns how many.

        SQLite: those stored longer ago than ``retention`` (``received_at``), deleted in batches.
        PostgreSQL: the partitions whose whole day of record time is older than ``retention``,
        dropped (``store/partitions.py``); the partitions of the coming days are made here too.
        """
        if self.dialect == "postgresql":
            return self._drop_partitions(now, retention)
        deleted = 0
        while True:
            with self.engine.begin() as conn:
                if not self._housekeeper(conn):
                    return deleted
                rows = conn.execute(select(_P.c.id, _P.c.model, _P.c.prediction_id).where(
                    _P.c.received_at < now - retention).limit(batch)).all()
                if not rows:
                    return deleted
                conn.execute(delete(_P).where(_P.c.id.in_([r.id for r in rows])))
                self._delete_labels(conn, [(r.model, r.prediction_id) for r in rows])
                self._forget_empty_versions(conn)
                deleted += len(rows)

    def _drop_partitions(self, now: float, retention: float) -> int:
        with self.engine.begin() as conn:
            if not self._housekeeper(conn):
                return 0
            dropped = partitions.drop_older(conn, now - retention)
            if dropped:
                self._forget_empty_versions(conn)
        # the coming days, in a transaction of their own: a CREATE ... PARTITION OF, like a DROP,
        # locks the table until its transaction ends
        self.ensure_partitions(now)
        return sum(rows for _day, rows in dropped)

    @staticmethod
    def _forget_empty_versions(conn: Connection) -> None:
        """A version whose last prediction went has no owner, no snapshot and no lease any more."""
        for table in (_MV, _MS, _LEASE):
            left = select(_P.c.id).where(_P.c.model == table.c.model, _P.c.model_version == table.c.model_version)
            conn.execute(delete(table).where(~left.exists()))

    # --- reads ------------------------------------------------------------------------------------

    def model_versions(self) -> list:
        """Every stored (model, model_version, task), by model and version."""
        return [(v.model, v.model_version, v.task) for v in self.model_owners()]

    def model_owners(self) -> list:
        """Every stored model version with its owner (:class:`VersionInfo`), by model and version:
        on PostgreSQL the holder of its compute lease (None when nobody holds it), on SQLite the
        replica that stored it."""
        if self.leases is None:
            cols = (_MV.c.model, _MV.c.model_version, _MV.c.task, _MV.c.owner, _MV.c.stored_at, _MV.c.takeovers,
                    _MV.c.reference_first_n, _MV.c.reference_cut)
            stmt = select(*cols)
        else:
            holder = case((_LEASE.c.holder == NOBODY, None), else_=_LEASE.c.holder)
            stmt = select(_MV.c.model, _MV.c.model_version, _MV.c.task, holder, _MV.c.stored_at,
                          func.coalesce(_LEASE.c.takeovers, 0), _MV.c.reference_first_n, _MV.c.reference_cut
                          ).select_from(_MV.outerjoin(_LEASE, and_(_LEASE.c.model == _MV.c.model,
                                                                   _LEASE.c.model_version == _MV.c.model_version)))
        with self.engine.connect() as conn:
            return [VersionInfo(*r) for r in conn.execute(stmt.order_by(_MV.c.model, _MV.c.model_version))]

    def committed_watermark(self) -> int:
        """An id at or below which every prediction row is committed (or will never be): the
        predictions' sequence read under the exclusive ingest lock, which waits for the writes in
        flight (each holds the shared lock from before it draws its ids until it commits) and
        holds new ones back for that instant. A reader that follows rows with ``id > previous
        watermark`` and ``id <= this`` sees each row once, whichever replica stored it and in
        whatever order their transactions committed. SQLite: the largest id (one writer, ids
        committed in order)."""
        with self.engine.begin() as conn:
            if self.dialect != "postgresql":
                return int(conn.execute(select(func.coalesce(func.max(_P.c.id), 0))).scalar_one())
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({INGEST_LOCK_KEY})")
            seq = conn.execute(text("SELECT pg_get_serial_sequence('predictions', 'id')")).scalar_one()
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {seq}")).one()
            return int(last) if called else int(last) - 1

    def claim_unowned(self) -> int:
        """Make this replica the owner of the versions nobody owns (stored before ownership was
        recorded: the first replica to start after the upgrade takes them); returns how many."""
        with self.engine.begin() as conn:
            return conn.execute(update(_MV).where(_MV.c.owner.is_(None)).values(
                owner=self.replica, takeovers=_MV.c.takeovers + 1)).rowcount

    def label_changes(self, since: float) -> list:
        """The joined labels that other replicas wrote or joined at or after ``since``
        (:meth:`clock` time), as they are now (:class:`LabelChange`); a label this replica changed
        last is not among them (its writes say what they joined). A transaction may commit a
        moment after it read the clock: callers look again from a little before their last
        look, and keep only what changed."""
        with self.engine.connect() as conn:
            return [LabelChange(m, v, p, t if t is not None else n, c, pt, i, r) for m, v, p, t, n, c, pt, i, r in
                    conn.execute(LABEL_CHANGES, {"since": since, "me": self.replica})]

    def save_snapshots(self, rows: Sequence[SnapshotRow]) -> int:
        """Keep each row as its version's latest snapshot, for the versions this replica still owns
        (a replica that lost one mid-cycle must not overwrite its new owner's); returns how many."""
        if not rows:
            return 0
        with self.engine.begin() as conn:
            held = select(_MV.c.model, _MV.c.model_version).where(_MV.c.owner == self.replica) \
                if self.leases is None else \
                select(_LEASE.c.model, _LEASE.c.model_version).where(_LEASE.c.holder == self.replica)
            mine = {tuple(r) for r in conn.execute(held)}
            keep = [r for r in rows if (r.model, r.model_version) in mine]
            if keep:
                stmt = self._insert(_MS)
                stmt = stmt.on_conflict_do_update(index_elements=[_MS.c.model, _MS.c.model_version], set_={
                    c: stmt.excluded[c] for c in ("owner", "computed_at", "duration", "metrics")})
                conn.execute(stmt, [{"model": r.model, "model_version": r.model_version, "owner": r.owner,
                                     "computed_at": r.computed_at, "duration": r.duration, "metrics": r.metrics}
                                    for r in sorted(keep, key=lambda r: (r.model, r.model_version))])
        return len(keep)

    def latest_snapshot(self, model: str, version: str) -> Optional[SnapshotRow]:
        """The last snapshot computed for (model, version) by its owner, whichever replica asks."""
        with self.engine.connect() as conn:
            r = conn.execute(select(_MS).where(_MS.c.model == model, _MS.c.model_version == version)).first()
        return None if r is None else SnapshotRow(r.model, r.model_version, r.owner, r.computed_at, r.duration,
                                                  r.metrics)

    def snapshot_stamps(self) -> dict:
        """When each stored snapshot was computed and by whom, without its metrics (cheap: what a
        reader caching decoded snapshots by ``computed_at`` checks first):
        ``{(model, model_version): (owner, computed_at, duration)}``."""
        with self.engine.connect() as conn:
            return {(m, v): (o, c, d) for m, v, o, c, d in conn.execute(select(
                _MS.c.model, _MS.c.model_version, _MS.c.owner, _MS.c.computed_at, _MS.c.duration))}

    def _rows(self, stmt) -> list:
        """Every column of the predictions ``stmt`` selects, with their joined label, as dicts."""
        q = stmt.subquery()
        joined = select(q, _L.c.value_text, _L.c.value_num).select_from(
            q.outerjoin(_L, and_(_L.c.model == q.c.model, _L.c.prediction_id == q.c.prediction_id,
                                 _L.c.joined_at.is_not(None))))
        with self.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(joined.order_by(q.c.time, q.c.id))]

    @staticmethod
    def _row(r) -> dict:
        return {
            "model": r.model, "model_version": r.model_version, "task": r.task,
            "prediction_id": r.prediction_id, "timestamp": r.time,
            "features": _json(r.features), "segments": _json(r.segments),
            "output_label": r.output_label, "output_value": r.output_value, "score": r.score,
            "probabilities": _json(r.probabilities), "label": label_value(r),
            "attributes": _json(r.attributes), "trace_id": r.trace_id, "span_id": r.span_id,
            "seq": r.id, "received_at": r.received_at,
        }

    def _window_rows(self, where, order: tuple = (), limit: Optional[int] = None, labeled: bool = False,
                     reverse: bool = False) -> list:
        """What a window holds of the predictions matching ``where`` (no attributes, trace ids),
        with their joined label (``labeled``: only those that have one), as dicts, in ``order``
        (``reverse``: the other way round). Windows read them by the thousand: positional rows,
        only the columns they use."""
        on = and_(_L.c.model == _P.c.model, _L.c.prediction_id == _P.c.prediction_id, _L.c.joined_at.is_not(None))
        stmt = select(*_WINDOW_COLUMNS, _L.c.value_text, _L.c.value_num).select_from(
            _P.join(_L, on) if labeled else _P.outerjoin(_L, on)).where(where).order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        out = [{
            "model": m, "model_version": v, "task": task, "prediction_id": pid, "timestamp": t, "seq": i,
            "received_at": received, "features": _json(f), "segments": _json(sg), "probabilities": _json(pr),
            "output_label": ol, "output_value": ov, "score": sc_, "label": lt if lt is not None else ln,
        } for m, v, task, pid, t, i, received, f, sg, pr, ol, ov, sc_, lt, ln in rows]
        return out[::-1] if reverse else out

    def window_rows(self, model: str, version: str, size: int, min_time: Optional[float] = None,
                    after: Optional[int] = None, upto: Optional[int] = None) -> list:
        """The latest ``size`` predictions of a model version by record time (ties by arrival),
        oldest first, with labels; only those recorded at or after ``min_time`` and stored after
        the prediction with id ``after`` (the end of its ``first_n`` reference, or what a reader
        has read already) and up to id ``upto`` (a :meth:`committed_watermark`). A hot model's
        new rows past ``size`` are never read: the index on (model, version, time) is walked
        from the newest."""
        where = [_P.c.model == model, _P.c.model_version == version]
        if min_time is not None:
            where.append(_P.c.time >= min_time)
        if after is not None:
            where.append(_P.c.id > after)
        if upto is not None:
            where.append(_P.c.id <= upto)
        return self._window_rows(and_(*where), (_P.c.time.desc(), _P.c.id.desc()), size, reverse=True)

    def labeled_rows(self, model: str, version: str, size: int, min_time: Optional[float] = None,
                     after: Optional[int] = None, min_received: Optional[float] = None) -> list:
        """The labeled window's rows: the latest ``size`` predictions of a model version that have
        a joined label, by record time (ties by arrival), oldest first; bounded as
        :meth:`window_rows`, and to those stored at or after ``min_received``."""
        where = [_P.c.model == model, _P.c.model_version == version]
        if min_time is not None:
            where.append(_P.c.time >= min_time)
        if after is not None:
            where.append(_P.c.id > after)
        if min_received is not None:
            where.append(_P.c.received_at >= min_received)
        return self._window_rows(and_(*where), (_P.c.time.desc(), _P.c.id.desc()), size, labeled=True, reverse=True)

    def rows_by_id(self, model: str, prediction_ids: Sequence[str]) -> list:
        """The stored predictions of ``model`` with these ids (any order), with labels, as windows read them."""
        out: list = []
        for where in self.keys_in(_P, [(model, pid) for pid in prediction_ids]):
            out.extend(self._window_rows(where))
        return out

    def first_rows(self, model: str, version: str, n: int) -> list:
        """The first ``n`` predictions of a model version by arrival (storage order), with labels."""
        where = and_(_P.c.model == model, _P.c.model_version == version)
        return self._window_rows(where, (_P.c.id,), n)

    def reference_labels(self, model: str, version: str, cut: int) -> dict:
        """The joined labels of a version's ``first_n`` reference (its predictions up to id ``cut``,
        :meth:`reference_cut`), in one query: ``{prediction_id: label}``, unlabeled ones left out."""
        on = and_(_L.c.model == _P.c.model, _L.c.prediction_id == _P.c.prediction_id, _L.c.joined_at.is_not(None))
        stmt = select(_P.c.prediction_id, _L.c.value_text, _L.c.value_num).select_from(_P.join(_L, on)).where(
            and_(_P.c.model == model, _P.c.model_version == version, _P.c.id <= cut))
        with self.engine.connect() as conn:
            return {pid: lt if lt is not None else ln for pid, lt, ln in conn.execute(stmt)}

    def reference_cut(self, model: str, version: str, n: int, upto: Optional[int] = None) -> Optional[int]:
        """The id of the ``n``-th prediction of a model version by arrival (None while it has fewer):
        where its ``first_n`` reference ends and its window begins. ``upto``: only ids at or below
        a :meth:`committed_watermark`, below which no row can appear later (several writers)."""
        where = [_P.c.model == model, _P.c.model_version == version]
        if upto is not None:
            where.append(_P.c.id <= upto)
        stmt = select(_P.c.id).where(and_(*where)).order_by(
            _P.c.id).limit(1).offset(max(0, int(n) - 1))
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar()

    def set_reference_cut(self, model: str, version: str, n: int, cut: int) -> None:
        """Record :meth:`reference_cut` (it never changes for a given ``n``) in ``model_versions``."""
        with self.engine.begin() as conn:
            conn.execute(update(_MV).where(_MV.c.model == model, _MV.c.model_version == version).values(
                reference_first_n=n, reference_cut=cut))

    def count(self, model: str, version: str, limit: Optional[int] = None) -> int:
        """Stored predictions of a model version (``limit``: counted up to it, reading no more)."""
        where = and_(_P.c.model == model, _P.c.model_version == version)
        with self.engine.connect() as conn:
            if limit is not None:
                first = select(_P.c.id).where(where).order_by(_P.c.id).limit(int(limit)).subquery()
                return conn.execute(select(func.count()).select_from(first)).scalar_one()
            return conn.execute(select(func.count()).select_from(_P).where(where)).scalar_one()

    def export_rows(self, model: str, since: float) -> list:
        """Joined rows of ``model`` recorded at or after ``since`` (for ``otel-ml db export``)."""
        return self._rows(select(_P).where(and_(_P.c.model == model, _P.c.time >= since)))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
