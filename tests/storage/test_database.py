"""The production ML database, the same tests on a real SQLite file and a real PostgreSQL.

Covers the writes (duplicates), the label join (before, after, twice), expiry, retention in
batches, window reads, migrations and export rows.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select, text

from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.store import schema
from otel_ml_processor.store.database import Database, engine_url
from otel_ml_processor.store.migrations import MIGRATIONS, migrate

T0 = 1_700_000_000.0


def pred(pid: str, t: float = T0, model: str = "m", version: str = "1", **kw) -> PredictionRecord:
    return PredictionRecord(model=model, model_version=version, prediction_id=pid, task="classification", time=t,
                            features=kw.pop("features", {"x": 1.5, "color": "red", "gap": None}),
                            output_label=kw.pop("output_label", "1"), score=0.75,
                            probabilities={"1": 0.75, "0": 0.25}, segments={"gender": "f"}, **kw)


def label(pid: str, value, model: str = "m") -> LabelRecord:
    return LabelRecord(model=model, prediction_id=pid, value=value, time=T0)


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.close()


def _count(db: Database, table) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_duplicates_in_batch_and_across_batches_are_kept_once(db):
    first = db.insert_predictions([pred("a"), pred("b"), pred("a", output_label="0")], now=T0)
    assert [r.prediction_id for r in first.inserted] == ["a", "b"]
    assert [(r.prediction_id, r.output_label) for r in first.duplicates] == [("a", "0")]
    second = db.insert_predictions([pred("b"), pred("c"), pred("a", model="other")], now=T0 + 1)
    assert [(r.model, r.prediction_id) for r in second.inserted] == [("m", "c"), ("other", "a")]
    assert [r.prediction_id for r in second.duplicates] == ["b"]
    assert _count(db, schema.predictions) == 4
    # The first one stays.
    assert [r["output_label"] for r in db.window_rows("m", "1", 10) if r["prediction_id"] == "a"] == ["1"]


def test_label_before_prediction_waits_then_joins(db):
    write = db.upsert_labels([label("p1", "1")], now=T0)
    assert write.stored == 1 and write.joined == [] and write.replaced == []
    assert db.pending_labels() == 1
    assert db.window_rows("m", "1", 10) == []
    write = db.insert_predictions([pred("p1", t=T0 - 5), pred("p2")], now=T0 + 30)
    assert [(j.prediction_id, j.value, j.prediction_time, j.first) for j in write.joined] == [("p1", "1", T0 - 5, True)]
    assert db.pending_labels() == 0
    rows = {r["prediction_id"]: r["label"] for r in db.window_rows("m", "1", 10)}
    assert rows == {"p1": "1", "p2": None}
    with db.engine.connect() as conn:
        assert conn.execute(select(schema.labels.c.joined_at)).scalar_one() == T0 + 30


def test_label_after_prediction_joins_and_second_label_wins(db):
    db.insert_predictions([pred("p1"), pred("p2")], now=T0)
    write = db.upsert_labels([label("p1", "0")], now=T0 + 10)
    assert [(j.prediction_id, j.value, j.first) for j in write.joined] == [("p1", "0", True)]
    assert write.replaced == []
    write = db.upsert_labels([label("p1", "1")], now=T0 + 20)
    assert [(j.prediction_id, j.value, j.first) for j in write.joined] == [("p1", "1", False)]
    assert write.replaced == ["m"]
    # Twice in one batch: the last one wins, the first counts as replaced.
    write = db.upsert_labels([label("p2", 2.0), label("p2", 3.5)], now=T0 + 30)
    assert [(j.prediction_id, j.value, j.first) for j in write.joined] == [("p2", 3.5, True)]
    assert write.replaced == ["m"] and write.stored == 1
    assert {r["prediction_id"]: r["label"] for r in db.window_rows("m", "1", 10)} == {"p1": "1", "p2": 3.5}
    with db.engine.connect() as conn:
        joined_at = dict(conn.execute(select(schema.labels.c.prediction_id, schema.labels.c.joined_at)).all())
    assert joined_at == {"p1": T0 + 10, "p2": T0 + 30}   # a replacement keeps the first join's time
    assert _count(db, schema.labels) == 2 and db.pending_labels() == 0


def test_expire_labels_by_ttl_then_pending_max_oldest_first(db):
    db.insert_predictions([pred("joined")], now=T0)
    db.upsert_labels([label("joined", "1")], now=T0)          # joined: never expires
    for i, age in enumerate([500, 400, 300, 20, 10]):
        db.upsert_labels([label(f"w{i}", "1")], now=T0 - age)
    assert db.pending_labels() == 5
    # ttl 100 s: w0, w1, w2 expire; pending_max 1: then the oldest of w3, w4 (w3) goes.
    assert db.expire_labels(T0, ttl=100, pending_max=1, batch=2) == 4
    with db.engine.connect() as conn:
        left = sorted(conn.execute(select(schema.labels.c.prediction_id)).scalars())
    assert left == ["joined", "w4"]
    assert db.expire_labels(T0, ttl=100, pending_max=1) == 0


@pytest.fixture
def sqlite_db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'otel-ml.db'}")
    yield database
    database.close()


def test_retention_deletes_old_predictions_and_their_labels_in_batches(sqlite_db):
    """SQLite: by storage time, in batches of row deletes (PostgreSQL drops partitions: test_partitions_pg.py)."""
    db = sqlite_db
    db.insert_predictions([pred(f"old{i}") for i in range(7)], now=T0 - 1000)
    db.insert_predictions([pred(f"new{i}") for i in range(3)], now=T0)
    db.upsert_labels([label("old1", "1"), label("new1", "0")], now=T0)
    statements = []

    def count_deletes(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("DELETE FROM PREDICTIONS"):
            statements.append(statement)

    from sqlalchemy import event
    event.listen(db.engine, "before_cursor_execute", count_deletes)
    assert db.apply_retention(T0, retention=500, batch=3) == 7
    event.remove(db.engine, "before_cursor_execute", count_deletes)
    assert len(statements) == 3   # 3 + 3 + 1
    assert sorted(r["prediction_id"] for r in db.window_rows("m", "1", 100)) == ["new0", "new1", "new2"]
    with db.engine.connect() as conn:
        assert list(conn.execute(select(schema.labels.c.prediction_id)).scalars()) == ["new1"]
    assert db.apply_retention(T0, retention=500) == 0


def test_window_rows_by_record_time_and_first_rows_by_arrival_with_labels(db):
    times = [T0 + 5, T0 + 1, T0 + 3, T0 + 2, T0 + 4, T0 + 3]
    db.insert_predictions([pred(f"p{i}", t=t) for i, t in enumerate(times)], now=T0)
    db.insert_predictions([pred("v2", version="2")], now=T0)
    db.upsert_labels([label("p1", "0"), label("p4", 1.0)], now=T0)
    window = db.window_rows("m", "1", 4)
    # latest 4 by time (ties by arrival order), oldest first
    assert [r["prediction_id"] for r in window] == ["p2", "p5", "p4", "p0"]
    assert [r["timestamp"] for r in window] == [T0 + 3, T0 + 3, T0 + 4, T0 + 5]
    assert [r["label"] for r in window] == [None, None, 1.0, None]
    assert [r["prediction_id"] for r in db.window_rows("m", "1", 10, min_time=T0 + 4)] == ["p4", "p0"]
    first = db.first_rows("m", "1", 3)
    assert [(r["prediction_id"], r["label"]) for r in first] == [("p0", None), ("p1", "0"), ("p2", None)]
    r = first[1]
    assert r["features"] == {"x": 1.5, "color": "red", "gap": None}
    assert r["segments"] == {"gender": "f"} and r["probabilities"] == {"1": 0.75, "0": 0.25}
    assert (r["model"], r["model_version"], r["task"], r["score"]) == ("m", "1", "classification", 0.75)
    assert db.count("m", "1") == 6 and db.count("m", "2") == 1
    assert sorted(db.model_versions()) == [("m", "1", "classification"), ("m", "2", "classification")]
    # The reference of first_n=2 ends at p1's id: the window is what was stored after it.
    cut = db.reference_cut("m", "1", 2)
    assert cut == first[1]["seq"] and db.reference_cut("m", "1", 7) is None
    assert [r["prediction_id"] for r in db.window_rows("m", "1", 10, after=cut)] == ["p3", "p2", "p5", "p4"]


def test_labeled_rows_are_the_latest_labeled_ones_wherever_they_are(db):
    times = [T0 + 1, T0 + 2, T0 + 3, T0 + 3, T0 + 5, T0 + 6]
    write = db.insert_predictions([pred(f"p{i}", t=t) for i, t in enumerate(times)], now=T0)
    db.insert_predictions([pred("late", t=T0 + 4)], now=T0 + 50)
    db.upsert_labels([label(p, "1") for p in ("p0", "p1", "p2", "p3", "late")] + [label("nobody", "0")], now=T0)
    rows = db.labeled_rows("m", "1", 3)
    assert [(r["prediction_id"], r["label"]) for r in rows] == [("p2", "1"), ("p3", "1"), ("late", "1")]
    assert [r["seq"] for r in rows[:2]] == write.ids[2:4]          # a tie in time: by arrival
    assert [r["prediction_id"] for r in db.labeled_rows("m", "1", 10, min_time=T0 + 3)] == ["p2", "p3", "late"]
    assert [r["prediction_id"] for r in db.labeled_rows("m", "1", 10, after=write.ids[1])] == ["p2", "p3", "late"]
    assert [r["prediction_id"] for r in db.labeled_rows("m", "1", 10, min_received=T0 + 10)] == ["late"]
    got = {r["prediction_id"]: r["label"] for r in db.rows_by_id("m", ["p4", "p0", "missing"])}
    assert got == {"p4": None, "p0": "1"}


def test_export_rows_since_with_labels(db):
    db.insert_predictions([pred("a", t=T0 - 100), pred("b", t=T0), pred("c", t=T0 + 1, model="other")], now=T0)
    db.upsert_labels([label("b", "0"), label("zzz", "1")], now=T0)   # zzz waits: not exported
    rows = db.export_rows("m", since=T0 - 10)
    assert [(r["prediction_id"], r["label"], r["output_label"]) for r in rows] == [("b", "0", "1")]
    assert len(db.export_rows("m", since=0)) == 2


def test_migrations_are_idempotent_and_recorded(db_url):
    first = Database(db_url)
    first.insert_predictions([pred("a")], now=T0)
    first.close()
    engine = create_engine(engine_url(db_url))
    assert migrate(engine) == len(MIGRATIONS) == migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("select version from schema_version")).scalars().all() == [len(MIGRATIONS)]
        assert conn.execute(text("select count(*) from predictions")).scalar_one() == 1
    engine.dispose()
    again = Database(db_url)
    assert again.schema_version == len(MIGRATIONS) and again.count("m", "1") == 1
    again.close()


def test_plain_postgresql_url_uses_psycopg_3(pg_url):
    """DESIGN.md's ``postgresql://user@host/db`` must work without psycopg2 installed."""
    db = Database(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    assert db.engine.dialect.driver == "psycopg"
    assert db.insert_predictions([pred("a")], now=T0).inserted
    db.close()


def test_replicas_migrating_at_once_on_postgresql(pg_url):
    """Two replicas starting together on an empty database: one creates the schema, both start."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        dbs = list(pool.map(lambda _: Database(pg_url), range(4)))
    assert {d.schema_version for d in dbs} == {len(MIGRATIONS)}
    for d in dbs:
        d.close()


def test_regression_rows_odd_strings_and_missing_values_round_trip(db):
    odd = 'quo"te \\ back{slash} ,comma é ✓'
    rows = [PredictionRecord(model="reg", model_version="1", prediction_id=f"r{i}", task="regression", time=T0 + i,
                             features={"x": float(i), "s": odd, "none": None}, output_value=i * 1.5,
                             trace_id="", span_id="") for i in range(3)]
    rows.append(pred(odd, t=T0 + 10, model="reg"))        # a classification row in the same batch
    assert len(db.insert_predictions(rows, now=T0).inserted) == 4
    got = db.window_rows("reg", "1", 10)
    assert [(r["prediction_id"], r["output_value"], r["output_label"], r["score"]) for r in got] == [
        ("r0", 0.0, None, None), ("r1", 1.5, None, None), ("r2", 3.0, None, None), (odd, None, "1", 0.75)]
    assert got[0]["features"] == {"x": 0.0, "s": odd, "none": None}
    only_none = PredictionRecord(model="reg", model_version="1", prediction_id="n", task="regression", time=T0,
                                 features={})
    assert len(db.insert_predictions([only_none], now=T0).inserted) == 1


def test_housekeeping_runs_in_one_replica_at_a_time_on_postgresql(pg_url):
    """While another replica holds the housekeeping lock, expiry and retention skip the cycle."""
    from otel_ml_processor.store.database import HOUSEKEEPING_LOCK_KEY

    db = Database(pg_url)
    db.insert_predictions([pred("old", t=T0 - 3 * 86400)], now=T0 - 1000)
    db.upsert_labels([label("waiting", "1")], now=T0 - 1000)
    other = create_engine(engine_url(pg_url))
    with other.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": HOUSEKEEPING_LOCK_KEY})
        assert db.expire_labels(T0, ttl=10, pending_max=100) == 0
        assert db.apply_retention(T0, retention=86400) == 0
    other.dispose()
    assert db.expire_labels(T0, ttl=10, pending_max=100) == 1
    assert db.apply_retention(T0, retention=86400) == 1
    db.close()


def _ids(db: Database) -> dict:
    with db.engine.connect() as conn:
        return {(m, p): i for m, p, i in conn.execute(select(schema.predictions.c.model, schema.predictions.c.prediction_id,
                                                              schema.predictions.c.id))}


def test_inserted_ids_are_the_stored_ids_with_and_without_duplicates(db):
    first = db.insert_predictions([pred(f"a{i}") for i in range(5)], now=T0)            # all new (SQLite: fast path)
    second = db.insert_predictions([pred("a1"), pred("b0"), pred("b0"), pred("b1")], now=T0)   # with duplicates
    stored = _ids(db)
    assert first.ids == [stored[("m", f"a{i}")] for i in range(5)] and first.ids == sorted(first.ids)
    assert [r.prediction_id for r in second.inserted] == ["b0", "b1"]
    assert second.ids == [stored[("m", "b0")], stored[("m", "b1")]] and min(second.ids) > max(first.ids)


def test_on_sqlite_the_replica_that_stored_the_latest_prediction_owns_the_version(tmp_path):
    """One processor on SQLite: ownership by storing, as before leases (PostgreSQL: test_leases_pg.py)."""
    db_url = f"sqlite:///{tmp_path / 'otel-ml.db'}"
    a, b = Database(db_url, replica="a"), Database(db_url, replica="b")
    a.insert_predictions([pred("p1"), pred("q1", model="other")], now=T0)
    a.insert_predictions([pred("p2")], now=T0 + 1)
    owners = {(v.model, v.model_version): (v.owner, v.stored_at, v.takeovers) for v in a.model_owners()}
    assert owners == {("m", "1"): ("a", T0 + 1, 0), ("other", "1"): ("a", T0, 0)}
    b.insert_predictions([pred("p3")], now=T0 + 2)
    b.insert_predictions([pred("p1")], now=T0 + 3)          # a duplicate stores nothing: no change
    a.insert_predictions([pred("p4", version="2")], now=T0 + 4)
    owners = {(v.model, v.model_version): (v.owner, v.stored_at, v.takeovers) for v in b.model_owners()}
    assert owners == {("m", "1"): ("b", T0 + 2, 1), ("m", "2"): ("a", T0 + 4, 0), ("other", "1"): ("a", T0, 0)}
    assert b.model_versions() == [("m", "1", "classification"), ("m", "2", "classification"),
                                  ("other", "1", "classification")]
    a.close()
    b.close()


def test_label_changes_are_those_other_replicas_made_since_a_time(db_url):
    a, b = Database(db_url, replica="a"), Database(db_url, replica="b")
    a.insert_predictions([pred("p1", t=T0 + 1), pred("p2", t=T0 + 2)], now=T0)
    start = a.clock()
    assert a.label_changes(start - 60) == []
    b.upsert_labels([label("p1", "0"), label("zz", "1")], now=T0)      # zz waits: not a change of a joined label
    seq = _ids(a)
    (c,) = a.label_changes(start)
    assert (c.model, c.model_version, c.prediction_id, c.value, c.time, c.seq) == ("m", "1", "p1", "0", T0 + 1,
                                                                                   seq[("m", "p1")])
    middle = a.clock()
    assert c.changed_at >= start and middle >= c.changed_at
    b.upsert_labels([label("p1", "1")], now=T0)                         # replaced: changed again
    b.upsert_labels([label("p2", 2.5)], now=T0)
    b.insert_predictions([pred("zz")], now=T0)                          # the waiting label joins
    changes = {c.prediction_id: c.value for c in a.label_changes(middle)}
    assert changes == {"p1": "1", "p2": 2.5, "zz": "1"}
    assert b.label_changes(start) == []                                  # b's own changes: its writes said them
    a.upsert_labels([label("p2", 3.5)], now=T0)                          # a changed it last: not a's to read
    assert {c.prediction_id for c in a.label_changes(middle)} == {"p1", "zz"}
    assert {c.prediction_id: c.value for c in b.label_changes(middle)} == {"p2": 3.5}
    a.close()
    b.close()


def _own(db: Database) -> None:
    """Make ``db`` the owner of what it can take: its lease round on PostgreSQL (the others gave
    theirs up), its next write on SQLite (the caller stores a prediction after)."""
    if db.leases is not None:
        db.leases.round(ttl=60.0)


def test_snapshots_are_kept_only_by_the_versions_owner(db_url):
    from otel_ml_processor.store.database import SnapshotRow

    a, b = Database(db_url, replica="a"), Database(db_url, replica="b")
    a.insert_predictions([pred("p1")], now=T0)
    _own(a)
    assert a.latest_snapshot("m", "1") is None
    assert a.save_snapshots([SnapshotRow("m", "1", "a", T0, 0.5, '{"v": 1}')]) == 1
    assert b.save_snapshots([SnapshotRow("m", "1", "b", T0 + 1, 0.5, '{"v": 2}')]) == 0      # not b's
    assert b.latest_snapshot("m", "1") == SnapshotRow("m", "1", "a", T0, 0.5, '{"v": 1}')
    if a.leases is not None:
        a.leases.give_up()
    _own(b)
    b.insert_predictions([pred("p2")], now=T0 + 2)                                          # b takes over
    assert a.save_snapshots([SnapshotRow("m", "1", "a", T0 + 3, 0.5, '{"v": 3}')]) == 0
    assert b.save_snapshots([SnapshotRow("m", "1", "b", T0 + 4, 0.25, '{"v": 4}')]) == 1
    assert a.latest_snapshot("m", "1") == SnapshotRow("m", "1", "b", T0 + 4, 0.25, '{"v": 4}')
    # Retention: a version whose predictions are all gone has no owner and no snapshot left.
    assert a.apply_retention(T0 + 3 * 86400, retention=86400) == 2
    assert a.model_owners() == [] and a.latest_snapshot("m", "1") is None
    a.close()
    b.close()


def test_migration_from_version_1_records_no_owner_and_the_first_replica_claims(db_url):
    """A database made before ownership: its versions get rows without an owner, claimed once."""
    from otel_ml_processor.store.migrations import MIGRATIONS as steps

    engine = create_engine(engine_url(db_url))
    with engine.begin() as conn:
        steps[0](conn)
        conn.execute(text("DROP INDEX ix_labels_changed"))
        conn.execute(text("ALTER TABLE labels DROP COLUMN changed_at"))
        schema.metadata.create_all(conn, tables=[schema.schema_version])
        conn.execute(schema.schema_version.insert().values(version=1))
        conn.execute(schema.predictions.insert(), [
            dict(model=m, model_version=v, prediction_id=p, task="classification", time=T0, received_at=T0 + i,
                 features="{}", segments="{}", probabilities="{}", attributes="{}", trace_id="", span_id="")
            for i, (m, v, p) in enumerate([("m", "1", "a"), ("m", "1", "b"), ("m", "2", "c")])])
    engine.dispose()
    db = Database(db_url, replica="first")
    assert db.schema_version == len(MIGRATIONS)
    assert [(v.model, v.model_version, v.owner, v.stored_at) for v in db.model_owners()] == [
        ("m", "1", None, T0 + 1), ("m", "2", None, T0 + 2)]
    if db.leases is None:
        assert db.claim_unowned() == 2 and Database(db_url, replica="second").claim_unowned() == 0
    else:   # PostgreSQL: the versions are free leases, the first round takes them
        assert sorted(db.leases.round(ttl=60.0).taken) == [("m", "1"), ("m", "2")]
    assert {v.owner for v in db.model_owners()} == {"first"}
    db.upsert_labels([label("a", "1")], now=T0)
    other = Database(db_url, replica="second")
    assert [c.prediction_id for c in other.label_changes(0)] == ["a"] and db.label_changes(0) == []
    other.close()
    db.close()


def test_an_audit_id_is_stored_once_and_events_without_one_are_all_kept(db):
    from otel_ml_processor.clean.records import AuditRecord

    def audit(audit_id, detail="load"):
        return AuditRecord(model="m", model_version="1", action="model_load", actor="w@h pid 1", detail=detail,
                           time=T0, audit_id=audit_id)

    assert db.insert_audit([audit("a1"), audit("a1"), audit(None), audit(None)]) == 1
    assert db.insert_audit([audit("a1", detail="again"), audit("a2"), audit(None)]) == 1
    with db.engine.connect() as conn:
        rows = conn.execute(select(schema.audit.c.audit_id, schema.audit.c.detail).order_by(schema.audit.c.id)).all()
    assert [tuple(r) for r in rows] == [("a1", "load"), (None, "load"), (None, "load"), ("a2", "load"), (None, "load")]


def test_migration_adds_audit_ids_to_a_database_of_version_2(db_url):
    from otel_ml_processor.clean.records import AuditRecord
    from otel_ml_processor.store.migrations import MIGRATIONS as steps

    engine = create_engine(engine_url(db_url))
    with engine.begin() as conn:
        steps[0](conn)
        steps[1](conn)
        conn.execute(text("DROP INDEX ux_audit_audit_id"))
        conn.execute(text("ALTER TABLE audit DROP COLUMN audit_id"))
        conn.execute(text("INSERT INTO audit (model, model_version, action, actor, detail, time) "
                          "VALUES ('m', '1', 'model_load', 'old', '', 1.0)"))
        schema.metadata.create_all(conn, tables=[schema.schema_version])
        conn.execute(schema.schema_version.insert().values(version=2))
    engine.dispose()
    db = Database(db_url)
    assert db.schema_version == len(MIGRATIONS)
    rec = AuditRecord(model="m", model_version="1", action="model_load", actor="new", detail="", time=T0,
                      audit_id="x")
    assert db.insert_audit([rec]) == 0 and db.insert_audit([rec]) == 1
    with db.engine.connect() as conn:
        assert conn.execute(text("select count(*) from audit")).scalar_one() == 2
    db.close()
