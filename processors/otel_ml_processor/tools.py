"""Offline tools behind ``otel-ml labels import`` and ``otel-ml db export``.

Example::

    import_labels("labels.csv", "http://127.0.0.1:4318/v1/labels")
    export_rows(config, "churn", since=3600, fmt="csv", output="churn.csv")
"""

from __future__ import annotations

import csv
import json
import sys
import time
import urllib.request
from typing import Optional

#: Labels per POST: large enough to amortize a request, small enough to stay far below limits.
LABEL_BATCH = 5000


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def read_label_file(path: str, model: Optional[str] = None) -> list:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if rows and [c.strip() for c in rows[0]] in (["model", "prediction_id", "value"], ["prediction_id", "value"]):
        rows = rows[1:]
    out = []
    for i, row in enumerate(rows, start=1):
        if model is not None:
            if len(row) != 2:
                raise ValueError(f"{path}: row {i}: expected prediction_id,value")
            out.append({"model": model, "prediction_id": row[0], "value": _value(row[1])})
        else:
            if len(row) != 3:
                raise ValueError(f"{path}: row {i}: expected model,prediction_id,value")
            out.append({"model": row[0], "prediction_id": row[1], "value": _value(row[2])})
    return out


def import_labels(path: str, url: str, model: Optional[str] = None, token: Optional[str] = None) -> tuple:
    """POST the file's labels in batches; returns (sent, rejected)."""
    labels = read_label_file(path, model)
    sent = rejected = 0
    for i in range(0, len(labels), LABEL_BATCH):
        batch = labels[i:i + LABEL_BATCH]
        req = urllib.request.Request(url, data=json.dumps(batch).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        sent += len(batch)
        rejected += answer.get("rejected", 0)
    return sent, rejected


def export_rows(config, model: str, since: float, fmt: str, output: Optional[str]) -> int:
    from otel_ml_processor.store.database import Database

    db = Database(config.storage.url)
    rows = db.export_rows(model, time.time() - since)
    db.close()
    features = sorted({k for r in rows for k in r["features"]})
    segments = sorted({k for r in rows for k in r["segments"]})
    columns = ["model", "model_version", "prediction_id", "timestamp", "output_label", "output_value", "score",
               "label"] + [f"feature.{f}" for f in features] + [f"segment.{s}" for s in segments]
    flat = [{**{c: r.get(c) for c in columns[:8]},
             **{f"feature.{f}": r["features"].get(f) for f in features},
             **{f"segment.{s}": r["segments"].get(s) for s in segments}} for r in rows]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not output:
            raise SystemExit("otel-ml: --output is required for parquet")
        table = pa.Table.from_pylist(flat) if flat else pa.table({c: [] for c in columns})
        pq.write_table(table, output)
    else:
        fh = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
        try:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
        finally:
            if output:
                fh.close()
    return len(rows)
