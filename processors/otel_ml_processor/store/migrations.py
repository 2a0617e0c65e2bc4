"""Schema migrations: an ordered list of steps, each run once, recorded in ``schema_version``.

Version 1 creates the tables of ``store/schema.py``; version 2 adds replica ownership
(``model_versions``, filled from the stored predictions with no owner yet), the computed
snapshots (``model_snapshots``) and ``labels.changed_at`` / ``changed_by``; the step
``_audit_ids`` adds ``audit.audit_id`` and its unique index; ``_v3`` makes
PostgreSQL's ``predictions`` a table partitioned by record time (``store/partitions.py``),
moving the rows an earlier version stored, ids and all (SQLite: nothing to do); ``_leases``
adds the compute leases and the replicas' heartbeats (``compute_leases``,
``replicas``). A later change to the schema appends
a step (a function taking a SQLAlchemy connection) and never edits an earlier one. Steps create
tables from the current ``schema`` with ``checkfirst``, so a step that adds a column to a table
an earlier step created checks that the column is not there yet (a new database gets it from
step 1 already).

Replicas sharing one PostgreSQL may start at the same moment: the migration runs under a
transaction-scoped advisory lock, so one of them creates the schema and the others wait and
then find it current (without it, two concurrent ``CREATE TABLE`` fail on the catalog).

Example::

    from sqlalchemy import create_engine
    migrate(create_engine("sqlite:///otel-ml.db"))
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, Engine, func, inspect, literal, select, text

from otel_ml_processor.store import partitions, schema


def _v1(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.predictions, schema.labels, schema.audit])


def _v2(conn: Connection) -> None:
    """Replica ownership, computed snapshots, and when each label last changed."""
    schema.metadata.create_all(conn, tables=[schema.model_versions, schema.model_snapshots])
    db = inspect(conn)
    columns = {c["name"] for c in db.get_columns("labels")}
    # Nullable columns without a default: no table rewrite on either database. Labels joined
    # before them stay null there: the windows read those from the tables at start.
    for name, kind in (("changed_at", "FLOAT"), ("changed_by", "VARCHAR(255)")):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE labels ADD COLUMN {name} {kind}"))
    if "ix_labels_changed" not in {i["name"] for i in db.get_indexes("labels")}:
        # DDL text: an Index object made here would attach itself to schema.labels for good
        conn.execute(text("CREATE INDEX ix_labels_changed ON labels (changed_at, changed_by)"))
    # Versions stored before ownership was recorded have no owner: the first replica to start claims them.
    p, mv = schema.predictions, schema.model_versions
    known = select(mv.c.model).where(mv.c.model == p.c.model, mv.c.model_version == p.c.model_version).exists()
    conn.execute(mv.insert().from_select(
        ["model", "model_version", "task", "owner", "stored_at", "takeovers"],
        select(p.c.model, p.c.model_version, func.min(p.c.task), literal(None), func.max(p.c.received_at), literal(0))
        .where(~known).group_by(p.c.model, p.c.model_version)))


def _audit_ids(conn: Connection) -> None:
    """``audit.audit_id`` (``ml.audit.id``) with a unique index: an audit event is stored once."""
    db = inspect(conn)
    if "audit_id" not in {c["name"] for c in db.get_columns("audit")}:
        conn.execute(text("ALTER TABLE audit ADD COLUMN audit_id VARCHAR(64)"))
    if "ux_audit_audit_id" not in {i["name"] for i in db.get_indexes("audit")}:
        conn.execute(text("CREATE UNIQUE INDEX ux_audit_audit_id ON audit (audit_id)"))


def _v3(conn: Connection) -> None:
    """PostgreSQL: ``predictions`` partitioned by day of record time, with every stored row kept."""
    if conn.dialect.name != "postgresql" or partitions.is_partitioned(conn):
        return
    # The old table steps aside under another name; its constraint and index names are
    # schema-wide in PostgreSQL, so they go first (the rows are copied by a plain scan). Its id
    # sequence is kept, so new rows continue the ids (and the order of arrival) of the old ones.
    conn.execute(text("ALTER SEQUENCE predictions_id_seq OWNED BY NONE"))
    conn.execute(text("ALTER TABLE predictions RENAME TO predictions_v2"))
    conn.execute(text("ALTER TABLE predictions_v2 DROP CONSTRAINT IF EXISTS uq_predictions_model_pid"))
    conn.execute(text("ALTER TABLE predictions_v2 DROP CONSTRAINT IF EXISTS predictions_pkey"))
    for name in ("ix_predictions_window", "ix_predictions_received", "ix_predictions_arrival"):
        conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    partitions.create_partitioned(conn)
    # the days that hold rows (not every day between the first and the last: one stray record
    # time must not make thousands of empty partitions)
    partitions.ensure(conn, conn.execute(text(
        f"SELECT DISTINCT floor(time / {partitions.DAY})::bigint FROM predictions_v2")).scalars())
    columns = ", ".join(c.name for c in schema.predictions.columns)
    conn.execute(text(f"INSERT INTO predictions ({columns}) SELECT {columns} FROM predictions_v2 ORDER BY id"))
    conn.execute(text("DROP TABLE predictions_v2"))


def _leases(conn: Connection) -> None:
    """Compute leases and replica heartbeats (several replicas on PostgreSQL, docs/scaling.md)."""
    schema.metadata.create_all(conn, tables=[schema.compute_leases, schema.replicas])


#: Advisory lock key of the schema migration (any constant; "otelmlsv" in ASCII).
MIGRATION_LOCK_KEY = 0x6F74656C6D6C7376

MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _audit_ids, _v3, _leases]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    row = conn.execute(select(schema.schema_version.c.version)).first()
    return row[0] if row else 0


def migrate(engine: Engine) -> int:
    """Bring the database to the latest version; return it."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        schema.metadata.create_all(conn, tables=[schema.schema_version])
        version = current_version(conn)
        for step in MIGRATIONS[version:]:
            step(conn)
        latest = len(MIGRATIONS)
        if version != latest:
            conn.execute(schema.schema_version.delete())
            conn.execute(schema.schema_version.insert().values(version=latest))
    return latest
