"""PostgreSQL's fastest batch write: ``COPY`` straight into ``predictions``.

A batch of predictions (tuples in :data:`COLUMNS` order, no two with one key) is stored in
five round trips, the commit's included (six before the ownership joined the claim's pipeline;
measured, BENCHMARKS.md: no wall-clock difference within the noise, the client's CPU 11-20 % less):

1. one pipeline (psycopg's pipeline mode: the statements sent together, one sync) of the
   transaction's ``BEGIN``, the shared ingest lock (below), ``claim`` and ``own``:

   - ``claim``: ids for the batch from the table's sequence, in the batch's order (the order
     of arrival windows break ties with), and which rows are already stored: the same
     ``(model, prediction_id)`` with a record time within :data:`PROBE_SECONDS` of theirs (the
     unique constraint's own ``(model, prediction_id, time)`` included; ``store/partitions.py``
     says why the constraint holds the time, and why a day): one index probe in the two or
     three partitions that range reaches;
   - ``own``: the batch's versions are recorded when new (``model_versions``; a known one is
     left alone, without a row lock, so replicas storing one hot model never queue on its row:
     compute belongs to the holder of its lease, ``store/leases.py``). It needs no answer from
     the claim: a version all of whose rows turn out to be duplicates is stored already;
2. one binary ``COPY`` (psycopg 3's ``cursor.copy()``, rows encoded in C) of the new rows with
   their ids into ``predictions``, which routes each row to its day's partition (two round
   trips: ``COPY`` cannot run in a pipeline, and its start waits for the server's answer);
3. is any label waiting for its prediction at all (``LABELS_WAITING_PROBE``)? After the
   ``COPY``, so that a label stored meanwhile is seen; then the commit.

Before its ids are drawn, each write takes the shared ingest advisory lock
(:data:`INGEST_LOCK_KEY`, held until its commit; in the claim's round trip): a lease holder
reads the committed watermark under the exclusive one (``Database.committed_watermark``), so no
id at or below it can still become visible.

``COPY`` cannot skip a row: when another replica stores one of the batch's ids with the same
record time between steps 1 and 2 (the same batch delivered to two replicas at once), the
unique constraint fails the ``COPY``, the transaction is rolled back and the batch is stored
again by :func:`copy_via_staging`: a ``COPY`` into a session-local temporary table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` in key order (so replicas storing
the same ids wait for each other in one order, not in a deadlock). Measured on batches of
512 x 20 features (``benchmarks/bench_db_floor.py``, BENCHMARKS.md): the staging way costs
about 1.4 times the direct ``COPY`` (every row written twice, and a sort), so it is kept for
the rare race.

Example::

    event.listen(engine, "connect", prepare)     # once per engine: the staging table
    with engine.begin() as conn:
        stored, waiting = copy_predictions(conn, rows, "replica-1", time.time())
        # stored: {(model, prediction_id): id} of the new rows; IntegrityError on a race
    with engine.begin() as conn:
        stored, waiting = copy_via_staging(conn, rows, "replica-1", time.time())
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

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
#: Advisory lock key of prediction writes (shared, from before the ids are drawn to the commit)
#: and of the committed watermark's read (exclusive); "otelmlid" in ASCII.
INGEST_LOCK_KEY = 0x6F74656C6D6C6964
_SHARED = f"SELECT pg_advisory_xact_lock_shared({INGEST_LOCK_KEY})"
_NAMES = ", ".join(c for c, _t in COLUMNS)
_TYPES = ["int4", *(t for _c, t in COLUMNS)]
_DIRECT_TYPES = ["int8", *(t for _c, t in COLUMNS)]
_CREATE = (f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} "
           f"(n int4 NOT NULL, {', '.join(f'{c} {t}' for c, t in COLUMNS)}) ON COMMIT DELETE ROWS")
_COPY = f"COPY {STAGING} (n, {_NAMES}) FROM STDIN (FORMAT BINARY)"
_CLAIM = (
    "SELECT (SELECT array_agg(nextval('predictions_id_seq')) FROM generate_series(1, %(n)s)), "
    # binary parameters: psycopg dumps a text array's elements without quoting them (the text
    # format ran a regular expression per element: a third of the claim's client time)
    "(SELECT array_agg(k.i) FROM unnest(%(models)b::text[], %(pids)b::text[], %(times)b::float8[]) "
    "WITH ORDINALITY AS k(m, p, t, i) "
    # a scalar subquery per row (an index probe), not EXISTS: the planner may make that a hash
    # anti-join reading the whole table
    "WHERE (SELECT 1 FROM predictions x WHERE x.model = k.m AND x.prediction_id = k.p "
    f"AND x.time > k.t - {PROBE_SECONDS} AND x.time < k.t + {PROBE_SECONDS} LIMIT 1) IS NOT NULL)"
)
_COPY_DIRECT = f"COPY predictions (id, {_NAMES}) FROM STDIN (FORMAT BINARY)"
_OWNED = (
    "INSERT INTO model_versions (model, model_version, task, owner, stored_at, takeovers) "
    "SELECT model, model_version, min(task), %(replica)s, %(now)s, 0 FROM {rows} GROUP BY model, model_version "
    # sorted: concurrent writers take the rows' locks in one order (no deadlock)
    "ORDER BY model, model_version ON CONFLICT (model, model_version) DO NOTHING"
)
_WAITING = "(SELECT EXISTS (SELECT 1 FROM labels WHERE joined_at IS NULL))"
_OWN = _OWNED.format(rows="unnest(%(models)b::text[], %(versions)b::text[], %(tasks)b::text[]) AS v(model, model_version, task)")
_PROBE = f"SELECT {_WAITING}"
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
    # a new version is recorded (a known one is left alone)
    f"owned AS ({_OWNED.format(rows='moved')}) "
    f"SELECT model, prediction_id, id, {_WAITING} FROM moved"
)


@contextmanager
def _driver_errors(conn: Connection, statement: str) -> Iterator[None]:
    """The driver's errors as SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...), as if
    SQLAlchemy had run the statement: callers tell retryable errors apart by those classes."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as e:
        raise sa_exc.DBAPIError.instance(statement, None, e, base, dialect=conn.dialect) from e


def prepare(dbapi_conn, _record=None) -> None:
    """Make this connection's staging table (a SQLAlchemy ``connect`` event listener)."""
    with dbapi_conn.cursor() as cur:
        cur.execute(_CREATE)
    dbapi_conn.commit()


def copy_via_staging(conn: Connection, rows: Sequence[tuple], replica: str, now: float) -> tuple:
    """Store ``rows`` through the staging table (concurrent writers of the same ids welcome),
    recording the versions stored for the first time (``model_versions``, ``replica`` first).

    Returns ``({(model, prediction_id): id}`` of those that were new, whether any label waits
    for its prediction``)``: one round trip for the move, the ownership and the probe."""
    raw: Any = conn.connection.dbapi_connection    # psycopg's: its cursors have copy()
    with _driver_errors(conn, _MOVE), raw.cursor() as cur:
        cur.execute(_SHARED)
        with cur.copy(_COPY) as copy:
            copy.set_types(_TYPES)
            write = copy.write_row
            for n, row in enumerate(rows):
                write((n, *row))
        cur.execute(_MOVE, {"replica": replica, "now": now})
        got = cur.fetchall()
    return {(m, p): i for m, p, i, _w in got}, bool(got and got[0][3])


def copy_predictions(conn: Connection, rows: Sequence[tuple], replica: str, now: float) -> tuple:
    """Store ``rows`` by ``COPY`` in the connection's transaction, recording the versions stored
    for the first time; returns ``({(model, prediction_id): id} of the new rows, whether any
    label waits)``. A row stored concurrently by another writer fails it with
    SQLAlchemy's ``IntegrityError`` (SQLSTATE 23505): roll back and use :func:`copy_via_staging`."""
    raw: Any = conn.connection.dbapi_connection    # psycopg's: its cursors have copy()
    models, pids, times = [r[0] for r in rows], [r[2] for r in rows], [r[4] for r in rows]
    # the batch's versions, sorted: concurrent writers take their rows' locks in one order
    versions = sorted({(r[0], r[1]): r[3] for r in rows}.items())
    with _driver_errors(conn, _COPY_DIRECT), raw.cursor() as cur:
        with raw.pipeline():
            # the transaction's BEGIN, the shared ingest lock, the claim and the ownership in one
            # round trip. Every version of the batch is recorded, before the COPY: a version all
            # of whose rows are duplicates is stored already, so DO NOTHING leaves it as it is.
            raw.execute(_SHARED)    # a cursor of its own: this one's result is the claim's
            cur.execute(_CLAIM, {"n": len(rows), "models": models, "pids": pids, "times": times})
            raw.execute(_OWN, {"models": [m for (m, _v), _t in versions], "versions": [v for (_m, v), _t in versions],
                               "tasks": [t for _k, t in versions], "replica": replica, "now": now})
        ids, stored_already = cur.fetchone()
        if stored_already:
            skip = {i - 1 for i in stored_already}
            new = [(i, row) for k, (i, row) in enumerate(zip(ids, rows)) if k not in skip]
        else:
            new = list(zip(ids, rows))
        if new:
            with cur.copy(_COPY_DIRECT) as copy:
                copy.set_types(_DIRECT_TYPES)
                write = copy.write_row
                for i, row in new:
                    write((i, *row))
            # after the COPY (as late as the transaction allows): a label stored meanwhile by a
            # writer that could not see these rows is found
            waiting = bool(cur.execute(_PROBE).fetchone()[0])
        else:
            waiting = False
    return {(row[0], row[2]): i for i, row in new}, waiting
