"""PostgreSQL's partitioned ``predictions`` on a real server: ids kept once (also when replicas
race), retention by dropping whole days, and the migration of a database made before partitions.
"""

from __future__ import annotations

import re
import threading

from sqlalchemy import create_engine, event, text

from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.store import partitions, schema
from otel_ml_processor.store.database import Database, engine_url
from otel_ml_processor.store.migrations import MIGRATIONS
from otel_ml_processor.store.writer import StoreWriter
from otel_ml import semconv as sc
from tests.storage.test_database import T0, label, pred

DAY = partitions.DAY


def _scalar(url: str, sql: str):
    engine = create_engine(engine_url(url))
    with engine.connect() as conn:
        value = conn.execute(text(sql)).all()
    engine.dispose()
    return value


def test_a_batch_lands_in_the_partitions_of_its_record_times(pg_url):
    db = Database(pg_url)
    times = [T0 - 40 * DAY, T0, T0 + 0.5, T0 + DAY]        # a late record 40 days back, an early one
    assert len(db.insert_predictions([pred(f"p{i}", t=t) for i, t in enumerate(times)], now=T0).inserted) == 4
    rows = _scalar(pg_url, "SELECT tableoid::regclass::text, prediction_id FROM predictions ORDER BY id")
    assert rows == [(partitions.partition_name(partitions.day_of(t)), f"p{i}") for i, t in enumerate(times)]
    assert [r["prediction_id"] for r in db.window_rows("m", "1", 10)] == ["p0", "p1", "p2", "p3"]
    db.close()


def test_an_id_sent_again_with_another_record_time_is_a_duplicate(pg_url):
    """A record without a time of its own takes its arrival time: sent again two hours later (on
    the next day here, so in another partition), it is still the same prediction."""
    db = Database(pg_url)
    db.insert_predictions([pred("a", t=T0)], now=T0)
    assert partitions.day_of(T0 + 7200) != partitions.day_of(T0)
    again = db.insert_predictions([pred("a", t=T0 + 7200), pred("b", t=T0 + 7200)], now=T0)
    assert [r.prediction_id for r in again.duplicates] == ["a"] and [r.prediction_id for r in again.inserted] == ["b"]
    assert _scalar(pg_url, "SELECT count(*) FROM predictions WHERE prediction_id = 'a'") == [(1,)]
    db.close()


def test_replicas_racing_to_store_the_same_ids_keep_each_once_and_count_the_rest(pg_url):
    """Four replicas each store the same 2 000 ids (same record times, as retries carry), in
    batches in different orders, at once: every id once, and the duplicates each replica counts
    (``ml_records_rejected_total{reason="duplicate"}``) add up to the rest."""
    ids = [f"id{i}" for i in range(2000)]
    replicas = [Database(pg_url, replica=f"r{k}") for k in range(4)]
    counters = [Counters() for _ in replicas]
    start = threading.Barrier(len(replicas))
    inserted = [0] * len(replicas)

    def run(k: int) -> None:
        writer = StoreWriter(replicas[k], counters[k], Caps(100, 500, counters[k]))
        order = ids if k % 2 == 0 else ids[::-1]
        start.wait()
        for i in range(0, len(order), 250):
            batch = [pred(pid, t=T0 + int(pid[2:])) for pid in order[i:i + 250]]
            inserted[k] += writer.predictions(batch, T0).result.accepted

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _scalar(pg_url, "SELECT count(*), count(DISTINCT prediction_id) FROM predictions") == [(2000, 2000)]
    assert sum(inserted) == 2000
    duplicates = sum(c.rejected.get((sc.REASON_DUPLICATE,), 0) for c in counters)
    assert duplicates == 3 * 2000
    for d in replicas:
        d.close()


def test_retention_drops_whole_days_of_record_time_with_their_labels(pg_url):
    db = Database(pg_url)
    day0 = partitions.day_of(T0) * DAY
    db.insert_predictions([pred(f"d0-{i}", t=day0 + i) for i in range(5)]
                          + [pred(f"d1-{i}", t=day0 + DAY + i) for i in range(3)]
                          + [pred(f"d2-{i}", t=day0 + 2 * DAY + i) for i in range(2)], now=T0)
    db.upsert_labels([label("d0-1", "1"), label("d1-1", "0"), label("waiting", "1")], now=T0)
    statements: list = []
    listener = lambda _c, _cur, statement, *_a: statements.append(statement)  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    # now - retention falls inside day 1: day 0 goes whole, day 1 (partly younger) stays whole.
    assert db.apply_retention(day0 + 3 * DAY + 10, retention=2 * DAY) == 5
    event.remove(db.engine, "before_cursor_execute", listener)
    assert not [s for s in statements if s.lstrip().upper().startswith("DELETE FROM PREDICTIONS")]
    assert [s for s in statements if s.startswith(f"DROP TABLE {partitions.partition_name(day0 // DAY)}")]
    assert sorted(r["prediction_id"] for r in db.window_rows("m", "1", 100)) == [
        "d1-0", "d1-1", "d1-2", "d2-0", "d2-1"]
    assert sorted(p for (p,) in _scalar(pg_url, "SELECT prediction_id FROM labels")) == ["d1-1", "waiting"]
    with db.engine.connect() as conn:
        days = partitions.partitions(conn)
    assert day0 // DAY not in days and day0 // DAY + 1 in days
    # the coming days exist before any write needs them
    today = partitions.day_of(day0 + 3 * DAY + 10)
    assert set(range(today, today + partitions.AHEAD_DAYS + 1)) <= set(days)
    # a late record for the dropped day makes its partition again
    assert db.insert_predictions([pred("late", t=day0 + 1)], now=T0).inserted
    db.close()


def test_a_database_made_before_partitions_migrates_with_every_row(pg_url):
    """Version 2's plain ``predictions`` with rows (made as the previous release made it) becomes
    the partitioned table: rows, ids, labels and duplicates' detection all kept."""
    engine = create_engine(engine_url(pg_url))
    with engine.begin() as conn:
        for step in MIGRATIONS[:2]:
            step(conn)
        schema.metadata.create_all(conn, tables=[schema.schema_version])
        conn.execute(schema.schema_version.insert().values(version=2))
        conn.execute(schema.predictions.insert(), [
            dict(model="m", model_version="1", prediction_id=f"old{i}", task="classification",
                 time=T0 + i * DAY / 2, received_at=T0 + i, features='{"x": 1.0}', segments="{}",
                 probabilities="{}", attributes="{}", trace_id="", span_id="") for i in range(6)])
        conn.execute(schema.labels.insert().values(model="m", prediction_id="old2", value_text="1",
                                                   received_at=T0, joined_at=T0))
        before = conn.execute(text("SELECT id, prediction_id, time FROM predictions ORDER BY id")).all()
        assert not partitions.is_partitioned(conn)
    engine.dispose()
    db = Database(pg_url)
    assert db.schema_version == len(MIGRATIONS)
    with db.engine.connect() as conn:
        assert partitions.is_partitioned(conn)
        assert conn.execute(text("SELECT id, prediction_id, time FROM predictions ORDER BY id")).all() == before
        assert not conn.execute(text("SELECT to_regclass('predictions_v2')")).scalar()
    assert {r["prediction_id"]: r["label"] for r in db.window_rows("m", "1", 10)}["old2"] == "1"
    write = db.insert_predictions([pred("old3", t=T0 + 1.5 * DAY), pred("new")], now=T0)
    assert [r.prediction_id for r in write.duplicates] == ["old3"]
    assert write.ids[0] > before[-1][0]          # new ids continue the old sequence
    db.close()


def test_a_versions_first_rows_by_arrival_are_read_from_an_index_not_sorted(pg_url):
    """``first_rows`` / ``reference_cut`` (every start or takeover of a first_n version) read the
    version's first ids from ``ix_predictions_arrival`` in each partition, merged: no sort of all
    its rows (with the sort disabled the planner still finds a plan without one)."""
    db = Database(pg_url)
    db.insert_predictions([pred(f"p{i}", t=T0 + (i % 3) * DAY) for i in range(30)], now=T0)
    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_sort = off"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(conn.execute(text(
            "EXPLAIN SELECT id FROM predictions WHERE model = 'm' AND model_version = '1' ORDER BY id LIMIT 5")).scalars())
    assert "ix_predictions_arrival" in plan or "model_version_id_idx" in plan, plan
    assert "Merge Append" in plan and not re.search(r"(^|->)\s*Sort\s+\(", plan, re.M), plan
    assert [r["prediction_id"] for r in db.first_rows("m", "1", 5)] == [f"p{i}" for i in range(5)]
    db.close()
