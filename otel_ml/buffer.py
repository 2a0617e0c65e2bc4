"""A bounded, crash-safe record buffer on disk: SQLite in WAL mode (stdlib ``sqlite3``).

Records are opaque byte strings kept in arrival order. The shipper reads the oldest ones,
sends them, and deletes them only once the receiver acknowledged them; a crash between the
send and the delete means a resend, which the processor drops as a duplicate prediction id.
When the stored payload bytes exceed ``max_bytes`` the oldest records are deleted first and
counted (``dropped``), never silently. A record dropped while its batch is being sent may still
be delivered by that send: its drop is counted only once the send failed (:meth:`release`), so a
record is either delivered or counted as dropped, never both.

Each thread gets its own connection (SQLite connections are not shared across threads), and
WAL lets the shipper read while the writer appends. ``synchronous=NORMAL`` in WAL mode keeps
every committed record across a process crash (SIGKILL); only an OS crash or power loss can
lose the last commits.

Example::

    from otel_ml.buffer import SQLiteBuffer

    buf = SQLiteBuffer("/tmp/otel-ml-buffer.db", max_bytes=10_000_000)
    buf.append([b"record-1", b"record-2"])
    batch = buf.oldest(512)                 # [(rowid, payload), ...]
    ...                                     # send, and on success:
    buf.delete([rowid for rowid, _ in batch])
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Iterable, List, Optional, Sequence, Tuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SQLiteBuffer:
    """A FIFO of byte records in one SQLite file, bounded by total payload bytes."""

    def __init__(self, path: str, max_bytes: int = 100 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = int(max_bytes)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()          # guards _bytes / _count / _inflight across threads
        # (first id, last id) of the batch being shipped, and how many of its records were dropped
        # meanwhile: counted as dropped only if the send fails (it may deliver them after all).
        self._inflight: Optional[Tuple[int, int]] = None
        self._dropped_inflight = 0
        conn = self._conn()
        with conn:
            conn.executescript(_SCHEMA)
        self._bytes, self._count = conn.execute(
            "SELECT coalesce(sum(length(payload)), 0), count(*) FROM records").fetchone()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @property
    def bytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return self._count

    @property
    def dropped_total(self) -> int:
        """Records dropped because the buffer was full, over the file's whole life."""
        row = self._conn().execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def append(self, payloads: Sequence[bytes]) -> int:
        """Store ``payloads`` in one transaction; return how many old records were dropped to fit."""
        if not payloads:
            return 0
        conn = self._conn()
        added = sum(len(p) for p in payloads)
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO records (payload) VALUES (?)", ((p,) for p in payloads))
                self._bytes += added
                self._count += len(payloads)
                dropped = self._drop_oldest_locked(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._bytes -= added
                self._count -= len(payloads)
                raise
        return dropped

    def _drop_oldest_locked(self, conn: sqlite3.Connection) -> int:
        excess = self._bytes - self.max_bytes
        if excess <= 0:
            return 0
        # Walk the oldest rows until their bytes cover the excess, then delete exactly those.
        lo, hi = self._inflight or (0, -1)
        last_id, freed, n, in_flight = None, 0, 0, 0
        for rowid, size in conn.execute("SELECT id, length(payload) FROM records ORDER BY id"):
            last_id, freed, n = rowid, freed + size, n + 1
            in_flight += lo <= rowid <= hi
            if freed >= excess:
                break
        if last_id is None:
            return 0
        conn.execute("DELETE FROM records WHERE id <= ?", (last_id,))
        self._count_dropped(conn, n - in_flight)
        self._dropped_inflight += in_flight
        self._bytes -= freed
        self._count -= n
        return n - in_flight

    @staticmethod
    def _count_dropped(conn: sqlite3.Connection, n: int) -> None:
        if n:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (n,))

    def oldest(self, limit: int) -> List[Tuple[int, bytes]]:
        """Up to ``limit`` of the oldest records as ``(id, payload)``, marked in flight until
        :meth:`delete` (acknowledged) or :meth:`release` (not sent)."""
        rows = self._conn().execute(
            "SELECT id, payload FROM records ORDER BY id LIMIT ?", (int(limit),)).fetchall()
        with self._lock:
            self._inflight = (rows[0][0], rows[-1][0]) if rows else None
        return rows

    def release(self) -> int:
        """The batch in flight was not acknowledged. Returns how many of its records were dropped
        while it was in flight: they are lost now, and counted."""
        conn = self._conn()
        with self._lock:
            lost, self._inflight, self._dropped_inflight = self._dropped_inflight, None, 0
            if lost:
                with conn:
                    self._count_dropped(conn, lost)
        return lost

    def delete(self, ids: Iterable[int]) -> int:
        """Delete acknowledged records; return how many were still there."""
        ids = list(ids)
        if not ids:
            return 0
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # RETURNING tells exactly what went, even if a drop raced the shipment.
                gone = conn.execute(
                    f"DELETE FROM records WHERE id IN ({','.join('?' * len(ids))}) RETURNING length(payload)",
                    ids).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._bytes -= sum(size for (size,) in gone)
            self._count -= len(gone)
            # Delivered: those of the batch dropped meanwhile were not lost after all.
            self._inflight, self._dropped_inflight = None, 0
        return len(gone)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections and re-read the totals."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._inflight, self._dropped_inflight = None, 0
        self._bytes, self._count = self._conn().execute(
            "SELECT coalesce(sum(length(payload)), 0), count(*) FROM records").fetchone()

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
