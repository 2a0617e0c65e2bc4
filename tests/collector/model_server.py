"""A model server's ML traffic, as its own process, through the public ``otel_ml`` API only.

``otel_ml.configure()`` sets up the SDK from the standard ``OTEL_*`` and ``OTEL_ML_*`` variables
(OTLP to ``OTEL_EXPORTER_OTLP_ENDPOINT``, the disk buffer at ``OTEL_ML_BUFFER_PATH``); the loop
records ``--count`` predictions per model at ``--rate`` predictions/s in all, the rows of
:func:`tests.collector.chain.row`, with their labels for the ids that
:func:`tests.collector.chain.label_by_otlp` sends over OTLP. It writes how many it has recorded
to ``--progress`` as it goes, then ``otel_ml.shutdown()`` ships what is left (within
``OTEL_ML_SHUTDOWN_TIMEOUT``; what the agent did not acknowledge by then stays in the buffer).

    python -m tests.collector.model_server --models a,b --start 0 --count 300 --rate 200 --progress p.txt
"""

from __future__ import annotations

import argparse
import os
import time

import otel_ml
from tests.collector.chain import VERSION, label_by_otlp, prediction_id, row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--labels", action="store_true")
    parser.add_argument("--progress", required=True)
    args = parser.parse_args()
    models = args.models.split(",")
    otel_ml.configure(system_metrics=False)
    started, done = time.monotonic(), 0
    for i in range(args.start, args.start + args.count):
        for model in models:
            features, predicted, truth = row(model, i)
            pid = otel_ml.record_prediction(model, VERSION, features, label=predicted, score=0.8,
                                            prediction_id=prediction_id(model, i))
            if args.labels and label_by_otlp(i):
                otel_ml.record_label(model, pid, truth)
            done += 1
            ahead = started + done / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        if done % 50 < len(models):
            _progress(args.progress, done)
    _progress(args.progress, done)
    otel_ml.shutdown()
    return 0


def _progress(path: str, done: int) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(done))
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    raise SystemExit(main())
