"""A supervisor and its multiprocessing workers (fork and spawn), one environment for all, with no
otel-ml code: run under ``opentelemetry-instrument`` by tests/sdk/test_workers.py.

Each worker trains a small model, makes ``--calls`` one-row ``predict_proba`` calls and writes
the prediction ids it made to ``<ids-dir>/<pid>.json``. With ``--hang``, the fork workers then
wait to be killed (their ids written once their rows are in the shared buffer file) and the
supervisor lives until SIGTERM.

    opentelemetry-instrument python tests/sdk/workers_app.py --fork 2 --spawn 1 --calls 30 --ids-dir DIR
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time


def work(calls: int, ids_dir: str, hang: bool) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import otel_ml

    rng = np.random.default_rng(os.getpid())
    X = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    ids = []
    for i in range(calls):
        model.predict_proba(X[i:i + 1])
        ids += otel_ml.last_prediction_ids()
    if hang:
        from otel_ml import pipeline

        pipe = pipeline.active()
        assert pipe is not None and pipe.outbox is not None
        pipe.recorder.flush()
        pipe.outbox.commit()                       # on disk: what a SIGKILL must not lose
    with open(os.path.join(ids_dir, f"{os.getpid()}.json"), "w") as f:
        json.dump(ids, f)
    if hang:
        time.sleep(3600)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fork", type=int, default=0)
    ap.add_argument("--spawn", type=int, default=0)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--ids-dir", required=True)
    ap.add_argument("--hang", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))        # a clean exit: atexit ships
    procs = []
    for method, n in (("fork", args.fork), ("spawn", args.spawn)):
        ctx = multiprocessing.get_context(method)
        for _ in range(n):
            p = ctx.Process(target=work, args=(args.calls, args.ids_dir, args.hang and method == "fork"))
            p.start()
            procs.append(p)
    with open(os.path.join(args.ids_dir, "workers"), "w") as f:
        f.write(" ".join(str(p.pid) for p in procs))
    for p in procs:
        p.join()
    if args.hang:
        time.sleep(3600)
    return 0 if all(p.exitcode in (0, -signal.SIGKILL) for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
