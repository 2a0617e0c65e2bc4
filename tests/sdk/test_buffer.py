"""The disk buffer: bounded (oldest dropped and counted), acknowledged-only deletes, restarts, back-off."""

from __future__ import annotations

import threading

import pytest

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_ml import semconv as sc
from otel_ml.buffer import SQLiteBuffer
from otel_ml.config import MLConfig
from otel_ml.durable import DurableLogRecordProcessor
from otel_ml.pipeline import MLPipeline


class RecordingExporter(LogRecordExporter):
    """Fails while ``down`` is set (like an unreachable receiver); records what it accepted."""

    def __init__(self, down: bool = False, hang: threading.Event | None = None):
        self.down = down
        self.hang = hang
        self.accepted: list = []
        self.attempts = 0

    def export(self, batch):
        self.attempts += 1
        if self.hang is not None:
            self.hang.wait()
        if self.down:
            return LogRecordExportResult.FAILURE
        self.accepted.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


def _emit(provider: LoggerProvider, n: int, start: int = 0) -> None:
    logger = provider.get_logger("test")
    for i in range(start, start + n):
        logger.emit(event_name=sc.EVENT_PREDICTION, attributes={sc.ML_PREDICTION_ID: f"p{i}", "x": float(i)})


def test_bounded_buffer_drops_oldest_first_and_counts_across_reopen(tmp_path):
    path = str(tmp_path / "b.db")
    buf = SQLiteBuffer(path, max_bytes=1000)
    dropped = sum(buf.append([f"{i:0100d}".encode()]) for i in range(30))
    assert dropped == 20 and len(buf) == 10 and buf.bytes == 1000
    assert [int(p) for _, p in buf.oldest(100)] == list(range(20, 30))
    buf.close()
    again = SQLiteBuffer(path, max_bytes=1000)
    assert len(again) == 10 and again.bytes == 1000 and again.dropped_total == 20


def test_records_deleted_only_after_ack_and_sent_after_restart(tmp_path):
    path = str(tmp_path / "b.db")
    down = RecordingExporter(down=True)
    proc = DurableLogRecordProcessor(down, path, export_interval_ms=20, shutdown_timeout_ms=200)
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(proc)
    _emit(provider, 25)
    assert proc.force_flush(1000) is False, "the receiver is down: nothing acknowledged"
    assert down.attempts >= 1 and down.accepted == []
    provider.shutdown()                                   # ships for 200 ms, keeps the rest
    assert len(SQLiteBuffer(path)) == 25

    up = RecordingExporter()
    proc2 = DurableLogRecordProcessor(up, path, export_interval_ms=20, batch_size=10)
    assert proc2.force_flush(10_000) is True
    ids = [r.log_record.attributes[sc.ML_PREDICTION_ID] for r in up.accepted]
    assert sorted(ids, key=lambda s: int(s[1:])) == [f"p{i}" for i in range(25)] and len(set(ids)) == 25
    assert up.accepted[0].log_record.event_name == sc.EVENT_PREDICTION
    assert up.accepted[0].log_record.attributes["x"] == 0.0
    assert len(proc2.buffer) == 0
    proc2.shutdown()


def test_shutdown_returns_while_the_exporter_hangs_and_keeps_records(tmp_path):
    path = str(tmp_path / "b.db")
    release = threading.Event()
    proc = DurableLogRecordProcessor(RecordingExporter(hang=release), path, export_interval_ms=10_000,
                                     shutdown_timeout_ms=100)
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(proc)
    _emit(provider, 5)
    provider.shutdown()
    assert len(SQLiteBuffer(path)) == 5
    release.set()


def test_buffer_full_is_counted_in_the_dropped_metric(tmp_path):
    reader = InMemoryMetricReader()
    config = MLConfig.from_env({}, buffer_path=str(tmp_path / "b.db"), buffer_max_bytes=2000,
                               export_interval_ms=60_000, logging_bridge=False)
    pipe = MLPipeline(config, meter_provider=MeterProvider(metric_readers=[reader]),
                      log_exporter=RecordingExporter(down=True))
    _emit(pipe.logger_provider, 50)
    pipe.durable.write_pending()
    points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics if m.name == sc.METRIC_CLIENT_BUFFER_DROPPED for p in m.data.data_points]
    assert len(points) == 1 and points[0].attributes[sc.ML_DROP_REASON] == sc.DROP_BUFFER_FULL
    assert points[0].value == pipe.durable.buffer.dropped_total > 0
    assert pipe.durable.buffer.bytes <= 2000
    pipe.shutdown()


def test_config_from_env_code_wins_and_bad_values_are_ignored():
    env = {sc.ENV_SAMPLE_RATIO: "0.25", sc.ENV_EXPORT_INTERVAL: "250", sc.ENV_BUFFER_MAX_BYTES: "lots",
           sc.ENV_BUFFER_PATH: "", sc.ENV_LOGGING_BRIDGE: "false"}
    cfg = MLConfig.from_env(env, shutdown_timeout_ms=10)
    assert (cfg.sample_ratio, cfg.export_interval_ms, cfg.buffer_path, cfg.logging_bridge) == (0.25, 250, "", False)
    assert cfg.buffer_max_bytes == MLConfig().buffer_max_bytes and cfg.shutdown_timeout_ms == 10
    assert MLConfig.from_env(env, sample_ratio=0.5).sample_ratio == 0.5


def test_forked_worker_gets_its_own_threads_and_writes_the_shared_buffer(tmp_path):
    """A pre-fork server (gunicorn) instruments in the parent; a child's predictions still land on disk."""
    import multiprocessing
    import sqlite3

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from otel_ml.instrumentation import MLInstrumentor

    path = tmp_path / "b.db"
    inst = MLInstrumentor()
    inst.instrument(buffer_path=str(path), log_exporter=RecordingExporter(down=True), export_interval_ms=60_000,
                    model_name="forked", model_version="1", logging_bridge=False)
    try:
        X = np.arange(20.0).reshape(10, 2)
        model = LogisticRegression().fit(X, [0, 1] * 5)

        def child():
            model.predict(X[:4])
            assert inst.pipeline.recorder.flush(30)
            inst.pipeline.durable.write_pending()

        proc = multiprocessing.get_context("fork").Process(target=child)
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT count(*) FROM records WHERE CAST(payload AS TEXT) LIKE '%\"ml.prediction\"%'"
                                ).fetchone()[0]
        assert rows == 4
    finally:
        inst.uninstrument()


@pytest.mark.parametrize("delivered", [True, False])
def test_records_dropped_while_in_flight_are_counted_only_if_the_send_fails(tmp_path, delivered):
    buf = SQLiteBuffer(str(tmp_path / "b.db"), max_bytes=1000)
    buf.append([b"x" * 100] * 10)                # full
    batch = buf.oldest(4)                        # being sent
    assert buf.append([b"y" * 100] * 6) == 2     # 6 oldest dropped: 4 in flight (not counted yet) + 2
    assert buf.dropped_total == 2
    if delivered:
        buf.delete(rowid for rowid, _ in batch)  # acknowledged: the 4 were delivered, not lost
        assert buf.dropped_total == 2
    else:
        assert buf.release() == 4                # not acknowledged: now they are lost
        assert buf.dropped_total == 6
    assert len(buf) == 10 and buf.bytes == 1000
