"""Bounded FIFOs of encoded records: on disk (SQLite in WAL mode, stdlib ``sqlite3``) or in memory.

Each row of the ``records`` table is a run of ``count`` records, concatenated as they will be
sent (framed OTLP LogRecords, see ``otel_ml.wire``); runs are kept in arrival order. One row
per run, not per record, keeps SQLite's cost per record near zero. The shipper reads the
oldest runs, sends them, and deletes them only once the receiver acknowledged them; a crash
between the send and the delete means a resend, which the processor drops as a duplicate
prediction id. When the stored payload bytes exceed ``max_bytes`` the oldest runs are deleted
first and their records counted (``dropped``), never silently. A run dropped while its batch is
being sent may still be delivered by that send: its drop is counted only once the send failed
(:meth:`SQLiteBuffer.release`), so a record is either delivered or counted as dropped, never both.
Drops are per record: the oldest records of a run are cut off it when the run is larger than
what the bound asks to free.

Any number of processes may share one file (every worker of a server is configured by the same
environment, so by the same path): each row belongs to the process that wrote it (``owner``, a
token made of its pid and random bytes), and each process reads, ships and deletes only its own
rows. A process holds an exclusive ``fcntl`` lock on a file of its own, ``<path>.owners/<token>``,
for as long as it lives (the kernel releases it when the process ends, however it ends). Rows
whose owner's lock is free (it died, was killed with SIGKILL, or exited with records left) are
adopted by a live process (:meth:`SQLiteBuffer.adopt`, at start and every few seconds): one
``UPDATE`` in a write transaction gives them to the adopter, so only one process ever ships
them. A forked child gets a token and lock of its own. The byte bound applies to each process's
own rows.

Each thread gets its own connection (SQLite connections are not shared across threads), and
WAL lets the shipper read while the writer appends. Shipped runs are deleted with
``secure_delete=FAST``: freed pages of a run are not zeroed on disk (they hold records already
delivered, and are reused by the next runs). ``synchronous=NORMAL`` in WAL mode keeps
every committed record across a process crash (SIGKILL); only an OS crash or power loss can
lose the last commits. :class:`MemoryBuffer` is the same FIFO without a file
(``OTEL_ML_BUFFER_PATH=""``): bounded the same way, lost with the process.

Example::

    from otel_ml.buffer import SQLiteBuffer

    buf = SQLiteBuffer("/tmp/otel-ml-buffer.db", max_bytes=10_000_000)
    buf.append([(b"<2 records>", 2), (b"<1 record>", 1)])
    batch = buf.oldest(512)                 # [(id, payload, count), ...]
    ...                                     # send, and on success:
    buf.delete([rowid for rowid, _, _ in batch])
"""

from __future__ import annotations

import collections
import itertools
import os
import sqlite3
import threading
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

try:
    import fcntl
except ImportError:  # Windows: no owner locks; every process ships only its own rows and unowned ones
    fcntl = None  # type: ignore[assignment]

from otel_ml import wire

Run = Tuple[bytes, int]                    # (payload, records in it)
Stored = Tuple[int, bytes, int]            # (id, payload, records in it)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    count INTEGER NOT NULL DEFAULT 1,
    payload BLOB NOT NULL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS records_owner ON records (owner, id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def _take_oldest(rows: Iterable[Stored], max_records: int, max_bytes: int) -> List[Stored]:
    """The first rows while they fit ``max_records`` and ``max_bytes`` (always at least one)."""
    out: List[Stored] = []
    records = size = 0
    for row in rows:
        if out and (records + row[2] > max_records or size + len(row[1]) > max_bytes):
            break
        out.append(row)
        records += row[2]
        size += len(row[1])
        if records >= max_records:
            break
    return out


def _cut(payload: bytes, need: int) -> Optional[Tuple[int, int]]:
    """Where to cut the oldest records off a run to free at least ``need`` bytes, and how many
    records that drops; None when that would take the whole run."""
    ends = wire.record_ends(payload)
    for k, end in enumerate(ends[:-1], start=1):
        if end >= need:
            return end, k
    return None


class SQLiteBuffer:
    """A FIFO of record runs in one SQLite file, bounded by total payload bytes.

    ``legacy`` converts the payload of a one-record row written by an older otel-ml (before
    runs) into the current encoding; such rows are converted when the file is opened.
    """

    def __init__(self, path: str, max_bytes: int = 100 * 1024 * 1024,
                 legacy: Optional[Callable[[bytes], bytes]] = None) -> None:
        self.path = path
        self.max_bytes = int(max_bytes)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()          # guards the totals and _inflight across threads
        # (first id, last id) of the batch being shipped, and how many of its records were dropped
        # meanwhile: counted as dropped only if the send fails (it may deliver them after all).
        self._inflight: Optional[Tuple[int, int]] = None
        self._dropped_inflight = 0
        self.owners_dir = path + ".owners"
        self._claim()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._upgrade(conn, legacy)
                for statement in _SCHEMA.split(";"):          # not executescript: it would commit
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._read_totals()
        self.adopt()

    # -- ownership -------------------------------------------------------------------------------
    def _claim(self) -> None:
        """Take a new owner token and hold the lock that says this process is alive."""
        self.owner = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._lock_fd: Optional[int] = None
        if fcntl is None:
            return
        os.makedirs(self.owners_dir, exist_ok=True)
        fd = os.open(os.path.join(self.owners_dir, self.owner), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd

    def _dead(self, owner: Optional[str]) -> Tuple[bool, Optional[int]]:
        """(True, fd holding its lock or None) when ``owner`` is not a live process."""
        if owner is None:
            return True, None                    # rows of an otel-ml from before owners
        if fcntl is None:
            return False, None
        if os.sep in owner or owner.startswith("."):
            return True, None
        try:
            fd = os.open(os.path.join(self.owners_dir, owner), os.O_RDWR)
        except FileNotFoundError:
            return True, None                    # it removed its lock at exit (or was adopted)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False, None                   # alive: it holds its lock
        return True, fd

    def adopt(self) -> int:
        """Take over the rows of owners that are no longer alive; return how many records.

        Also removes the lock files that dead processes left without rows."""
        conn = self._conn()
        owners = [o for (o,) in conn.execute("SELECT DISTINCT owner FROM records")]
        adopted = 0
        for owner in owners:
            if owner == self.owner:
                continue
            dead, fd = self._dead(owner)
            if not dead:
                continue
            try:
                with self._lock:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        # Conditional on the owner: a process that adopted them first leaves nothing here.
                        n = conn.execute("SELECT coalesce(sum(count), 0), coalesce(sum(length(payload)), 0) "
                                         "FROM records WHERE owner IS ?", (owner,)).fetchone()
                        conn.execute("UPDATE records SET owner = ? WHERE owner IS ?", (self.owner, owner))
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    self._count += n[0]
                    self._bytes += n[1]
                    adopted += n[0]
            finally:
                if fd is not None:
                    self._remove_lock(owner, fd)
        if fcntl is not None and os.path.isdir(self.owners_dir):
            for name in os.listdir(self.owners_dir):
                if name != self.owner and name not in owners:
                    dead, fd = self._dead(name)
                    if fd is not None:
                        self._remove_lock(name, fd)
        return adopted

    def _remove_lock(self, owner: str, fd: int) -> None:
        try:
            os.unlink(os.path.join(self.owners_dir, owner))
        except OSError:
            pass
        finally:
            os.close(fd)

    def disown(self) -> None:
        """At exit: give up the lock, so that a live process adopts what is left at once."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            self._remove_lock(self.owner, fd)

    @staticmethod
    def _upgrade(conn: sqlite3.Connection, legacy: Optional[Callable[[bytes], bytes]]) -> None:
        """Rows of the one-record, JSON-encoded layout (no ``count`` column) become runs; a file
        from before owners gets the ``owner`` column (its rows, owner NULL, are adopted)."""
        columns = [r[1] for r in conn.execute("PRAGMA table_info(records)")]
        if columns and "count" in columns and "owner" not in columns:
            conn.execute("ALTER TABLE records ADD COLUMN owner TEXT")
            return
        if not columns or "count" in columns:
            return
        old = conn.execute("SELECT payload FROM records ORDER BY id").fetchall()
        conn.execute("DROP TABLE records")
        conn.execute(_SCHEMA.split(";")[0])
        converted = []
        for (payload,) in old:
            try:
                converted.append((legacy(payload),) if legacy is not None else None)
            except Exception:  # noqa: BLE001 - an unreadable old record: counted as dropped below
                converted.append(None)
        conn.executemany("INSERT INTO records (payload, count) VALUES (?, 1)", [c for c in converted if c])
        SQLiteBuffer._count_dropped(conn, sum(1 for c in converted if not c))

    def _read_totals(self) -> None:
        self._bytes, self._count = self._conn().execute(
            "SELECT coalesce(sum(length(payload)), 0), coalesce(sum(count), 0) FROM records WHERE owner = ?",
            (self.owner,)).fetchone()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # A new file gets 16 KiB pages: a run of records spans 4x fewer overflow pages.
            conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Builds compiled with SQLITE_SECURE_DELETE (Debian's) overwrite every freed page of a
            # shipped run, which doubled the disk writes; FAST zeroes what costs no extra I/O.
            conn.execute("PRAGMA secure_delete=FAST")
            self._local.conn = conn
        return conn

    @property
    def bytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    def __len__(self) -> int:
        """Records held."""
        return self._count

    @property
    def dropped_total(self) -> int:
        """Records dropped because the buffer was full, over the file's whole life."""
        row = self._conn().execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def append(self, runs: Sequence[Run]) -> int:
        """Store ``runs`` in one transaction; return how many old records were dropped to fit."""
        if not runs:
            return 0
        conn = self._conn()
        added = sum(len(p) for p, _ in runs)
        records = sum(n for _, n in runs)
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                owner = self.owner
                conn.executemany("INSERT INTO records (payload, count, owner) VALUES (?, ?, ?)",
                                 [(p, n, owner) for p, n in runs])
                self._bytes += added
                self._count += records
                dropped = self._drop_oldest_locked(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._read_totals()
                raise
        return dropped

    def _drop_oldest_locked(self, conn: sqlite3.Connection) -> int:
        excess = self._bytes - self.max_bytes
        if excess <= 0:
            return 0
        # Walk the oldest runs: delete those wholly needed to cover the excess, and cut the oldest
        # records off the next one, so that no more is dropped than the bound asks.
        lo, hi = self._inflight or (0, -1)
        whole_last, freed, n, in_flight = None, 0, 0, 0
        while freed < excess:
            row = conn.execute("SELECT id, length(payload), count FROM records WHERE owner = ? AND id > ? "
                               "ORDER BY id LIMIT 1",
                               (self.owner, whole_last if whole_last is not None else -1)).fetchone()
            if row is None:
                break
            rowid, size, count = row
            flying = lo <= rowid <= hi
            if freed + size > excess and count > 1:
                (payload,) = conn.execute("SELECT payload FROM records WHERE id = ?", (rowid,)).fetchone()
                cut = _cut(payload, excess - freed)
                if cut is not None:
                    offset, k = cut
                    conn.execute("UPDATE records SET payload = ?, count = count - ? WHERE id = ?",
                                 (payload[offset:], k, rowid))
                    freed, n = freed + offset, n + k
                    in_flight += k if flying else 0
                    break
            whole_last, freed, n = rowid, freed + size, n + count
            in_flight += count if flying else 0
        if whole_last is not None:
            conn.execute("DELETE FROM records WHERE owner = ? AND id <= ?", (self.owner, whole_last))
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

    def count_dropped(self, n: int) -> None:
        """Count ``n`` records dropped before they reached the buffer (best effort: the disk may
        be what failed)."""
        try:
            with self._lock, self._conn() as conn:
                self._count_dropped(conn, n)
        except sqlite3.Error:
            pass

    def oldest(self, max_records: int, max_bytes: int = 1 << 62) -> List[Stored]:
        """The oldest runs, up to ``max_records`` records and ``max_bytes`` (at least one run),
        as ``(id, payload, count)``, in flight until :meth:`delete` (acknowledged) or
        :meth:`release` (not sent)."""
        cursor = self._conn().execute("SELECT id, payload, count FROM records WHERE owner = ? ORDER BY id",
                                      (self.owner,))
        try:
            rows = _take_oldest(cursor, max_records, max_bytes)
        finally:
            cursor.close()
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
        """Delete acknowledged runs; return how many records were still there."""
        ids = list(ids)
        if not ids:
            return 0
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # RETURNING tells exactly what went, even if a drop raced the shipment.
                gone = conn.execute(
                    f"DELETE FROM records WHERE id IN ({','.join('?' * len(ids))}) RETURNING length(payload), count",
                    ids).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._bytes -= sum(size for size, _ in gone)
            records = sum(count for _, count in gone)
            self._count -= records
            # Delivered: those of the batch dropped meanwhile were not lost after all.
            self._inflight, self._dropped_inflight = None, 0
        return records

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections, own nothing of the parent's (the
        parent ships its rows), and hold a lock of its own."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._inflight, self._dropped_inflight = None, 0
        if self._lock_fd is not None:
            os.close(self._lock_fd)              # the parent's lock is the parent's (fcntl locks are not inherited)
        self._claim()
        self._read_totals()

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class MemoryBuffer:
    """:class:`SQLiteBuffer`'s behaviour without a file: bounded, oldest dropped and counted."""

    path = ":memory:"

    def __init__(self, max_bytes: int = 100 * 1024 * 1024) -> None:
        self.max_bytes = int(max_bytes)
        self._runs: "collections.deque[Stored]" = collections.deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._bytes = self._count = 0
        self._dropped = 0
        self._inflight: Optional[Tuple[int, int]] = None
        self._dropped_inflight = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._count

    @property
    def dropped_total(self) -> int:
        return self._dropped

    def append(self, runs: Sequence[Run]) -> int:
        with self._lock:
            for payload, count in runs:
                self._runs.append((next(self._ids), payload, count))
                self._bytes += len(payload)
                self._count += count
            dropped = 0
            lo, hi = self._inflight or (0, -1)
            while self._bytes > self.max_bytes and self._runs:
                rowid, payload, count = self._runs.popleft()
                excess = self._bytes - self.max_bytes
                cut = _cut(payload, excess) if len(payload) > excess and count > 1 else None
                if cut is not None:                              # the oldest records of this run go
                    freed, k = cut
                    self._runs.appendleft((rowid, payload[freed:], count - k))
                    count = k
                else:
                    freed = len(payload)
                self._bytes -= freed
                self._count -= count
                if lo <= rowid <= hi:
                    self._dropped_inflight += count
                else:
                    dropped += count
            self._dropped += dropped
        return dropped

    def count_dropped(self, n: int) -> None:
        with self._lock:
            self._dropped += n

    def oldest(self, max_records: int, max_bytes: int = 1 << 62) -> List[Stored]:
        with self._lock:
            rows = _take_oldest(list(itertools.islice(self._runs, max_records)), max_records, max_bytes)
            self._inflight = (rows[0][0], rows[-1][0]) if rows else None
        return rows

    def release(self) -> int:
        with self._lock:
            lost, self._inflight, self._dropped_inflight = self._dropped_inflight, None, 0
            self._dropped += lost
        return lost

    def delete(self, ids: Iterable[int]) -> int:
        wanted = set(ids)
        last = max(wanted, default=0)
        with self._lock:
            records = 0
            # The shipped runs are the oldest ones (those a drop left): a prefix of the queue.
            while self._runs and self._runs[0][0] <= last:
                rowid, payload, count = self._runs.popleft()
                if rowid in wanted:
                    self._bytes -= len(payload)
                    records += count
                    self._count -= count
                else:                       # not shipped yet, older than the batch: keep it first
                    self._runs.appendleft((rowid, payload, count))
                    break
            self._inflight, self._dropped_inflight = None, 0
            self._inflight, self._dropped_inflight = None, 0
        return records

    def adopt(self) -> int:
        return 0                           # no file: nothing of other processes to take over

    def disown(self) -> None:
        pass

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._runs.clear()                 # the parent ships what it holds
        self._bytes = self._count = 0
        self._inflight, self._dropped_inflight = None, 0

    def close(self) -> None:
        pass
