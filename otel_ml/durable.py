"""A LogRecordProcessor that keeps records on disk until the receiver acknowledged them.

``DurableLogRecordProcessor`` sits where a ``BatchLogRecordProcessor`` would, in front of any
OTel ``LogRecordExporter`` (normally the OTLP one, configured by the standard
``OTEL_EXPORTER_OTLP_*`` variables):

- ``on_emit`` only encodes the record and appends it to an in-memory list (no I/O);
- a writer thread commits that list to the SQLite buffer (``otel_ml.buffer``) every 100 ms;
- a shipper thread sends the oldest records in batches every export interval, deletes them
  when ``export`` reports success (the receiver answered; records it rejected as duplicates
  count as delivered), and backs off exponentially while the receiver is unreachable;
- ``shutdown`` writes what is in memory to disk, ships for at most ``shutdown_timeout_ms``
  and leaves the rest on disk, where the next process using the same file sends it.

What a SIGKILL can lose is what was not yet committed: the records of the last write
interval (100 ms). Anything committed survives and is sent after the restart.

Example::

    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from otel_ml.durable import DurableLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(
        DurableLogRecordProcessor(OTLPLogExporter(), "/var/lib/app/otel-ml.db", export_interval_ms=1000))
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import weakref
from typing import Callable, List, Optional

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import TraceFlags

from otel_ml.buffer import SQLiteBuffer

_log = logging.getLogger(__name__)

WRITE_INTERVAL_S = 0.1
_MAX_PENDING_BEFORE_WAKE = 4096


def encode_record(rec: ReadWriteLogRecord) -> bytes:
    """One log record as compact JSON bytes (what the buffer stores)."""
    lr = rec.log_record
    scope = rec.instrumentation_scope
    doc = {
        "t": lr.timestamp, "o": lr.observed_timestamp,
        "tr": lr.trace_id or 0, "sp": lr.span_id or 0, "f": int(lr.trace_flags or 0),
        "sn": lr.severity_number.value if lr.severity_number is not None else None,
        "st": lr.severity_text, "e": lr.event_name, "b": lr.body,
        "a": dict(lr.attributes) if lr.attributes else None,
        "s": [scope.name, scope.version] if scope is not None else None,
    }
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def decode_record(payload: bytes, resource: Resource) -> ReadableLogRecord:
    """The exporter-ready record stored by :func:`encode_record`."""
    d = json.loads(payload)
    lr = LogRecord(
        timestamp=d["t"], observed_timestamp=d["o"], trace_id=d["tr"], span_id=d["sp"],
        trace_flags=TraceFlags(d["f"]), severity_text=d["st"],
        severity_number=SeverityNumber(d["sn"]) if d["sn"] is not None else None,
        body=d["b"], attributes=d["a"], event_name=d["e"],
    )
    scope = InstrumentationScope(d["s"][0], d["s"][1]) if d["s"] else None
    return ReadableLogRecord(log_record=lr, resource=resource, instrumentation_scope=scope)


class DurableLogRecordProcessor(LogRecordProcessor):
    """Buffer records in SQLite, ship them over ``exporter``, delete them once acknowledged."""

    def __init__(
        self,
        exporter: LogRecordExporter,
        buffer: "SQLiteBuffer | str",
        *,
        max_bytes: int = 100 * 1024 * 1024,
        export_interval_ms: int = 1000,
        batch_size: int = 512,
        shutdown_timeout_ms: int = 5000,
        resource: Optional[Resource] = None,
        on_dropped: Optional[Callable[[int], None]] = None,
    ) -> None:
        self._exporter = exporter
        self.buffer = buffer if isinstance(buffer, SQLiteBuffer) else SQLiteBuffer(buffer, max_bytes)
        self._interval = max(0.01, export_interval_ms / 1000.0)
        # Back off up to 8 intervals (at most 30 s) while the receiver is down.
        self._max_backoff = min(30.0, max(self._interval, 8 * self._interval))
        self._batch_size = max(1, int(batch_size))
        self._shutdown_timeout = shutdown_timeout_ms / 1000.0
        # Records from a previous run are sent with this process's resource (same service).
        self._resource = resource or Resource.create()
        self._on_dropped = on_dropped
        self._pending: collections.deque = collections.deque()
        self._ship_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_writer = threading.Event()
        self._wake_shipper = threading.Event()
        self._failures = 0
        self._shut = False
        self._start_threads()
        # After a fork the child has no threads and must not reuse the parent's SQLite handles;
        # parent and children then share the file (a record two of them send is a duplicate
        # prediction id, which the processor keeps once).
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (lambda p: p._after_fork() if p is not None else None)(ref()))

    def _start_threads(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="otel-ml-buffer-writer", daemon=True)
        self._shipper = threading.Thread(target=self._ship_loop, name="otel-ml-buffer-shipper", daemon=True)
        self._writer.start()
        self._shipper.start()

    def _after_fork(self) -> None:
        self._pending.clear()                # the parent writes what it holds itself
        self.buffer.after_fork()
        self._ship_lock = threading.Lock()
        if not self._shut:
            self._stop, self._wake_writer, self._wake_shipper = threading.Event(), threading.Event(), threading.Event()
            self._start_threads()

    # -- request side ------------------------------------------------------------------------
    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._shut:
            return
        try:
            self._pending.append(encode_record(log_record))
        except Exception:  # noqa: BLE001 - telemetry must never break the caller
            _log.exception("otel-ml: could not encode a log record; dropped")
            return
        if len(self._pending) >= _MAX_PENDING_BEFORE_WAKE:
            self._wake_writer.set()

    # -- writer ------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake_writer.wait(WRITE_INTERVAL_S)
            self._wake_writer.clear()
            self.write_pending()

    def write_pending(self) -> int:
        """Commit what is in memory to disk now; return how many records were written."""
        batch: List[bytes] = []
        try:
            while True:
                batch.append(self._pending.popleft())
        except IndexError:
            pass
        if not batch:
            return 0
        try:
            dropped = self.buffer.append(batch)
        except Exception:  # noqa: BLE001 - e.g. disk full: put them back, retry next time
            _log.exception("otel-ml: could not write %d records to %s", len(batch), self.buffer.path)
            self._pending.extendleft(reversed(batch))
            return 0
        if dropped and self._on_dropped is not None:
            try:
                self._on_dropped(dropped)
            except Exception:  # noqa: BLE001
                _log.exception("otel-ml: drop callback failed")
        return len(batch)

    # -- shipper -----------------------------------------------------------------------------
    def _ship_loop(self) -> None:
        delay = self._interval
        while not self._stop.is_set():
            self._wake_shipper.wait(delay)
            self._wake_shipper.clear()
            if self._stop.is_set():
                break
            ok = self.ship(deadline=None)
            delay = self._interval if ok else min(self._max_backoff, max(delay, self._interval) * 2)

    def ship_once(self) -> Optional[int]:
        """Send the oldest batch: its size when acknowledged (0 when empty), None when it failed."""
        with self._ship_lock:
            rows = self.buffer.oldest(self._batch_size)
            if not rows:
                return 0
            records = []
            bad = []
            for rowid, payload in rows:
                try:
                    records.append(decode_record(payload, self._resource))
                except Exception:  # noqa: BLE001 - a corrupt row must not block the queue forever
                    bad.append(rowid)
            if bad:
                _log.error("otel-ml: %d undecodable buffered records deleted", len(bad))
                self.buffer.delete(bad)
            try:
                result = self._exporter.export(records) if records else LogRecordExportResult.SUCCESS
            except Exception:  # noqa: BLE001 - exporters should not raise, but do not trust it
                _log.exception("otel-ml: export failed")
                result = LogRecordExportResult.FAILURE
            if result != LogRecordExportResult.SUCCESS:
                lost = self.buffer.release()
                if lost and self._on_dropped is not None:
                    self._on_dropped(lost)
                self._failures += 1
                if self._failures == 1:
                    _log.warning("otel-ml: receiver unreachable; %d records kept in %s, retrying with back-off",
                                 len(self.buffer), self.buffer.path)
                return None
            if self._failures:
                _log.info("otel-ml: receiver reachable again after %d failed attempts", self._failures)
                self._failures = 0
            self.buffer.delete(rowid for rowid, _ in rows)
            return len(rows)

    def ship(self, deadline: Optional[float]) -> bool:
        """Ship batches until the buffer is empty (True) or an export fails or time runs out (False)."""
        while True:
            n = self.ship_once()
            if n is None:
                return False
            if n == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    # -- LogRecordProcessor ------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write memory to disk, then ship until empty, an export fails, or the timeout."""
        self.write_pending()
        return self.ship(deadline=time.monotonic() + timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Stop the threads; ship for at most ``shutdown_timeout_ms``; keep the rest on disk."""
        if self._shut:
            return
        self._shut = True
        self._stop.set()
        self._wake_writer.set()
        self._wake_shipper.set()
        self._writer.join(timeout=5)
        self.write_pending()
        deadline = time.monotonic() + self._shutdown_timeout
        # Ship in a daemon thread: an exporter stuck on a dead receiver cannot hold the exit.
        final = threading.Thread(target=self.ship, args=(deadline,), name="otel-ml-final-ship", daemon=True)
        self._shipper.join(timeout=max(0.0, deadline - time.monotonic()))
        final.start()
        final.join(timeout=max(0.0, deadline - time.monotonic()))
        if final.is_alive():
            _log.warning("otel-ml: shutdown timeout; %d records stay in %s for the next start",
                         len(self.buffer), self.buffer.path)
        else:
            self._exporter.shutdown()
