"""The buffer and the outbox: bounded (oldest dropped and counted), acknowledged-only deletes,
restarts, batches within their bounds, an older buffer file converted, forked workers."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_ml import semconv as sc
from otel_ml import wire
from otel_ml.buffer import MemoryBuffer, SQLiteBuffer
from otel_ml.config import MLConfig
from otel_ml.events import EventEncoder
from otel_ml.outbox import Outbox, legacy_record
from otel_ml.pipeline import MLPipeline

from .conftest import CaptureSender, parse_request

ENC = EventEncoder()
RESOURCE = wire.resource_bytes({"service.name": "buffer-test"})
SCOPE = wire.scope_bytes(sc.INSTRUMENTATION_NAME, "test")


def _records(n: int, start: int = 0) -> list:
    return [ENC.event(sc.EVENT_PREDICTION, {sc.ML_PREDICTION_ID: f"p{i}", "x": float(i)}, time_ns=i + 1)
            for i in range(start, start + n)]


def _outbox(buffer, sender, **kw) -> Outbox:
    kw.setdefault("export_interval_ms", 60_000)
    return Outbox(buffer, sender, resource=RESOURCE, scope=SCOPE, **kw)


def _buffers(tmp_path, max_bytes):
    return {"sqlite": lambda: SQLiteBuffer(str(tmp_path / "b.db"), max_bytes=max_bytes),
            "memory": lambda: MemoryBuffer(max_bytes=max_bytes)}


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_bounded_buffer_drops_oldest_runs_first_and_counts_their_records(tmp_path, kind):
    buf = _buffers(tmp_path, 1000)[kind]()
    dropped = sum(buf.append([(f"{i:0100d}".encode(), 2)]) for i in range(30))
    assert dropped == 40 and len(buf) == 20 and buf.bytes == 1000 and buf.dropped_total == 40
    assert [int(p) for _, p, _ in buf.oldest(100)] == list(range(20, 30))
    assert [int(p) for _, p, _ in buf.oldest(5)] == [20, 21], "whole runs, never past the record limit"
    assert [int(p) for _, p, _ in buf.oldest(100, max_bytes=250)] == [20, 21]
    assert [int(p) for _, p, _ in buf.oldest(1, max_bytes=1)] == [20], "at least one run"


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_full_buffer_cuts_the_oldest_records_off_a_run_not_the_whole_run(tmp_path, kind):
    records = [ENC.event(sc.EVENT_PREDICTION, {sc.ML_PREDICTION_ID: f"p{i:02d}"}, time_ns=1) for i in range(20)]
    size = len(records[0])
    assert all(len(r) == size for r in records)
    buf = _buffers(tmp_path, 17 * size)[kind]()
    assert buf.append([(b"".join(records[:10]), 10)]) == 0
    assert buf.append([(b"".join(records[10:]), 10)]) == 3, "three records over the bound: three dropped"
    assert len(buf) == 17 and buf.bytes == 17 * size and buf.dropped_total == 3
    runs = [p for _, p, _ in buf.oldest(100)]
    assert [n for _, _, n in buf.oldest(100)] == [7, 10]
    events = parse_request(wire.logs_request(RESOURCE, SCOPE, runs))
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == [f"p{i:02d}" for i in range(3, 20)]


def test_counts_survive_reopening_the_file(tmp_path):
    path = str(tmp_path / "b.db")
    buf = SQLiteBuffer(path, max_bytes=1000)
    for i in range(30):
        buf.append([(f"{i:0100d}".encode(), 3)])
    buf.close()
    again = SQLiteBuffer(path, max_bytes=1000)
    assert len(again) == 30 and again.bytes == 1000 and again.dropped_total == 60


def test_records_deleted_only_after_ack_and_sent_after_restart(tmp_path):
    path = str(tmp_path / "b.db")
    down = CaptureSender(down=True)
    box = _outbox(SQLiteBuffer(path), down, shutdown_timeout_ms=200, batch_size=10)
    box.put(_records(25))
    assert box.force_flush(1000) is False, "the receiver is down: nothing acknowledged"
    assert down.attempts >= 1 and down.requests == []
    box.shutdown()                                        # ships for 200 ms, keeps the rest
    assert len(SQLiteBuffer(path)) == 25

    up = CaptureSender()
    box2 = _outbox(SQLiteBuffer(path), up, batch_size=10)
    assert box2.force_flush(10_000) is True
    assert [len(parse_request(body)) for body in up.requests] == [10, 10, 5]
    events = up.events()
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in events] == [f"p{i}" for i in range(25)]
    assert events[0].event_name == sc.EVENT_PREDICTION and events[0].attributes["x"] == 0.0
    assert events[0].resource == {"service.name": "buffer-test"} and events[0].scope == (sc.INSTRUMENTATION_NAME, "test")
    assert len(box2.buffer) == 0
    box2.shutdown()


def test_runs_and_requests_keep_their_bounds(tmp_path):
    sender = CaptureSender()
    box = _outbox(SQLiteBuffer(str(tmp_path / "b.db")), sender, batch_size=512)
    box.put(_records(1300))
    assert box.commit() == 1300
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert [n for (n,) in conn.execute("select count from records order by id")] == [512, 512, 276]
    box.put(_records(100, start=1300))
    assert box.force_flush(10_000)
    sizes = [len(parse_request(body)) for body in sender.requests]
    assert sizes == [512, 512, 276, 100] or sizes == [512, 512, 376], sizes
    assert [e.attributes[sc.ML_PREDICTION_ID] for e in sender.events()] == [f"p{i}" for i in range(1400)]
    box.shutdown()


def test_shutdown_returns_while_the_sender_hangs_and_keeps_records(tmp_path):
    path = str(tmp_path / "b.db")
    release = threading.Event()

    class Hanging(CaptureSender):
        def send(self, body, timeout=None):
            release.wait()
            return super().send(body, timeout)

    box = _outbox(SQLiteBuffer(path), Hanging(), export_interval_ms=10_000, shutdown_timeout_ms=100)
    box.put(_records(5))
    box.shutdown()
    assert len(SQLiteBuffer(path)) == 5
    release.set()


def test_buffer_full_is_counted_in_the_dropped_metric(tmp_path):
    reader = InMemoryMetricReader()
    config = MLConfig.from_env({}, buffer_path=str(tmp_path / "b.db"), buffer_max_bytes=2000,
                               export_interval_ms=60_000, logging_bridge=False)
    pipe = MLPipeline(config, meter_provider=MeterProvider(metric_readers=[reader]), sender=CaptureSender(down=True))
    for i in range(50):
        pipe.record(sc.EVENT_LABEL, {sc.ML_PREDICTION_ID: f"p{i}", sc.ML_LABEL_VALUE: "1"}, i + 1)
        pipe.outbox.commit()                   # one run per record: the oldest go one by one
    points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics if m.name == sc.METRIC_CLIENT_BUFFER_DROPPED for p in m.data.data_points]
    assert len(points) == 1 and points[0].attributes[sc.ML_DROP_REASON] == sc.DROP_BUFFER_FULL
    assert points[0].value == pipe.outbox.buffer.dropped_total > 0
    assert pipe.outbox.buffer.bytes <= 2000
    assert len(pipe.outbox.buffer) + pipe.outbox.buffer.dropped_total == 50
    pipe.shutdown()


def test_records_wait_in_memory_while_the_disk_fails_within_the_bound_and_counted():
    class Broken(MemoryBuffer):
        broken = True

        def append(self, runs):
            if self.broken:
                raise OSError("disk full")
            return super().append(runs)

    dropped = []
    buf = Broken(max_bytes=1000)
    box = _outbox(buf, CaptureSender(), on_dropped=dropped.append)
    records = _records(40)
    for i in range(0, 40, 10):
        box.put(records[i:i + 10])
        assert box.commit() == 0                  # the write failed: kept in memory, up to the bound
    assert sum(dropped) > 0 and buf.dropped_total == sum(dropped)
    buf.broken = False
    kept = box.commit()
    assert kept + sum(dropped) == 40 and sum(map(len, records[-kept:])) <= 1000
    assert box.force_flush(10_000)
    ids = [e.attributes[sc.ML_PREDICTION_ID] for e in box.sender.events()]
    assert ids == [f"p{i}" for i in range(40 - kept, 40)], "the oldest went first"
    box.shutdown()


def test_config_from_env_code_wins_and_bad_values_are_ignored():
    env = {sc.ENV_SAMPLE_RATIO: "0.25", sc.ENV_EXPORT_INTERVAL: "250", sc.ENV_BUFFER_MAX_BYTES: "lots",
           sc.ENV_BUFFER_PATH: "", sc.ENV_LOGGING_BRIDGE: "false"}
    cfg = MLConfig.from_env(env, shutdown_timeout_ms=10)
    assert (cfg.sample_ratio, cfg.export_interval_ms, cfg.buffer_path, cfg.logging_bridge) == (0.25, 250, "", False)
    assert cfg.buffer_max_bytes == MLConfig().buffer_max_bytes and cfg.shutdown_timeout_ms == 10
    assert MLConfig.from_env(env, sample_ratio=0.5).sample_ratio == 0.5


def test_a_buffer_file_of_the_older_layout_is_converted_and_shipped(tmp_path):
    """Records left on disk by an otel-ml that stored one JSON record per row still reach the hub."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)")
        conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("INSERT INTO counters VALUES ('dropped', 7)")
        for i in range(3):
            doc = {"t": 1000 + i, "o": 2000 + i, "tr": 5, "sp": 6, "f": 1, "sn": None, "st": None,
                   "e": sc.EVENT_PREDICTION, "b": None,
                   "a": {sc.ML_PREDICTION_ID: f"old{i}", "x": 1.5, "ok": True}, "s": ["otel_ml", "0.1"]}
            conn.execute("INSERT INTO records (payload) VALUES (?)", (json.dumps(doc).encode(),))
        conn.execute("INSERT INTO records (payload) VALUES (?)", (b"not json",))
    sender = CaptureSender()
    box = _outbox(SQLiteBuffer(str(path), legacy=legacy_record(ENC)), sender)
    assert box.buffer.dropped_total == 8, "the unreadable old record is counted as dropped"
    assert box.force_flush(10_000)
    events = sender.events()
    assert [e.attributes for e in events] == [{sc.ML_PREDICTION_ID: f"old{i}", "x": 1.5, "ok": True} for i in range(3)]
    assert [(e.timestamp, e.observed_timestamp, e.trace_id, e.span_id, e.flags) for e in events] == [
        (1000 + i, 2000 + i, 5, 6, 1) for i in range(3)]
    box.shutdown()


def test_forked_worker_gets_its_own_threads_and_writes_the_shared_buffer(tmp_path):
    """A pre-fork server (gunicorn) instruments in the parent; a child's predictions still land on disk."""
    import multiprocessing

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from otel_ml.instrumentation import MLInstrumentor

    path = tmp_path / "b.db"
    inst = MLInstrumentor()
    inst.instrument(buffer_path=str(path), sender=CaptureSender(down=True), export_interval_ms=60_000,
                    model_name="forked", model_version="1", logging_bridge=False)
    try:
        X = np.arange(20.0).reshape(10, 2)
        model = LogisticRegression().fit(X, [0, 1] * 5)

        def child():
            model.predict(X[:4])
            assert inst.pipeline.recorder.flush(30)
            inst.pipeline.outbox.commit()

        proc = multiprocessing.get_context("fork").Process(target=child)
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        with sqlite3.connect(path) as conn:
            runs = [p for (p,) in conn.execute("SELECT payload FROM records")]
        events = parse_request(wire.logs_request(RESOURCE, SCOPE, runs))
        assert sorted(e.attributes[sc.ML_PREDICTION_ID][-1] for e in events if e.event_name == sc.EVENT_PREDICTION) \
            == ["0", "1", "2", "3"]
    finally:
        inst.uninstrument()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@pytest.mark.parametrize("delivered", [True, False])
def test_records_dropped_while_in_flight_are_counted_only_if_the_send_fails(tmp_path, delivered, kind):
    buf = _buffers(tmp_path, 1000)[kind]()
    buf.append([(b"x" * 100, 1)] * 10)          # full
    batch = buf.oldest(4)                        # being sent
    assert buf.append([(b"y" * 100, 1)] * 6) == 2     # 6 oldest dropped: 4 in flight (not counted yet) + 2
    assert buf.dropped_total == 2
    if delivered:
        buf.delete(rowid for rowid, _, _ in batch)  # acknowledged: the 4 were delivered, not lost
        assert buf.dropped_total == 2
    else:
        assert buf.release() == 4                # not acknowledged: now they are lost
        assert buf.dropped_total == 6
    assert len(buf) == 10 and buf.bytes == 1000
