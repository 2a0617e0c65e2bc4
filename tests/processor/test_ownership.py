"""Replica ownership and labels through the database, at the compute stage's level.

Two replicas' stages (a Database and ModelWindows each, as ``service.py`` wires them) on one real
SQLite file; the real-process version on PostgreSQL is ``tests/storage/test_replicas_pg.py``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.compute import manager
from otel_ml_processor.compute.manager import Committed, ModelWindows
from otel_ml_processor.config import parse_config
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.store import schema
from otel_ml_processor.store.database import Database

T0 = 1_700_000_000.0


def pred(pid: str, model: str = "m", t: float = T0) -> PredictionRecord:
    return PredictionRecord(model=model, model_version="1", prediction_id=pid, task="classification", time=t,
                            features={"x": 1.0}, output_label="1")


class Replica:
    """One replica's database handle and windows."""

    def __init__(self, url: str, name: str):
        config = parse_config({"models": [{"name": "m"}, {"name": "n"}]})
        self.db = Database(url, replica=name)
        self.windows = ModelWindows(config, self.db, Caps(100, 500, Counters(), initial_models=["m", "n"]))

    def store(self, records: list) -> None:
        write = self.db.insert_predictions(records, now=T0)
        self.windows.committed(Committed(write.inserted, write.ids, T0))

    def labels(self, key: tuple) -> dict:
        (window,) = [w for k, w in self.windows.snapshots(T0) if k == key]
        return dict(zip(window.prediction_ids.tolist(), window.label.tolist()))


@pytest.fixture
def replicas(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = Replica(url, "a"), Replica(url, "b")
    yield a, b
    a.db.close()
    b.db.close()


def test_windows_follow_ownership_and_labels_reach_the_owner(replicas):
    a, b = replicas
    a.store([pred("p1"), pred("p2"), pred("q1", model="n")])
    assert a.windows.snapshots(T0) == []              # live arrivals only: filled at the next sync
    sync = a.windows.sync(T0)
    assert sync.owned == sync.rebuilt == [("m", "1"), ("n", "1")] and sync.loaded == 3
    assert b.windows.sync(T0).owned == []
    b.db.upsert_labels([LabelRecord("m", "p1", "0", T0)], now=T0)     # entered through the other replica
    assert a.windows.sync(T0).labels == 1
    assert a.labels(("m", "1")) == {"p1": "0", "p2": None}
    # b stores a newer prediction of m: b owns it, with a's rows; a drops it at its next sync.
    b.store([pred("p3", t=T0 + 1)])
    sync = b.windows.sync(T0)
    assert sync.owned == sync.rebuilt == [("m", "1")]
    assert b.labels(("m", "1")) == {"p1": "0", "p2": None, "p3": None}
    sync = a.windows.sync(T0)
    assert sync.lost == [("m", "1")] and sync.owned == [("n", "1")] and a.windows.keys == [("n", "1")]
    # ...and takes it back with the next prediction it stores: filled again, b's row included.
    a.store([pred("p4", t=T0 + 2)])
    assert a.windows.sync(T0).rebuilt == [("m", "1")]
    assert list(a.labels(("m", "1"))) == ["p1", "p2", "p3", "p4"]
    assert b.windows.sync(T0).lost == [("m", "1")]


def test_a_change_committed_late_is_read_once(replicas):
    """A poll looks back LABEL_POLL_OVERLAP seconds before the previous one, and skips what it applied."""
    a, b = replicas
    a.store([pred("p1"), pred("p2")])
    a.windows.sync(T0)
    b.db.upsert_labels([LabelRecord("m", "p1", "1", T0)], now=T0)
    assert a.windows.sync(T0).labels == 1
    before_poll = a.db.clock()
    assert a.windows.sync(T0).labels == 0            # read again within the overlap: not applied twice
    # A label whose transaction read the clock before that poll but committed after it.
    b.db.upsert_labels([LabelRecord("m", "p2", "0", T0)], now=T0)
    with b.db.engine.begin() as conn:
        conn.execute(update(schema.labels).where(schema.labels.c.prediction_id == "p2").values(
            changed_at=before_poll - manager.LABEL_POLL_OVERLAP / 2))
    assert a.windows.sync(T0).labels == 1
    assert a.labels(("m", "1")) == {"p1": "1", "p2": "0"}
    b.db.upsert_labels([LabelRecord("m", "p2", "1", T0)], now=T0)      # replaced: a change again
    assert a.windows.sync(T0).labels == 1 and a.labels(("m", "1"))["p2"] == "1"


def test_rows_committed_while_a_window_is_filled_are_kept(replicas, monkeypatch):
    a, _b = replicas
    a.store([pred("p1")])
    real = a.db.window_rows

    def slow_read(*args, **kw):
        rows = real(*args, **kw)
        a.store([pred("p2", t=T0 + 1)])       # committed after the read, before the window is replaced
        return rows

    monkeypatch.setattr(a.db, "window_rows", slow_read)
    a.windows.sync(T0)
    assert list(a.labels(("m", "1"))) == ["p1", "p2"]
