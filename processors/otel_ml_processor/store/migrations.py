"""Schema migrations: an ordered list of steps, each run once, recorded in ``schema_version``.

Version 1 creates the tables of ``store/schema.py``. A later change to the schema appends a
step (a function taking a SQLAlchemy connection) and never edits an earlier one.

Replicas sharing one PostgreSQL may start at the same moment: the migration runs under a
transaction-scoped advisory lock, so one of them creates the schema and the others wait and
then find it current (without it, two concurrent ``CREATE TABLE`` fail on the catalog).

Example::

    from sqlalchemy import create_engine
    migrate(create_engine("sqlite:///otel-ml.db"))
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, Engine, inspect, select, text

from otel_ml_processor.store import schema


def _v1(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.predictions, schema.labels, schema.audit])


#: Advisory lock key of the schema migration (any constant; "otelmlsv" in ASCII).
MIGRATION_LOCK_KEY = 0x6F74656C6D6C7376

MIGRATIONS: list[Callable[[Connection], None]] = [_v1]


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
