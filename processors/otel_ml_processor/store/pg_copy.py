"""PostgreSQL's fastest batch write: ``COPY`` into a staging table, then one ``INSERT ... SELECT``.

A batch of predictions goes to the server as one binary ``COPY`` (psycopg 3's
``cursor.copy()``, rows encoded in C) into a session-local temporary table, and one statement
moves the rows that are new into ``predictions``: those whose ``(model, prediction_id)`` is not
stored with a record time within :data:`PROBE_SECONDS` of theirs (a repeated id with another
record time) and not stored concurrently with the same record time (``ON CONFLICT (model,
prediction_id, time) DO NOTHING``, see ``store/partitions.py``). ``RETURNING`` names the rows stored and their ids,
given in the batch's order; the others are the duplicates. ``COPY`` alone cannot skip a
duplicate (one conflict fails the whole batch), hence the staging table.

The staging table is ``ON COMMIT DELETE ROWS`` and made once per connection (:func:`prepare`,
on connect), so a batch costs two statements besides the ``COPY``.

Example::

    event.listen(engine, "connect", prepare)     # once per engine
    with engine.begin() as conn:
        stored = copy_predictions(conn, rows)     # {(model, prediction_id): id} of the new rows
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy import Connection

#: The prediction columns, in the order of ``database._prediction_tuple``, with their COPY types.
COLUMNS = (
    ("model", "text"), ("model_version", "text"), ("prediction_id", "text"), ("task", "text"),
    ("time", "float8"), ("received_at", "float8"), ("features", "text"), ("segments", "text"),
    ("output_label", "text"), ("output_value", "float8"), ("score", "float8"), ("probabilities", "text"),
    ("attributes", "text"), ("trace_id", "text"), ("span_id", "text"),
)
STAGING = "otel_ml_staging_predictions"
#: How far apart two record times of one prediction id may be and still be found a duplicate
#: (beyond the exact match of the unique constraint): a day.
PROBE_SECONDS = 86400
_NAMES = ", ".join(c for c, _t in COLUMNS)
_TYPES = ["int4", *(t for _c, t in COLUMNS)]
_CREATE = (f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} "
           f"(n int4 NOT NULL, {', '.join(f'{c} {t}' for c, t in COLUMNS)}) ON COMMIT DELETE ROWS")
_COPY = f"COPY {STAGING} (n, {_NAMES}) FROM STDIN (FORMAT BINARY)"
_MOVE = (
    "WITH moved AS ("
    f"INSERT INTO predictions (id, {_NAMES}) SELECT id, {_NAMES} FROM ("
    # ids in the batch's order (the order of arrival the windows break ties with): PostgreSQL
    # evaluates nextval after the ORDER BY of its own SELECT
    f"SELECT nextval('predictions_id_seq') AS id, s.* FROM {STAGING} s "
    # an id stored with another record time within a day of this one (a record without a time
    # of its own sent again: it took its arrival time): one index probe in each of the two or
    # three partitions that range reaches (pruned at run time), whatever the retention. A
    # scalar subquery, not NOT EXISTS, which the planner made a hash anti-join of the whole table.
    "WHERE (SELECT 1 FROM predictions p WHERE p.model = s.model AND p.prediction_id = s.prediction_id "
    f"AND p.time > s.time - {PROBE_SECONDS} AND p.time < s.time + {PROBE_SECONDS} LIMIT 1) IS NULL ORDER BY n) q "
    # rows inserted in key order: replicas storing the same ids wait for each other in one order
    # (in batch order, two replicas given one batch in different orders deadlocked)
    "ORDER BY model, prediction_id ON CONFLICT (model, prediction_id, time) DO NOTHING "
    "RETURNING model, model_version, task, prediction_id, id), "
    # a new version is recorded (compute belongs to its lease's holder, store/leases.py); a known
    # one is left alone, without a row lock, so replicas storing one hot model never queue on it
    "owned AS (INSERT INTO model_versions (model, model_version, task, owner, stored_at, takeovers) "
    "SELECT model, model_version, min(task), %(replica)s, %(now)s, 0 FROM moved GROUP BY model, model_version "
    "ORDER BY model, model_version ON CONFLICT (model, model_version) DO NOTHING) "
    # is any label waiting at all (LABELS_WAITING_PROBE): evaluated once
    "SELECT model, prediction_id, id, (SELECT EXISTS (SELECT 1 FROM labels WHERE joined_at IS NULL)) FROM moved"
)


def prepare(dbapi_conn, _record=None) -> None:
    """Make this connection's staging table (a SQLAlchemy ``connect`` event listener)."""
    with dbapi_conn.cursor() as cur:
        cur.execute(_CREATE)
    dbapi_conn.commit()


def copy_predictions(conn: Connection, rows: Sequence[tuple], replica: str, now: float) -> tuple:
    """Store ``rows`` (tuples in :data:`COLUMNS` order, no two with one key) in the connection's
    transaction, recording the versions stored that are new (``model_versions``, ``replica`` as
    the first to store them).

    Returns ``({(model, prediction_id): id}`` of those that were new, whether any label waits
    for its prediction``)``: one round trip for the move, the ownership and the probe."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cur:
        with cur.copy(_COPY) as copy:
            copy.set_types(_TYPES)
            write = copy.write_row
            for n, row in enumerate(rows):
                write((n, *row))
        cur.execute(_MOVE, {"replica": replica, "now": now})
        got = cur.fetchall()
    return {(m, p): i for m, p, i, _w in got}, bool(got and got[0][3])
