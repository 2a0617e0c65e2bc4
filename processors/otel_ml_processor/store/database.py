"""The database layer: batch writes of cleaned records, the label join, windows and retention.

One class for SQLite and PostgreSQL through SQLAlchemy Core. SQLite runs in WAL mode with
``synchronous=NORMAL``: a committed batch survives a process crash (SIGKILL), which is the
promise the receivers make when they answer success.

On PostgreSQL several processor replicas may share the database (``docs/scaling.md``): each
writes only the models routed to it, and the housekeeping (label expiry, retention) runs in
one replica at a time under a transaction-scoped advisory lock; the others skip that cycle.
A URL without a driver (``postgresql://user@host/db``) uses psycopg 3, the driver the
``postgresql`` extra installs (SQLAlchemy 2.0 would otherwise pick psycopg2).

The label join lives here because it must be atomic with the writes: a prediction batch and
the labels it completes are committed in one transaction, and so is a label batch with the
predictions it finds.

Example::

    db = Database("sqlite:///otel-ml.db")
    result = db.insert_predictions(records, now=time.time())
    result.inserted, result.duplicates, result.joined
"""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from sqlalchemy import String, and_, any_, bindparam, create_engine, delete, event, func, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.engine import Connection, Engine, make_url

from otel_ml_processor.clean.records import AuditRecord, LabelRecord, PredictionRecord
from otel_ml_processor.store import schema
from otel_ml_processor.store.migrations import migrate

_P, _L = schema.predictions, schema.labels
_CHUNK = 500  # bound on the size of IN (...) lists
#: Database errors that mean "try again later" (connection lost, server down, lock timeout): the
#: receivers answer them with OTLP's retryable codes.
RETRYABLE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
#: Advisory lock key of the housekeeping (PostgreSQL); "otelmlhk" in ASCII.
HOUSEKEEPING_LOCK_KEY = 0x6F74656C6D6C686B


@dataclass(slots=True)
class Join:
    """A label attached to a prediction (from either side's arrival)."""

    model: str
    model_version: str
    prediction_id: str
    value: object
    prediction_time: float
    first: bool           # False when it replaced an earlier joined label


@dataclass
class PredictionWrite:
    inserted: list = field(default_factory=list)     # PredictionRecord
    duplicates: list = field(default_factory=list)   # PredictionRecord
    joined: list = field(default_factory=list)       # Join


@dataclass
class LabelWrite:
    stored: int = 0
    replaced: list = field(default_factory=list)     # model of each replaced label
    joined: list = field(default_factory=list)       # Join


def label_value(row) -> object:
    return row.value_text if row.value_text is not None else row.value_num


def engine_url(url: str):
    """``url`` with psycopg 3 as the driver of a bare ``postgresql://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


_PG_COLUMNS = (
    ("model", "text"), ("model_version", "text"), ("prediction_id", "text"), ("task", "text"),
    ("time", "float8"), ("received_at", "float8"), ("features", "text"), ("segments", "text"),
    ("output_label", "text"), ("output_value", "float8"), ("score", "float8"), ("probabilities", "text"),
    ("attributes", "text"), ("trace_id", "text"), ("span_id", "text"),
)
_COLUMNS = tuple(c for c, _t in _PG_COLUMNS)
_SQLITE_INSERT_PREDICTIONS = (
    f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (model, prediction_id) DO NOTHING"
)
_PG_INSERT_PREDICTIONS = (
    f"INSERT INTO predictions ({', '.join(_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for _c, t in _PG_COLUMNS)}) "
    "ON CONFLICT (model, prediction_id) DO NOTHING RETURNING model, prediction_id"
)


#: Is any label waiting at all? Seeks the (joined_at, received_at) index. Filtering on the model
#: too made SQLite walk the primary key of every label of that model (found by the soak).
LABELS_WAITING_PROBE = select(_L.c.prediction_id).where(_L.c.joined_at.is_(None)).limit(1)


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
    def __init__(self, url: str, engine: Optional[Engine] = None):
        self.url = url
        url_ = engine_url(url)
        # A server connection can drop between batches; a SQLite file cannot (the ping was a
        # statement per batch).
        self.engine = engine or create_engine(url_, pool_pre_ping=url_.get_backend_name() != "sqlite")
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            from sqlalchemy.dialects.sqlite import insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite:// or postgresql://")
        self._insert = insert
        self.schema_version = migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _housekeeper(self, conn: Connection) -> bool:
        """True when this transaction may do the housekeeping (always on SQLite: one writer)."""
        if self.dialect != "postgresql":
            return True
        return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": HOUSEKEEPING_LOCK_KEY}).scalar())

    def _keys_in(self, table, keys: list) -> list:
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
                # One statement with one binary array parameter per column (INSERT ... SELECT
                # unnest(...)); ON CONFLICT DO NOTHING RETURNING names the rows that were new.
                # Batches of 512 x 20 features: a lookup then one INSERT per row ran at ~3 300
                # rows/s, multi-row VALUES at ~8 700 (the driver rewrites 7 000 placeholders),
                # text arrays at ~10 000 (quote escaping), this at ~21 000 (docs/scaling.md).
                stored = {(m, p) for m, p in conn.exec_driver_sql(
                    _PG_INSERT_PREDICTIONS, tuple(list(column) for column in zip(*rows)))}
            elif fast:
                # The driver's executemany with plain tuples: when every row was new (duplicates
                # are rare: they come from retries) its rowcount is the whole answer. Otherwise the
                # transaction is rolled back and the statement below names the new rows.
                # SQLAlchemy's insertmanyvalues with RETURNING cost 17 µs per row of 20
                # features here, this 6 µs.
                if conn.exec_driver_sql(_SQLITE_INSERT_PREDICTIONS, rows).rowcount != len(rows):
                    raise _NotAllNew()
                stored = None
            else:
                # The unique (model, prediction_id) constraint, not a prior read, decides duplicates.
                stmt = self._insert(_P).on_conflict_do_nothing().returning(_P.c.model, _P.c.prediction_id)
                stored = {(m, p) for m, p in conn.execute(stmt, [dict(zip(_COLUMNS, row)) for row in rows])}
            if stored is None:
                out.inserted.extend(fresh)
            else:
                for r in fresh:
                    (out.inserted if (r.model, r.prediction_id) in stored else out.duplicates).append(r)
            by_model: dict = {}
            for r in out.inserted:
                by_model.setdefault(r.model, {})[r.prediction_id] = r
            # Most batches find no label waiting: a one-row probe spares the key lookups.
            waiting_somewhere = bool(by_model) and conn.execute(LABELS_WAITING_PROBE).first() is not None
            for model, preds in by_model.items():
                if not waiting_somewhere:
                    break
                for where in self._keys_in(_L, [(model, pid) for pid in preds]):
                    waiting = conn.execute(select(_L).where(and_(where, _L.c.joined_at.is_(None)))).all()
                    if not waiting:
                        continue
                    conn.execute(update(_L).where(and_(where, _L.c.joined_at.is_(None))).values(joined_at=now))
                    for w in waiting:
                        p = preds[w.prediction_id]
                        out.joined.append(Join(p.model, p.model_version, p.prediction_id, label_value(w), p.time, True))
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
            for where in self._keys_in(_L, keys):
                for row in conn.execute(select(_L.c.model, _L.c.prediction_id, _L.c.joined_at).where(where)):
                    previous[(row.model, row.prediction_id)] = row.joined_at
            for where in self._keys_in(_P, keys):
                for row in conn.execute(select(_P.c.model, _P.c.prediction_id, _P.c.model_version, _P.c.time).where(
                        where)):
                    preds[(row.model, row.prediction_id)] = row
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
                                           previous.get(key) is None))
            stmt = self._insert(_L)
            stmt = stmt.on_conflict_do_update(
                index_elements=[_L.c.model, _L.c.prediction_id],
                set_={"value_text": stmt.excluded.value_text, "value_num": stmt.excluded.value_num,
                      "received_at": stmt.excluded.received_at, "joined_at": stmt.excluded.joined_at})
            conn.execute(stmt, rows)
            out.stored = len(rows)
        return out

    def insert_audit(self, records: Sequence[AuditRecord]) -> None:
        if records:
            with self.engine.begin() as conn:
                conn.execute(schema.audit.insert(), [
                    {"model": r.model, "model_version": r.model_version, "action": r.action,
                     "actor": r.actor, "detail": r.detail, "time": r.time} for r in records])

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
        for where in self._keys_in(_L, keys):
            conn.execute(delete(_L).where(where))

    def apply_retention(self, now: float, retention: float, batch: int = 10_000) -> int:
        """Delete predictions (and their labels) stored longer ago than ``retention``, in batches."""
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
                deleted += len(rows)

    # --- reads ------------------------------------------------------------------------------------

    def model_versions(self) -> list:
        """Every stored (model, model_version, task)."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(_P.c.model, _P.c.model_version, _P.c.task).distinct())]

    def _rows(self, stmt) -> list:
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
            "features": json.loads(r.features), "segments": json.loads(r.segments),
            "output_label": r.output_label, "output_value": r.output_value, "score": r.score,
            "probabilities": json.loads(r.probabilities), "label": label_value(r),
            "attributes": json.loads(r.attributes), "trace_id": r.trace_id, "span_id": r.span_id,
        }

    def window_rows(self, model: str, version: str, size: int, min_time: Optional[float] = None) -> list:
        """The latest ``size`` predictions of a model version (oldest first), with labels."""
        stmt = select(_P).where(and_(_P.c.model == model, _P.c.model_version == version))
        if min_time is not None:
            stmt = stmt.where(_P.c.time >= min_time)
        return self._rows(stmt.order_by(_P.c.time.desc(), _P.c.id.desc()).limit(size))

    def first_rows(self, model: str, version: str, n: int) -> list:
        """The first ``n`` predictions of a model version by record time."""
        stmt = select(_P).where(and_(_P.c.model == model, _P.c.model_version == version))
        return self._rows(stmt.order_by(_P.c.time, _P.c.id).limit(n))

    def count(self, model: str, version: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(_P).where(and_(
                _P.c.model == model, _P.c.model_version == version))).scalar_one()

    def export_rows(self, model: str, since: float) -> list:
        """Joined rows of ``model`` recorded at or after ``since`` (for ``otel-ml db export``)."""
        return self._rows(select(_P).where(and_(_P.c.model == model, _P.c.time >= since)))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
