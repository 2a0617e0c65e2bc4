"""A throwaway PostgreSQL cluster for the tests (Debian's ``postgresql`` package).

``initdb`` and ``pg_ctl`` refuse to run as root, so under root (CI) they run as the
unprivileged ``postgres`` user (``runuser -u postgres --``) on a data folder chowned to it;
as any other user they run directly. The cluster listens on 127.0.0.1 on a free port, keeps
its unix socket in its own temp folder, trusts loopback connections, and is removed on stop.
It never touches the package's default cluster (``/var/lib/postgresql/15/main``).

Example::

    with PostgresCluster() as pg:
        url = pg.create_database("t1")      # postgresql+psycopg://postgres@127.0.0.1:PORT/t1
        pg.dump("t1")                       # pg_dump's SQL text
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import free_port

SUPERUSER = "postgres"


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<N>/bin`` (15 on Debian 12)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not dirs:
        raise AssertionError("PostgreSQL server binaries not found: run scripts/install-test-deps")
    return Path(dirs[-1]).parent


class PostgresCluster:
    def __init__(self, fsync: bool = False):
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="otel-ml-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.fsync = fsync
        self.port = 0
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        result = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}{self.log()}")
        return result

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def start(self) -> "PostgresCluster":
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
            shutil.chown(self.sockets, SUPERUSER, SUPERUSER)
        # trust auth for local and loopback connections; --no-sync: a test cluster need not survive a crash.
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                  "--encoding=UTF8", "--locale=C", "--no-instructions")
        options = (f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sockets} "
                   f"-c fsync={'on' if self.fsync else 'off'} -c full_page_writes={'on' if self.fsync else 'off'} "
                   "-c max_connections=50 -c shared_buffers=32MB")
        for _attempt in range(5):   # the free port may be taken by another test run in between
            self.port = free_port()
            result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                               "-o", f"{options} -p {self.port}", "start", check=False)
            if result.returncode == 0:
                return self
            time.sleep(0.2)
        raise AssertionError(f"PostgreSQL did not start: {result.stderr}{self.log()}")

    def stop(self) -> None:
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.url("postgres", "postgresql"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def dump(self, database: str) -> str:
        """``pg_dump`` of ``database`` (schema and data, plain SQL)."""
        return self._run("pg_dump", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, database).stdout

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

