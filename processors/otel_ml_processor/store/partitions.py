"""PostgreSQL's ``predictions``: one table partitioned by record time, one partition per UTC day.

Retention drops whole partitions (``DROP TABLE``: no row-by-row ``DELETE``, no dead tuples for
vacuum), and a window read with a time bound (``window.max_age``) only scans the days it needs.

The prediction-id-once guarantee. A unique constraint on a partitioned table must include the
partition key, so the constraint is ``(model, prediction_id, time)``: a prediction id is stored
once per record time. Duplicates made by at-least-once delivery (an SDK, agent or gateway
retrying, or one batch reaching two replicas) are the same record sent again, so they carry the
same record time (``time_unix_nano``, else ``observed_time_unix_nano``, set by the sender) and
land in the same partition, where the constraint catches them whichever replica stores them
first: two transactions racing to insert the same key, the second waits for the first and then
skips its row (``ON CONFLICT DO NOTHING``). A prediction id sent again with another record time
within a day of the stored one (a record sent without any time of its own takes its arrival
time, so its retry has another) is caught by the write's probe of the ``(model, prediction_id,
time)`` index over that range (``store/pg_copy.py``), which sees what is committed: only two
such records stored in the same instant by two replicas, or one id reused more than a day apart
(a client bug, not a retry), could be kept twice. Probing every partition instead would cost
one index descent per partition per row: 33 partitions with a 30-day retention.

Partitions are created ahead of need (today and the next ``AHEAD_DAYS``, by the housekeeping)
and on demand for a batch whose record times fall on a day without one (a late or early
record), under an advisory lock so that replicas do not create the same one twice.

Example::

    with engine.begin() as conn:
        create_partitioned(conn)                 # the migration does this once
        ensure(conn, days_of([time.time()]))     # the partitions those times need
        drop_older(conn, time.time() - 30 * 86400)   # [(name, rows)] of whole days dropped
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Iterable

from sqlalchemy import Connection, text

DAY = 86400
#: Days ahead of today that always have a partition (so writes at midnight create nothing).
AHEAD_DAYS = 2
#: Advisory lock key of partition DDL ("otelmlpt" in ASCII).
PARTITION_LOCK_KEY = 0x6F74656C6D6C7074
_NAME = re.compile(r"^predictions_p(\d{8})$")

#: The partitioned table; its columns and names are those of ``schema.predictions``, its unique
#: constraint includes the partition key ``time``. No primary key: ids come from one sequence
#: and nothing looks a row up by id alone (the ``(id, time)`` key the partition key would force
#: serves nothing); ``ix_predictions_arrival`` serves the reads in arrival order of one version.
#: ``ix_predictions_received`` is gone: retention no longer searches by storage time.
CREATE_PARTITIONED = """
CREATE TABLE predictions (
    id BIGINT NOT NULL DEFAULT nextval('predictions_id_seq'),
    model VARCHAR(255) NOT NULL,
    model_version VARCHAR(255) NOT NULL,
    prediction_id VARCHAR(255) NOT NULL,
    task VARCHAR(32) NOT NULL,
    time FLOAT NOT NULL,
    received_at FLOAT NOT NULL,
    features TEXT NOT NULL,
    segments TEXT NOT NULL,
    output_label TEXT,
    output_value FLOAT,
    score FLOAT,
    probabilities TEXT NOT NULL,
    attributes TEXT NOT NULL,
    trace_id VARCHAR(32) NOT NULL,
    span_id VARCHAR(16) NOT NULL,
    CONSTRAINT uq_predictions_model_pid UNIQUE (model, prediction_id, time)
) PARTITION BY RANGE (time)
"""


def day_of(t: float) -> int:
    """The UTC day (days since the epoch) a record time falls on."""
    return int(t // DAY)


def days_of(times: Iterable[float]) -> set:
    return {int(t // DAY) for t in times}


def partition_name(day: int) -> str:
    return "predictions_p" + (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).strftime("%Y%m%d")


def _day_of_name(name: str) -> int:
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"not a predictions partition: {name!r}")
    return (_dt.datetime.strptime(m.group(1), "%Y%m%d").date() - _dt.date(1970, 1, 1)).days


def is_partitioned(conn: Connection) -> bool:
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid "
        "WHERE c.relname = 'predictions' AND pg_table_is_visible(c.oid))")).scalar())


def create_partitioned(conn: Connection) -> None:
    """Create the partitioned ``predictions`` (with its sequence and indexes), no partition yet."""
    conn.execute(text("CREATE SEQUENCE IF NOT EXISTS predictions_id_seq"))
    conn.execute(text(CREATE_PARTITIONED))
    conn.execute(text("ALTER SEQUENCE predictions_id_seq OWNED BY predictions.id"))
    conn.execute(text("CREATE INDEX ix_predictions_window ON predictions (model, model_version, time)"))
    # A version's first predictions by arrival (its first_n reference, read again at every start
    # or takeover) without sorting all its rows: what the primary key on id served before.
    conn.execute(text("CREATE INDEX ix_predictions_arrival ON predictions (model, model_version, id)"))


def partitions(conn: Connection) -> list:
    """The days that have a partition, in order."""
    names = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions' AND pg_table_is_visible(p.oid)"
    )).scalars()
    return sorted(_day_of_name(n) for n in names)


def ensure(conn: Connection, days: Iterable[int]) -> list:
    """Create the partitions of ``days`` that do not exist yet; returns the days created.

    Takes the partition lock for the rest of the transaction: commit soon (creating a
    partition locks the parent table briefly)."""
    wanted = set(days)
    if not wanted:
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK_KEY})
    missing = sorted(wanted - set(partitions(conn)))
    for day in missing:
        conn.execute(text(f"CREATE TABLE {partition_name(day)} PARTITION OF predictions "
                          f"FOR VALUES FROM ({day * DAY}) TO ({(day + 1) * DAY})"))
    return missing


def drop_older(conn: Connection, horizon: float) -> list:
    """Drop the partitions wholly older than ``horizon`` (their day ends at or before it), with
    the labels of their predictions; returns ``[(day, rows)]`` of what was dropped.

    The labels are deleted and the rows counted first, the partitions dropped last: a ``DROP``
    locks the whole table until the transaction ends, so nothing slow may follow it."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK_KEY})
    old = [day for day in partitions(conn) if (day + 1) * DAY <= horizon]
    dropped = []
    for day in old:
        name = partition_name(day)
        rows = conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
        # Labels are keyed by (model, prediction_id) only: those of the day's predictions go with them.
        conn.execute(text(f"DELETE FROM labels l USING {name} p "
                          "WHERE l.model = p.model AND l.prediction_id = p.prediction_id"))
        dropped.append((day, rows))
    for day in old:
        conn.execute(text(f"DROP TABLE {partition_name(day)}"))
    return dropped
