"""PostgreSQL's fastest batch write: ``COPY`` into a staging table, then one ``INSERT ... SELECT``.

A batch of predictions goes to the server as one binary ``COPY`` (psycopg 3's
``cursor.copy()``, rows encoded in C) into a session-local temporary table, and one statement
moves the rows that are new into ``predictions``: those whose ``(model, prediction_id)`` is in
no partition yet (``NOT EXISTS``: a repeated id with another record time) and not stored
concurrently with the same record time (``ON CONFLICT (model, prediction_id, time) DO
NOTHING``, see ``store/partitions.py``). ``RETURNING`` names the rows stored and their ids,
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
_NAMES = ", ".join(c for c, _t in COLUMNS)
_TYPES = ["int4", *(t for _c, t in COLUMNS)]
_CREATE = (f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} "
           f"(n int4 NOT NULL, {', '.join(f'{c} {t}' for c, t in COLUMNS)}) ON COMMIT DELETE ROWS")
_COPY = f"COPY {STAGING} (n, {_NAMES}) FROM STDIN (FORMAT BINARY)"
_MOVE = (
    f"INSERT INTO predictions (id, {_NAMES}) SELECT id, {_NAMES} FROM ("
    # ids in the batch's order (the order of arrival the windows break ties with): PostgreSQL
    # evaluates nextval after the ORDER BY of its own SELECT
    f"SELECT nextval('predictions_id_seq') AS id, s.* FROM {STAGING} s WHERE NOT EXISTS ("
    "SELECT 1 FROM predictions p WHERE p.model = s.model AND p.prediction_id = s.prediction_id) ORDER BY n) q "
    # rows inserted in key order: replicas storing the same ids wait for each other in one order
    # (in batch order, two replicas given one batch in different orders deadlocked)
    "ORDER BY model, prediction_id ON CONFLICT (model, prediction_id, time) DO NOTHING RETURNING model, prediction_id, id"
)


def prepare(dbapi_conn, _record=None) -> None:
    """Make this connection's staging table (a SQLAlchemy ``connect`` event listener)."""
    with dbapi_conn.cursor() as cur:
        cur.execute(_CREATE)
    dbapi_conn.commit()


def copy_predictions(conn: Connection, rows: Sequence[tuple]) -> dict:
    """Store ``rows`` (tuples in :data:`COLUMNS` order, no two with one key) in the connection's
    transaction; returns ``{(model, prediction_id): id}`` of those that were new."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cur:
        with cur.copy(_COPY) as copy:
            copy.set_types(_TYPES)
            write = copy.write_row
            for n, row in enumerate(rows):
                write((n, *row))
        cur.execute(_MOVE)
        return {(m, p): i for m, p, i in cur.fetchall()}
