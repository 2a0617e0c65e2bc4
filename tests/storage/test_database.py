"""The production ML database, identically on SQLite and PostgreSQL (issue 5)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from otel_ml_processor.clean.records import AuditRecord, LabelRecord, PredictionRecord
from otel_ml_processor.store import schema
from otel_ml_processor.store.database import Database
from otel_ml_processor.store.migrations import MIGRATIONS, migrate


def _p(pid: str, t: float = 1.0, version: str = "1", model: str = "m", **features) -> PredictionRecord:
    return PredictionRecord(model, version, pid, "classification", t, features or {"x": t}, "1", score=0.9,
                            segments={"g": "a"}, extra={"enduser.id": "hashed"})


@pytest.fixture
def db(db_url):
    d = Database(db_url)
    yield d
    d.close()


def test_duplicates_in_batch_and_across_batches_are_kept_once(db):
    w = db.insert_predictions([_p("a"), _p("b"), _p("a")], now=10.0)
    assert [r.prediction_id for r in w.inserted] == ["a", "b"] and [r.prediction_id for r in w.duplicates] == ["a"]
    w = db.insert_predictions([_p("b"), _p("c")], now=11.0)
    assert [r.prediction_id for r in w.inserted] == ["c"] and [r.prediction_id for r in w.duplicates] == ["b"]
    assert db.count("m", "1") == 3
    # The same id under another model is another prediction.
    assert len(db.insert_predictions([_p("a", model="other")]).inserted) == 1


def test_label_before_prediction_waits_then_joins(db):
    w = db.upsert_labels([LabelRecord("m", "a", "0", 1.0)], now=5.0)
    assert w.joined == [] and db.pending_labels() == 1
    w = db.insert_predictions([_p("a", t=3.0)], now=7.0)
    assert len(w.joined) == 1 and w.joined[0].value == "0" and w.joined[0].first
    assert db.pending_labels() == 0
    assert db.window_rows("m", "1", 10)[0]["label"] == "0"


def test_label_after_prediction_joins_and_last_one_wins(db):
    db.insert_predictions([_p("a"), _p("b")])
    w = db.upsert_labels([LabelRecord("m", "a", "1", 1.0), LabelRecord("m", "a", "0", 1.0)])
    assert w.replaced == ["m"] and len(w.joined) == 1 and w.joined[0].value == "0"
    w = db.upsert_labels([LabelRecord("m", "a", 2.5, 2.0)])
    assert w.replaced == ["m"] and not w.joined[0].first
    rows = {r["prediction_id"]: r["label"] for r in db.window_rows("m", "1", 10)}
    assert rows == {"a": 2.5, "b": None}


def test_expiry_by_ttl_then_by_count_oldest_first(db):
    db.upsert_labels([LabelRecord("m", f"old{i}", "1", 0.0) for i in range(3)], now=100.0)
    db.upsert_labels([LabelRecord("m", f"new{i}", "1", 0.0) for i in range(5)], now=200.0)
    db.upsert_labels([LabelRecord("m", f"newer{i}", "1", 0.0) for i in range(5)], now=300.0)
    assert db.expire_labels(now=350.0, ttl=200.0, pending_max=100) == 3       # the old ones
    assert db.expire_labels(now=350.0, ttl=200.0, pending_max=6) == 4         # then the oldest beyond 6
    with db.engine.connect() as conn:
        left = sorted(r[0] for r in conn.execute(select(schema.labels.c.prediction_id)))
    # The five newest survive, plus one of the five received together at t=200.
    assert len(left) == 6 and sum(p.startswith("newer") for p in left) == 5


def test_retention_deletes_old_rows_in_batches(db):
    db.insert_predictions([_p(f"o{i}") for i in range(25)], now=1000.0)
    db.insert_predictions([_p(f"n{i}") for i in range(5)], now=5000.0)
    db.upsert_labels([LabelRecord("m", "o1", "1", 0.0)], now=1000.0)
    assert db.apply_retention(now=6000.0, retention=3000.0, batch=10) == 25
    assert db.count("m", "1") == 5
    assert db.pending_labels() == 0


def test_windows_first_rows_and_versions(db):
    db.insert_predictions([_p(f"p{i}", t=float(100 - i)) for i in range(10)])
    db.insert_predictions([_p("v2", t=1.0, version="2")])
    assert [r["prediction_id"] for r in db.window_rows("m", "1", 3)] == ["p2", "p1", "p0"]
    assert [r["prediction_id"] for r in db.first_rows("m", "1", 2)] == ["p9", "p8"]
    assert [r["prediction_id"] for r in db.window_rows("m", "1", 100, min_time=96.0)] == ["p4", "p3", "p2", "p1", "p0"]
    assert sorted(db.model_versions()) == [("m", "1", "classification"), ("m", "2", "classification")]
    row = db.window_rows("m", "2", 1)[0]
    assert row["features"] == {"x": 1.0} and row["segments"] == {"g": "a"} and row["attributes"] == {"enduser.id": "hashed"}


def test_migrations_are_idempotent(db, db_url):
    assert db.schema_version == len(MIGRATIONS)
    assert migrate(db.engine) == len(MIGRATIONS)
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.schema_version)).scalar_one() == 1
    db.insert_audit([AuditRecord("m", "1", "model_load", "ci", "loaded", 1.0)])
    assert len(Database(db_url).model_versions()) == 0   # reopening migrates nothing and loses nothing


def test_export_rows(db):
    db.insert_predictions([_p("a", t=10.0), _p("b", t=20.0)])
    db.upsert_labels([LabelRecord("m", "b", "0", 0.0)])
    rows = db.export_rows("m", since=15.0)
    assert [(r["prediction_id"], r["label"]) for r in rows] == [("b", "0")]
