"""Database floor: the processor's batch write into PostgreSQL against ``psql``'s raw ``COPY``.

Starts a throwaway PostgreSQL 15 cluster (Debian's ``postgresql``; fsync on, as in production)
and, in each round, on fresh databases made by the processor's own migrations:

- ``processor``: ``Database.insert_predictions`` of batches of 512 predictions x 20 features
  (what the store writer runs for each OTLP request: the COPY into staging, the move with
  duplicate detection, ownership, the waiting-labels probe), one batch after another as the
  writer thread does;
- ``psql COPY``: the same rows (copied out of the processor's database with ``\\copy ... TO``)
  loaded by one ``psql -c "\\copy predictions (...) FROM file"``: no duplicate check, no other
  table, one transaction: the floor;
- ``psql COPY/batch``: the same rows and batches, one ``\\copy`` (one transaction, one WAL flush)
  per batch of 512 in one ``psql`` session: the floor for a writer that acknowledges each
  request only once it is committed, as the processor must;
- ``unnest INSERT`` (with ``--unnest``): the previous release's statement (``INSERT ... SELECT
  unnest(one binary array per column) ON CONFLICT DO NOTHING RETURNING``) into the previous,
  unpartitioned layout, for comparison.

Rounds alternate the order of the runs (the machine's load drifts); the figures are the ratios
processor / COPY and processor / COPY per batch of each round, and their medians.

Usage::

    PYTHONPATH=.:processors python benchmarks/bench_db_floor.py                 # 3 rounds of 100 000 rows
    PYTHONPATH=.:processors python benchmarks/bench_db_floor.py --rows 200000 --rounds 5 --unnest
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "processors"))
from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.store import schema
from otel_ml_processor.store.database import Database, _prediction_tuple, engine_url
from otel_ml_processor.store.migrations import MIGRATIONS
from otel_ml_processor.store.pg_copy import COLUMNS
from tests.postgres import SUPERUSER, PostgresCluster

BATCH, FEATURES = 512, 20
NAMES = ", ".join(c for c, _t in COLUMNS)
UNNEST = (f"INSERT INTO predictions ({NAMES}) SELECT * FROM unnest({', '.join(f'%b::{t}[]' for _c, t in COLUMNS)}) "
          "ON CONFLICT (model, prediction_id) DO NOTHING RETURNING model, prediction_id, id")


def make_batches(rows: int) -> list:
    now = time.time()
    out, batch = [], []
    for i in range(rows):
        features = {f"f{j}": float((i * 7 + j) % 97) for j in range(FEATURES - 2)}
        features.update(plan=("free", "pro", "team")[i % 3], country=("fr", "de", "us", "jp")[i % 4])
        batch.append(PredictionRecord(model="bench", model_version="1", prediction_id=f"p{i}", task="classification",
                                      time=now + i * 1e-4, features=features, output_label=str(i % 2),
                                      score=0.5 + (i % 50) / 100, probabilities={}, segments={"gender": "fm"[i % 2]},
                                      trace_id=f"{i:032x}", span_id=f"{i:016x}"))
        if len(batch) == BATCH:
            out.append(batch)
            batch = []
    if batch:
        out.append(batch)
    for b in out:
        for r in b:
            r.encode()   # the ingest workers encode the JSON before the writer sees the rows
    return out


def psql(cluster: PostgresCluster, database: str, command: str) -> None:
    cmd = [str(cluster.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
           str(cluster.port), "-U", SUPERUSER, "-d", database, "-c", command]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def run_processor(url: str, batches: list) -> float:
    db = Database(url, replica="bench")
    t0 = time.perf_counter()
    for b in batches:
        db.insert_predictions(b, now=time.time())
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed


def run_unnest(url: str, batches: list) -> float:
    engine = create_engine(engine_url(url))
    with engine.begin() as conn:
        for step in MIGRATIONS[:2]:
            step(conn)
    t0 = time.perf_counter()
    for b in batches:
        rows = [_prediction_tuple(r, time.time()) for r in b]
        with engine.begin() as conn:
            conn.exec_driver_sql(UNNEST, tuple(list(c) for c in zip(*rows))).all()
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed


def run_copy(cluster: PostgresCluster, database: str, url: str, path: Path) -> float:
    Database(url).close()     # the processor's schema and partitions, empty
    t0 = time.perf_counter()
    psql(cluster, database, f"\\copy predictions ({NAMES}) FROM '{path}'")
    return time.perf_counter() - t0


def run_copy_batches(cluster: PostgresCluster, database: str, url: str, files: list, script: Path) -> float:
    Database(url).close()
    script.write_text("".join(f"\\copy predictions ({NAMES}) FROM '{f}'\n" for f in files))
    cmd = [str(cluster.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
           str(cluster.port), "-U", SUPERUSER, "-d", database, "-f", str(script)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def split(dump: Path, sizes: list) -> list:
    """``dump`` (COPY text, one row a line) cut into files of ``sizes`` rows."""
    lines = dump.read_text().splitlines(keepends=True)
    files, start = [], 0
    for k, n in enumerate(sizes):
        f = dump.with_name(f"batch{k:05d}.txt")
        f.write_text("".join(lines[start:start + n]))
        files.append(f)
        start += n
    return files


def count(url: str) -> int:
    engine = create_engine(engine_url(url))
    with engine.connect() as conn:
        n = conn.execute(text(f"SELECT count(*) FROM {schema.predictions.name}")).scalar_one()
    engine.dispose()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unnest", action="store_true", help="also the previous release's INSERT ... unnest")
    args = ap.parse_args()
    batches = make_batches(args.rows)
    n = sum(len(b) for b in batches)
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    ratios: dict = {"psql COPY": [], "psql COPY/batch": []}
    rates: dict = {"processor": [], "psql COPY": [], "psql COPY/batch": [], "unnest INSERT": []}
    with PostgresCluster(fsync=True) as cluster, tempfile.TemporaryDirectory() as tmp:
        print(f"PostgreSQL: {cluster.bindir}, fsync on; {n:,} rows in batches of {BATCH} x {FEATURES} features")
        dump = Path(tmp) / "rows.txt"
        seed = cluster.create_database("seed")
        run_processor(seed, batches)
        psql(cluster, "seed", f"\\copy (SELECT {NAMES} FROM predictions ORDER BY id) TO '{dump}'")
        files = split(dump, [len(b) for b in batches])
        for k in range(args.rounds):
            runs = ["processor", "psql COPY", "psql COPY/batch"] + (["unnest INSERT"] if args.unnest else [])
            if k % 2:
                runs.reverse()
            took = {}
            for name in runs:
                db = f"r{k}_{name.replace(' ', '_').replace('/', '_').lower()}"
                url = cluster.create_database(db)
                if name == "processor":
                    took[name] = run_processor(url, batches)
                elif name == "unnest INSERT":
                    took[name] = run_unnest(url, batches)
                elif name == "psql COPY/batch":
                    took[name] = run_copy_batches(cluster, db, url, files, Path(tmp) / "batches.sql")
                else:
                    took[name] = run_copy(cluster, db, url, dump)
                assert count(url) == n, f"{name} stored {count(url)} of {n} rows"
                rates[name].append(n / took[name])
                print(f"round {k + 1}: {name:16s} {n / took[name]:9,.0f} rows/s  ({took[name]:.2f} s)")
            for name, r in ratios.items():
                r.append(took[name] / took["processor"])
            print(f"round {k + 1}: processor / COPY = {ratios['psql COPY'][-1]:.2f}, "
                  f"processor / COPY per batch = {ratios['psql COPY/batch'][-1]:.2f}")
    for name, r in rates.items():
        if r:
            print(f"median {name:16s} {statistics.median(r):9,.0f} rows/s")
    for name, r in ratios.items():
        print(f"median ratio processor / {name}: {statistics.median(r):.2f}  (rounds: "
              + ", ".join(f"{x:.2f}" for x in r) + ")")


if __name__ == "__main__":
    main()
