"""Benchmark: keeping a busy model's two windows up to date (figures in BENCHMARKS.md "Windows").

One model version on a real SQLite file, as the processor runs it: predictions stored in batches
of 512 and handed to its windows, labels coming back ``--lag`` predictions later (by then their
predictions have left a 10 000-row window at 5 000 predictions/s), and every ``--cycle``
predictions one compute-cycle ``sync`` (read the owners, the labels other replicas changed since
the last cycle with its overlap, fetch the rows the labeled window wants) and one snapshot of
both windows. Labels enter through this replica (``--labels here``: its writer thread hands
them over) or through another one (``--labels elsewhere``: the sync reads them from the
database). Prints the CPU time of each step, per label, and the process's memory.

Run: ``PYTHONPATH=.:processors python benchmarks/bench_windows.py [--cycles 6] [--labels elsewhere]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np
import psutil

from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.compute.manager import Committed, ModelWindows
from otel_ml_processor.config import parse_config
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.store.database import Database


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=6)
    ap.add_argument("--cycle", type=int, default=75_000, help="predictions per compute cycle (15 s at 5 000/s)")
    ap.add_argument("--lag", type=int, default=25_000, help="predictions between one and its label (5 s at 5 000/s)")
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--labels", choices=["here", "elsewhere"], default="here")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({"models": [{"name": "busy", "window": {"size": args.size}}]})
        db = Database(f"sqlite:///{tmp}/bench.db", replica="bench")
        other = Database(f"sqlite:///{tmp}/bench.db", replica="other")
        windows = ModelWindows(config, db, Caps(100, 500, Counters(), initial_models=["busy"]))
        proc = psutil.Process()
        print(f"machine: {psutil.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
        print(f"window {args.size}, {args.features} features, {args.cycle} predictions and labels per cycle, "
              f"labels {args.lag} predictions late, joined {args.labels}")
        t, sent, labeled = 1.7e9, 0, 0
        syncs, snaps, hands = [], [], []
        rss0 = proc.memory_info().rss
        for cycle in range(args.cycles + 1):
            for start in range(sent, sent + args.cycle, 512):
                batch = [PredictionRecord("busy", "1", f"p{i}", "classification", t + i / 5000,
                                          {f"f{j}": float(v) for j, v in enumerate(rng.normal(size=args.features))},
                                          str(i % 2), score=0.8) for i in range(start, min(start + 512, sent + args.cycle))]
                write = db.insert_predictions(batch, now=t + start / 5000)
                windows.committed(Committed(write.inserted, write.ids, t + start / 5000))
            sent += args.cycle
            upto = max(0, sent - args.lag)
            records = [LabelRecord("busy", f"p{i}", str(i % 3 % 2), t) for i in range(labeled, upto)]
            labels, labeled, hand = upto - labeled, upto, 0.0
            for start in range(0, len(records), 5000):
                if args.labels == "elsewhere":
                    other.upsert_labels(records[start:start + 5000], now=t)
                    continue
                write = db.upsert_labels(records[start:start + 5000], now=t)
                h = time.process_time()
                windows.committed(Committed(received_at=t, joins=write.joined))
                hand += time.process_time() - h
            c0 = time.process_time()
            sync = windows.sync(t + sent / 5000)
            c1 = time.process_time()
            (_, window, lw), = windows.snapshots(t + sent / 5000)
            c2 = time.process_time()
            if cycle == 0:
                continue   # the first cycle fills the windows from the database
            syncs.append(c1 - c0)
            snaps.append(c2 - c1)
            hands.append(hand)
            print(f"cycle {cycle}: {labels} labels: handed over {1e3 * hand:5.1f} ms, sync {1e3 * (c1 - c0):6.1f} ms "
                  f"({sync.fetched} rows fetched; {1e6 * (hand + c1 - c0) / max(labels, 1):.2f} µs per label), "
                  f"snapshot of both windows {1e3 * (c2 - c1):5.1f} ms; window {len(window)}, labeled {len(lw)}")
        print(f"median per cycle: handing labels over {1e3 * statistics.median(hands):.1f} ms, sync "
              f"{1e3 * statistics.median(syncs):.1f} ms, snapshots {1e3 * statistics.median(snaps):.1f} ms; "
              f"RSS {proc.memory_info().rss / 2**20:.0f} MiB ({(proc.memory_info().rss - rss0) / 2**20:+.0f} MiB "
              f"since the start, SQLite page cache included)")
        db.close()
        other.close()


if __name__ == "__main__":
    main()
