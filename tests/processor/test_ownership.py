"""Ownership, labels through the database, and the two windows, at the compute stage's level.

Replicas' stages (a Database and ModelWindows each, as ``service.py`` wires them) on one real
SQLite file; the real-process versions are ``tests/storage/test_replicas_pg.py`` (PostgreSQL)
and ``tests/e2e/test_windows_e2e.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sqlalchemy import update

from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.compute import manager
from otel_ml_processor.compute.engine import compute_model_metrics
from otel_ml_processor.compute.manager import Committed, ModelWindows
from otel_ml_processor.config import parse_config
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.store import schema
from otel_ml_processor.store.database import Database

T0 = 1_700_000_000.0


def pred(pid: str, model: str = "m", t: float = T0, label: str = "1", x: float = 1.0) -> PredictionRecord:
    return PredictionRecord(model=model, model_version="1", prediction_id=pid, task="classification", time=t,
                            features={"x": x}, output_label=label)


class Replica:
    """One replica's database handle and windows (models m and n: reference first_n, window size)."""

    def __init__(self, url: str, name: str, first_n: int = 1, size: int = 10000):
        models = [{"name": m, "reference": {"first_n": first_n}, "window": {"size": size}} for m in ("m", "n")]
        self.config = parse_config({"models": models})
        self.db = Database(url, replica=name)
        self.windows = ModelWindows(self.config, self.db, Caps(100, 500, Counters(), initial_models=["m", "n"]))

    def store(self, records: list, now: float = T0) -> None:
        """Predictions through this replica, as its writer thread stores and hands them."""
        write = self.db.insert_predictions(records, now=now)
        self.windows.committed(Committed(write.inserted, write.ids, now, write.joined))

    def label(self, records: list, now: float = T0) -> None:
        """Labels through this replica (joined here: handed to its windows, not polled)."""
        self.windows.committed(Committed(received_at=now, joins=self.db.upsert_labels(records, now=now).joined))

    def windows_of(self, key: tuple = ("m", "1"), now: float = T0) -> tuple:
        (found,) = [(w, lw) for k, w, lw in self.windows.snapshots(now) if k == key]
        return found

    def labels(self, key: tuple = ("m", "1")) -> dict:
        window, _labeled = self.windows_of(key)
        return dict(zip(window.prediction_ids.tolist(), window.label.tolist()))


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def replicas(url):
    a, b = Replica(url, "a"), Replica(url, "b")
    yield a, b
    a.db.close()
    b.db.close()


def test_windows_follow_ownership_and_labels_reach_the_owner(replicas):
    a, b = replicas
    a.store([pred("r0"), pred("p1"), pred("p2"), pred("s0", model="n"), pred("q1", model="n")])
    assert a.windows.snapshots(T0) == []              # live arrivals only: filled at the next sync
    sync = a.windows.sync(T0)
    assert sync.owned == sync.rebuilt == [("m", "1"), ("n", "1")] and sync.loaded == 3
    assert b.windows.sync(T0).owned == []
    b.db.upsert_labels([LabelRecord("m", "p1", "0", T0)], now=T0)     # entered through the other replica
    assert a.windows.sync(T0).labels == 1
    assert a.labels() == {"p1": "0", "p2": None}
    # b stores a newer prediction of m: b owns it, with a's rows; a drops it at its next sync.
    b.store([pred("p3", t=T0 + 1)])
    sync = b.windows.sync(T0)
    assert sync.owned == sync.rebuilt == [("m", "1")]
    assert b.labels() == {"p1": "0", "p2": None, "p3": None}
    assert b.windows_of()[1].prediction_ids.tolist() == ["p1"]
    sync = a.windows.sync(T0)
    assert sync.lost == [("m", "1")] and sync.owned == [("n", "1")] and a.windows.keys == [("n", "1")]
    # ...and takes it back with the next prediction it stores: filled again, b's row included.
    a.store([pred("p4", t=T0 + 2)])
    assert a.windows.sync(T0).rebuilt == [("m", "1")]
    assert list(a.labels()) == ["p1", "p2", "p3", "p4"]
    assert b.windows.sync(T0).lost == [("m", "1")]


def test_a_change_committed_late_is_read_once(replicas):
    """A poll looks back LABEL_POLL_OVERLAP seconds before the previous one, and skips what it applied."""
    a, b = replicas
    a.store([pred("r0"), pred("p1"), pred("p2")])
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
    assert a.labels() == {"p1": "1", "p2": "0"}
    b.db.upsert_labels([LabelRecord("m", "p2", "1", T0)], now=T0)      # replaced: a change again
    assert a.windows.sync(T0).labels == 1 and a.labels()["p2"] == "1"
    assert a.windows_of()[1].label.tolist() == ["1", "1"]


def test_rows_committed_while_a_window_is_filled_are_kept(replicas, monkeypatch):
    a, _b = replicas
    a.store([pred("r0"), pred("p1")])
    real = a.db.window_rows

    def slow_read(*args, **kw):
        rows = real(*args, **kw)
        a.store([pred("p2", t=T0 + 1)])       # committed after the read, before the window is replaced
        return rows

    monkeypatch.setattr(a.db, "window_rows", slow_read)
    a.windows.sync(T0)
    assert list(a.labels()) == ["p1", "p2"]


def test_the_first_n_reference_is_not_in_the_window(url):
    """Until first_n predictions are stored the window is empty; then it holds what came after them
    (by arrival, whatever their record times), and the reference the engine gets is the first_n."""
    r = Replica(url, "a", first_n=3, size=4)
    r.store([pred("p0", t=T0 + 9), pred("p1", t=T0 + 1)])
    r.windows.sync(T0)
    window, labeled = r.windows_of()
    assert len(window) == len(labeled) == 0 and r.windows.reference("m", "1", "classification", ["x"]) is None
    r.store([pred("p2", t=T0 + 5), pred("p3", t=T0 + 2)])      # p2 completes the reference
    sync = r.windows.sync(T0)
    assert sync.rebuilt == [("m", "1")]                      # refilled once the reference is complete
    assert r.windows_of()[0].prediction_ids.tolist() == ["p3"]
    r.store([pred(f"p{i}", t=T0 + i) for i in range(4, 9)])
    assert r.windows_of()[0].prediction_ids.tolist() == ["p5", "p6", "p7", "p8"]   # last 4 after the reference
    ref = r.windows.reference("m", "1", "classification", ["x"])
    assert ref is not None and ref.features["x"].ref.n == 3
    again = Replica(url, "a", first_n=3, size=4)               # a restart fills the same windows
    again.windows.sync(T0)
    assert again.windows_of()[0].prediction_ids.tolist() == ["p5", "p6", "p7", "p8"]
    r.db.close()
    again.db.close()


def test_labeled_window_does_not_wait_for_the_reference(url):
    """While a first_n reference fills, the window is empty and the labeled window holds the
    labeled predictions collected so far, whether the label came before the sync that filled the
    version or after it; when the reference completes, the labeled window keeps them and counts
    those after it for the baseline (DESIGN.md, "Labeled window"; issue 22)."""
    r = Replica(url, "a", first_n=10)
    r.store([pred(f"p{i}", t=T0 + i) for i in range(4)])
    r.label([LabelRecord("m", f"p{i}", "1", T0) for i in range(2)])         # joined before the first sync
    r.windows.sync(T0)
    r.label([LabelRecord("m", "p2", "0", T0)])                                # joined after it
    r.windows.sync(T0)
    window, labeled = r.windows_of()
    assert len(window) == 0 and sorted(labeled.prediction_ids.tolist()) == ["p0", "p1", "p2"]
    assert r.windows.progress("m", "1") == (4, 10, None)                     # collecting: 4 of 10
    r.store([pred(f"p{i}", t=T0 + i) for i in range(4, 14)])
    r.label([LabelRecord("m", f"p{i}", "1", T0) for i in (9, 12)])           # one in the reference, one after
    r.windows.sync(T0)
    window, labeled = r.windows_of()
    assert window.prediction_ids.tolist() == ["p10", "p11", "p12", "p13"]
    assert labeled.prediction_ids.tolist() == ["p0", "p1", "p2", "p9", "p12"]
    assert r.windows.progress("m", "1") == (10, 10, 1)


def test_labels_of_predictions_that_left_the_window_count(url):
    """The labeled window: the last `size` labeled predictions (the reference's too), from the
    database when they left the window; the engine's performance is on it."""
    rng = np.random.default_rng(3)
    r = Replica(url, "a", first_n=2, size=5)
    predicted = [str(v) for v in rng.integers(0, 2, 40)]
    r.store([pred(f"p{i}", t=T0 + i, label=predicted[i]) for i in range(40)])
    r.windows.sync(T0)
    truth = {i: str(rng.integers(0, 2)) for i in range(0, 30)}       # none of the last ten
    r.label([LabelRecord("m", f"p{i}", v, T0) for i, v in truth.items()])
    assert r.windows.sync(T0).fetched == 5                            # only the rows it keeps are read
    window, labeled = r.windows_of()
    assert window.prediction_ids.tolist() == [f"p{i}" for i in range(35, 40)]
    assert labeled.prediction_ids.tolist() == [f"p{i}" for i in range(25, 30)]
    # an older label changes nothing; a newer one pushes the oldest out (this one entered elsewhere)
    Database(url, replica="b").upsert_labels([LabelRecord("m", "p3", "1", T0), LabelRecord("m", "p37", "0", T0)], now=T0)
    truth[37] = "0"
    r.windows.sync(T0)
    window, labeled = r.windows_of()
    assert labeled.prediction_ids.tolist() == ["p26", "p27", "p28", "p29", "p37"]
    assert labeled.label.tolist() == [truth[i] for i in (26, 27, 28, 29, 37)]
    metrics = compute_model_metrics(window, None, r.windows.spec("m"), labeled=labeled)
    rows = (26, 27, 28, 29, 37)
    assert metrics.window_labeled == 5
    assert math.isclose(metrics.performance["accuracy"],
                        accuracy_score([truth[i] for i in rows], [predicted[i] for i in rows]), rel_tol=1e-9)
    again = Replica(url, "a", first_n=2, size=5)                       # a restart fills the same
    again.windows.sync(T0)
    assert again.windows_of()[1].prediction_ids.tolist() == labeled.prediction_ids.tolist()
    r.db.close()
    again.db.close()
