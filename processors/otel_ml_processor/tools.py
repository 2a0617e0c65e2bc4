"""Offline tools behind ``otel-ml labels import`` and ``otel-ml db export``.

Example::

    labels = read_label_file("labels.csv")           # LabelImportError: one line naming the file
    import_labels(labels, "http://127.0.0.1:4318/v1/labels")
    export_rows(Database(config.storage.url), "churn", since=3600, fmt="csv", output="churn.csv")
"""

from __future__ import annotations

import csv
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

#: Labels per POST: large enough to amortize a request, small enough to stay far below limits.
LABEL_BATCH = 5000


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


class LabelImportError(Exception):
    """A labels file or a label endpoint that cannot be used: one line naming the argument."""


#: The header a labels file may start with (without it, the first row is a label too).
HEADERS = {None: ["model", "prediction_id", "value"], "--model": ["prediction_id", "value"]}


def read_label_file(path: str, model: Optional[str] = None) -> list:
    """The labels of a CSV file: columns ``model,prediction_id,value``, or ``prediction_id,value``
    with ``model``; an optional header row names them. Raises :class:`LabelImportError` naming the
    file for a file that is missing, unreadable, not UTF-8 text or without those columns."""
    columns = HEADERS["--model" if model is not None else None]
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise LabelImportError(f"FILE {path}: no such file") from None
    except IsADirectoryError:
        raise LabelImportError(f"FILE {path}: is a directory, not a CSV file") from None
    except PermissionError:
        raise LabelImportError(f"FILE {path}: permission denied") from None
    except UnicodeDecodeError:
        raise LabelImportError(f"FILE {path}: not a UTF-8 CSV file (expected the columns {','.join(columns)})") from None
    except (OSError, csv.Error) as exc:
        raise LabelImportError(f"FILE {path}: cannot read it: {exc}") from None
    header = [c.strip() for c in rows[0]] if rows else []
    if header in HEADERS.values():
        if header != columns:
            hint = "without --model" if model is not None else "with --model M"
            raise LabelImportError(f"FILE {path}: has the columns {','.join(header)}: use them {hint} "
                                   f"(this command reads {','.join(columns)})")
        rows = rows[1:]
    elif rows and len(rows[0]) != len(columns):
        raise LabelImportError(f"FILE {path}: a CSV without the columns {','.join(columns)} "
                               f"(its first row: {','.join(rows[0])[:80]})")
    out = []
    for i, row in enumerate(rows, start=1):
        if len(row) != len(columns):
            raise LabelImportError(f"FILE {path}: row {i}: expected {','.join(columns)}, got {len(row)} columns")
        if model is not None:
            out.append({"model": model, "prediction_id": row[0], "value": _value(row[1])})
        else:
            out.append({"model": row[0], "prediction_id": row[1], "value": _value(row[2])})
    return out


def import_labels(labels: list, url: str, token: Optional[str] = None) -> tuple:
    """POST ``labels`` (:func:`read_label_file`) in batches; returns (sent, rejected). A processor
    that cannot be reached or refuses them raises :class:`LabelImportError` naming ``--url``
    (the batches before it were sent)."""
    sent = rejected = 0
    for i in range(0, len(labels), LABEL_BATCH):
        batch = labels[i:i + LABEL_BATCH]
        req = urllib.request.Request(url, data=json.dumps(batch).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace").strip().splitlines()
            raise LabelImportError(f"--url {url}: the processor answered {exc.code} {exc.reason}"
                                   + (f": {body[0][:200]}" if body else "") + f" ({sent} labels sent before)") from None
        except urllib.error.URLError as exc:
            raise LabelImportError(f"--url {url}: cannot reach the processor: {exc.reason}") from None
        except (OSError, ValueError) as exc:     # a timeout, a reset, an answer that is not JSON
            raise LabelImportError(f"--url {url}: {exc} ({sent} labels sent before)") from None
        sent += len(batch)
        rejected += answer.get("rejected", 0)
    return sent, rejected


def export_rows(db, model: str, since: float, fmt: str, output: Optional[str]) -> int:
    """Write ``model``'s joined rows recorded in the last ``since`` seconds of ``db`` (a
    :class:`~otel_ml_processor.store.database.Database`) as CSV or Parquet; returns how many."""
    rows = db.export_rows(model, time.time() - since)
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
