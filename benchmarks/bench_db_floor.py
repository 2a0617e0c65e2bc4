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
- ``processor@REF`` (with ``--baseline REF``): the same write by the processor of git
  revision ``REF`` (``git archive`` into a temporary directory, run in a process of its own),
  interleaved with this one's: an A/B of a change in the same run;
- ``unnest INSERT`` (with ``--unnest``): the previous release's statement (``INSERT ... SELECT
  unnest(one binary array per column) ON CONFLICT DO NOTHING RETURNING``) into the previous,
  unpartitioned layout, for comparison.

Rounds alternate the order of the runs (the machine's load drifts); the figures are the ratios
processor / COPY and processor / COPY per batch of each round, and their medians. Each processor run also gives the
writing process's CPU (user + sys, all threads) per batch.

Usage::

    PYTHONPATH=.:processors python benchmarks/bench_db_floor.py                 # 3 rounds of 100 000 rows
    PYTHONPATH=.:processors python benchmarks/bench_db_floor.py --rows 200000 --rounds 5 --unnest
    PYTHONPATH=.:processors python benchmarks/bench_db_floor.py --baseline origin/main --rounds 5
"""

from __future__ import annotations

import argparse
import inspect
import json
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


def run_processor(url: str, batches: list) -> tuple:
    """Seconds and the process's CPU seconds (user + sys, all threads) of the writes."""
    db = Database(url, replica="bench")
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        db.insert_predictions(b, now=time.time())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    db.close()
    return elapsed, cpu


#: The processor of another tree, in a process of its own (its modules, not this tree's).
WORKER = """
import json, sys, time
sys.path[:0] = [TREE, TREE + "/processors"]
from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.store.database import Database
BATCH, FEATURES = BATCH_, FEATURES_
SOURCE
batches = make_batches(ROWS)
db = Database(URL, replica="bench")
t0, c0 = time.perf_counter(), time.process_time()
for b in batches:
    db.insert_predictions(b, now=time.time())
print(json.dumps([time.perf_counter() - t0, time.process_time() - c0]))
db.close()
"""


def run_tree(tree: Path, url: str, rows: int) -> tuple:
    """``run_processor`` with the processor of ``tree`` (same rows, made by the same function)."""
    code = (WORKER.replace("TREE", repr(str(tree))).replace("BATCH_", str(BATCH)).replace("FEATURES_", str(FEATURES))
            .replace("SOURCE", inspect.getsource(make_batches)).replace("ROWS", str(rows)).replace("URL", repr(url)))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    elapsed, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return elapsed, cpu


def checkout(ref: str, into: Path) -> Path:
    """The tree of git revision ``ref`` (this repository's) extracted under ``into``."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", ref, "otel_ml", "processors"], check=True,
                             capture_output=True).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


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
    ap.add_argument("--baseline", metavar="REF", help="also the processor of git revision REF (A/B)")
    args = ap.parse_args()
    batches = make_batches(args.rows)
    n = sum(len(b) for b in batches)
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    ratios: dict = {"psql COPY": [], "psql COPY/batch": []}
    base = f"processor@{args.baseline}" if args.baseline else None
    rates: dict = {"processor": [], "psql COPY": [], "psql COPY/batch": [], "unnest INSERT": []}
    cpus: dict = {"processor": []}
    if base:
        ratios[base] = []
        rates[base], cpus[base] = [], []
    with PostgresCluster(fsync=True) as cluster, tempfile.TemporaryDirectory() as tmp:
        print(f"PostgreSQL: {cluster.bindir}, fsync on; {n:,} rows in batches of {BATCH} x {FEATURES} features")
        dump = Path(tmp) / "rows.txt"
        seed = cluster.create_database("seed")
        run_processor(seed, batches)
        psql(cluster, "seed", f"\\copy (SELECT {NAMES} FROM predictions ORDER BY id) TO '{dump}'")
        files = split(dump, [len(b) for b in batches])
        tree = checkout(args.baseline, Path(tmp) / "baseline") if base else None
        for k in range(args.rounds):
            runs = (["processor", "psql COPY", "psql COPY/batch"] + ([base] if base else [])
                    + (["unnest INSERT"] if args.unnest else []))
            if k % 2:
                runs.reverse()
            took = {}
            for name in runs:
                db = f"r{k}_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower())
                url = cluster.create_database(db)
                cpu = None
                if name == "processor":
                    took[name], cpu = run_processor(url, batches)
                elif name == base:
                    took[name], cpu = run_tree(tree, url, args.rows)
                elif name == "unnest INSERT":
                    took[name] = run_unnest(url, batches)
                elif name == "psql COPY/batch":
                    took[name] = run_copy_batches(cluster, db, url, files, Path(tmp) / "batches.sql")
                else:
                    took[name] = run_copy(cluster, db, url, dump)
                assert count(url) == n, f"{name} stored {count(url)} of {n} rows"
                rates[name].append(n / took[name])
                if cpu is not None:
                    cpus[name].append(cpu / len(batches))
                print(f"round {k + 1}: {name:16s} {n / took[name]:9,.0f} rows/s  ({took[name]:.2f} s"
                      + (f", CPU {cpu / len(batches) * 1e3:.1f} ms per batch)" if cpu is not None else ")"))
            for name, r in ratios.items():
                # processor / X as a ratio of rates; the baseline's: processor / baseline
                r.append(took[name] / took["processor"])
            print(f"round {k + 1}: processor / COPY = {ratios['psql COPY'][-1]:.2f}, "
                  f"processor / COPY per batch = {ratios['psql COPY/batch'][-1]:.2f}")
    for name, r in rates.items():
        if r:
            print(f"median {name:16s} {statistics.median(r):9,.0f} rows/s")
    for name, c in cpus.items():
        if c:
            print(f"median CPU of {name}: {statistics.median(c) * 1e3:.1f} ms per batch of {BATCH}")
    for name, r in ratios.items():
        print(f"median ratio processor / {name}: {statistics.median(r):.2f}  (rounds: "
              + ", ".join(f"{x:.2f}" for x in r) + ")")


if __name__ == "__main__":
    main()
