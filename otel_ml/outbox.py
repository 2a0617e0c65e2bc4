"""Encoded records on their way to the receiver: memory, then the disk buffer, then OTLP.

- ``put`` appends framed records (``otel_ml.wire``) to a list in memory (no I/O; any thread);
- ``commit`` writes that list to the buffer (``otel_ml.buffer``) as runs of up to
  ``batch_size`` records; the recorder thread calls ``tick`` so that happens every 100 ms;
- a shipper thread sends the oldest runs every export interval as one OTLP request (a header
  and the runs' bytes concatenated, never decoded), deletes them when the receiver answered
  OK (records it rejected as duplicates count as delivered), and backs off exponentially while
  it is unreachable;
- every few seconds it adopts the records that processes which ended (or were killed) left in
  the same file (``SQLiteBuffer.adopt``): every worker of a server shares one path, and each
  stored record is shipped by one process only;
- ``shutdown`` commits what is in memory, then keeps trying, with back-off (0.1 s doubling up to
  1 s), until the receiver acknowledged everything or ``shutdown_timeout_ms`` is spent: a hub back
  within that time gets everything before the process ends. What is left stays on disk (warned
  once, with the count and the file), where a live or the next process using the file sends it.

What a SIGKILL can lose is what was not yet committed: the records of the last write interval
(100 ms). Anything committed survives and is sent after the restart. While the disk cannot be
written (full, read-only), records wait in memory up to the buffer's byte bound; past it the
oldest are dropped and counted.

Example::

    from otel_ml.buffer import SQLiteBuffer
    from otel_ml.outbox import Outbox
    from otel_ml.senders import sender_from_env
    from otel_ml.wire import resource_bytes, scope_bytes

    box = Outbox(SQLiteBuffer("/var/lib/app/otel-ml.db"), sender_from_env(),
                 resource=resource_bytes({"service.name": "api"}), scope=scope_bytes("otel_ml", "0.1"))
    box.put([record])
    box.force_flush()
    box.shutdown()
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, Callable, List, Optional

from opentelemetry.instrumentation.utils import suppress_instrumentation

from otel_ml import wire
from otel_ml.forks import call_in_child

_log = logging.getLogger(__name__)

WRITE_INTERVAL_S = 0.1
ADOPT_EVERY_S = 5.0                 # how often a live process looks for records of dead ones
FINAL_BACKOFF_S = (0.1, 1.0)        # shutdown: first and longest wait between tries
RUN_MAX_BYTES = 1 << 20             # a stored run: at most batch_size records or about 1 MiB
REQUEST_MAX_BYTES = 3 << 20         # below the 4 MiB gRPC receivers accept by default


class Outbox:
    """Buffer framed records and ship them over ``sender`` (see the module docstring)."""

    def __init__(
        self,
        buffer: Any,
        sender: Any,
        *,
        resource: bytes,
        scope: bytes,
        schema_url: str = "",
        export_interval_ms: int = 1000,
        batch_size: int = 512,
        shutdown_timeout_ms: int = 5000,
        on_dropped: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.buffer = buffer
        self.sender = sender
        self._resource, self._scope, self._schema_url = resource, scope, schema_url
        self._interval = max(0.01, export_interval_ms / 1000.0)
        # Back off up to 8 intervals (at most 30 s) while the receiver is down.
        self._max_backoff = min(30.0, max(self._interval, 8 * self._interval))
        self._batch_size = max(1, int(batch_size))
        self._shutdown_timeout = shutdown_timeout_ms / 1000.0
        self._on_dropped = on_dropped
        self._pending: List[bytes] = []
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._ship_lock = threading.Lock()
        self._last_commit = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._failures = 0
        self._shut = False
        self._start_thread()
        call_in_child(self, "_after_fork")

    def _start_thread(self) -> None:
        self._shipper = threading.Thread(target=self._ship_loop, name="otel-ml-shipper", daemon=True)
        self._shipper.start()

    def _after_fork(self) -> None:
        if self._shut:
            return                                    # nothing of a closed outbox runs in the child
        self._pending, self._pending_bytes = [], 0    # the parent writes what it holds itself
        self._pending_lock, self._commit_lock, self._ship_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self.buffer.after_fork()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._start_thread()

    # -- any thread ------------------------------------------------------------------------------
    def put(self, records: List[bytes]) -> None:
        """Queue framed records (they reach the disk at the next commit)."""
        if self._shut or not records:
            return
        size = sum(map(len, records))
        with self._pending_lock:
            self._pending.extend(records)
            self._pending_bytes += size

    def _drop_pending_locked(self, over: int) -> int:
        # The disk failed: memory holds at most the buffer's bound, the oldest go first.
        n = freed = 0
        while freed < over and n < len(self._pending):
            freed += len(self._pending[n])
            n += 1
        del self._pending[:n]
        self._pending_bytes -= freed
        return n

    def _dropped(self, n: int) -> None:
        if self._on_dropped is not None:
            try:
                self._on_dropped(n)
            except Exception:  # noqa: BLE001
                _log.exception("otel-ml: drop callback failed")

    # -- writer (the recorder thread) ----------------------------------------------------------
    def tick(self) -> None:
        """Commit if the last commit is one write interval old."""
        if self._pending and time.monotonic() - self._last_commit >= WRITE_INTERVAL_S:
            self.commit()

    def commit(self) -> int:
        """Write what is in memory to the buffer now; return how many records were written."""
        with self._commit_lock:
            self._last_commit = time.monotonic()
            with self._pending_lock:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
            if not batch:
                return 0
            runs = []
            start, size = 0, 0
            for i, rec in enumerate(batch):
                size += len(rec)
                if i + 1 - start >= self._batch_size or size >= RUN_MAX_BYTES or i + 1 == len(batch):
                    runs.append((b"".join(batch[start:i + 1]), i + 1 - start))
                    start, size = i + 1, 0
            try:
                with suppress_instrumentation():          # no sqlite span of ours in the app's traces
                    dropped = self.buffer.append(runs)
            except Exception:  # noqa: BLE001 - e.g. disk full: put them back, retry next time
                _log.exception("otel-ml: could not write %d records to %s", len(batch), self.buffer.path)
                with self._pending_lock:
                    self._pending[:0] = batch
                    self._pending_bytes += sum(map(len, batch))
                    over = self._pending_bytes - self.buffer.max_bytes
                    lost = self._drop_pending_locked(over) if over > 0 else 0
                if lost:
                    self.buffer.count_dropped(lost)
                    self._dropped(lost)
                return 0
        if dropped:
            self._dropped(dropped)
        return len(batch)

    # -- shipper ---------------------------------------------------------------------------------
    def _ship_loop(self) -> None:
        # This thread's work (SQLite reads and deletes, OTLP sends) is otel-ml's plumbing: as in
        # OpenTelemetry's own exporters, instrumentation is suppressed for all of it.
        with suppress_instrumentation():
            self._ship_loop_suppressed()

    def _ship_loop_suppressed(self) -> None:
        delay = self._interval
        adopted_at = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                break
            if time.monotonic() - adopted_at >= ADOPT_EVERY_S:
                adopted_at = time.monotonic()
                self._adopt()
            ok = self.ship(deadline=None)
            delay = self._interval if ok else min(self._max_backoff, max(delay, self._interval) * 2)

    def ship_once(self, timeout: Optional[float] = None) -> Optional[int]:
        """Send the oldest batch: its record count when acknowledged (0 when empty), None when
        the send failed."""
        with self._ship_lock:
            rows = self.buffer.oldest(self._batch_size, REQUEST_MAX_BYTES)
            if not rows:
                return 0
            body = wire.logs_request(self._resource, self._scope, [payload for _, payload, _ in rows],
                                     self._schema_url)
            try:
                ok = self.sender.send(body, timeout)
            except Exception:  # noqa: BLE001 - a sender should not raise, but do not trust it
                _log.exception("otel-ml: export failed")
                ok = False
            if not ok:
                lost = self.buffer.release()
                if lost:
                    self._dropped(lost)
                self._failures += 1
                if self._failures == 1:
                    _log.warning("otel-ml: receiver unreachable; %d records kept in %s, retrying with back-off",
                                 len(self.buffer), self.buffer.path)
                return None
            if self._failures:
                _log.info("otel-ml: receiver reachable again after %d failed attempts", self._failures)
                self._failures = 0
            self.buffer.delete(rowid for rowid, _, _ in rows)
            return sum(count for _, _, count in rows)

    def ship(self, deadline: Optional[float]) -> bool:
        """Ship batches until the buffer is empty (True) or a send fails or time runs out (False)."""
        with suppress_instrumentation():
            return self._ship(deadline)

    def _ship(self, deadline: Optional[float]) -> bool:
        while True:
            timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
            n = self.ship_once(timeout)
            if n is None:
                return False
            if n == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _adopt(self) -> None:
        try:
            with self._ship_lock:
                n = self.buffer.adopt()
            if n:
                _log.info("otel-ml: adopted %d records left in %s by processes that ended", n, self.buffer.path)
        except Exception:  # noqa: BLE001 - e.g. the file is locked for long: next time
            _log.debug("otel-ml: could not adopt records in %s", self.buffer.path, exc_info=True)

    def _final_ship(self, deadline: float) -> None:
        """Ship until everything is acknowledged or ``deadline``, backing off between tries."""
        wait = FINAL_BACKOFF_S[0]
        while not self.ship(deadline):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(wait, left))
            wait = min(FINAL_BACKOFF_S[1], wait * 2)

    # -- flush and shutdown ----------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Commit memory to disk, then ship until empty, a send fails, or the timeout."""
        self.commit()
        return self.ship(deadline=time.monotonic() + timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Stop the shipper; ship for at most ``shutdown_timeout_ms``; keep the rest on disk."""
        if self._shut:
            return
        self.commit()
        self._shut = True
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + self._shutdown_timeout
        # Ship in a daemon thread: a sender stuck on a dead receiver cannot hold the exit.
        final = threading.Thread(target=self._final_ship, args=(deadline,), name="otel-ml-final-ship", daemon=True)
        self._shipper.join(timeout=max(0.0, deadline - time.monotonic()))
        final.start()
        final.join(timeout=max(0.0, deadline - time.monotonic()) + 0.05)
        left = len(self.buffer)
        if left:
            _warn_locally("otel-ml: shutdown timeout (%.1f s) spent with the receiver unreachable; %d records stay "
                          "in %s, shipped by a live or the next process using that file",
                          self._shutdown_timeout, left, self.buffer.path)
        if not final.is_alive():
            self.sender.shutdown()
            # Nothing of ours is in flight any more: a live process may take what is left now.
            self.buffer.disown()


def _warn_locally(msg: str, *args: Any) -> None:
    """Log a warning; also on stderr when no handler would show it here (e.g. only the OTel logs
    bridge is installed, which is shutting down with the process)."""
    _log.warning(msg, *args)
    logger: Optional[logging.Logger] = _log
    handlers = 0
    while logger is not None:
        if any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
            return
        handlers += len(logger.handlers)
        logger = logger.parent if logger.propagate else None
    if handlers == 0 and logging.lastResort is not None:
        return                                # no handler at all: logging's last resort wrote it to stderr
    try:
        sys.stderr.write("WARNING " + (msg % args) + "\n")
    except (OSError, ValueError):
        pass                                  # stderr closed: nothing more to do


def legacy_record(encoder: Any) -> Callable[[bytes], bytes]:
    """Converter of a record stored by otel-ml before runs (JSON) into a framed LogRecord."""
    from otel_ml.events import TraceIds

    def convert(payload: bytes) -> bytes:
        d = json.loads(payload)
        return encoder.event(d["e"] or "", d["a"] or {}, time_ns=d["t"] or d["o"] or 0, observed_ns=d["o"] or 0,
                             trace=TraceIds(d["tr"] or 0, d["sp"] or 0, d["f"] or 0))

    return convert
