"""Per-(model, version) windows of predictions (stand-in until the full engine lands)."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class WindowData:
    model: str
    model_version: str
    task: str
    prediction_ids: np.ndarray
    timestamps: np.ndarray
    features: dict
    output_label: np.ndarray
    output_value: np.ndarray
    score: np.ndarray
    probabilities: dict
    segments: dict
    label: np.ndarray


def _column(values: list) -> np.ndarray:
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return np.array([math.nan if v is None else float(v) for v in values], dtype=float)
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def rows_to_window(model: str, version: str, task: str, rows: list) -> WindowData:
    names = sorted({k for r in rows for k in r["features"]})
    segs = sorted({k for r in rows for k in r["segments"]})
    classes = sorted({k for r in rows for k in r["probabilities"]})
    nan = math.nan
    return WindowData(
        model=model, model_version=version, task=task,
        prediction_ids=np.array([r["prediction_id"] for r in rows], dtype=object),
        timestamps=np.array([r["timestamp"] for r in rows], dtype=float),
        features={n: _column([r["features"].get(n) for r in rows]) for n in names},
        output_label=np.array([r["output_label"] for r in rows], dtype=object),
        output_value=np.array([nan if r["output_value"] is None else r["output_value"] for r in rows], dtype=float),
        score=np.array([nan if r["score"] is None else r["score"] for r in rows], dtype=float),
        probabilities={c: np.array([r["probabilities"].get(c, nan) for r in rows], dtype=float) for c in classes},
        segments={s: np.array([r["segments"].get(s) for r in rows], dtype=object) for s in segs},
        label=np.array([r["label"] for r in rows], dtype=object),
    )


class WindowBuffer:
    """The latest ``size`` rows (and none older than ``max_age`` seconds) of one model version."""

    def __init__(self, model: str, model_version: str, task: str, size: int, max_age: Optional[float] = None):
        self.model, self.model_version, self.task = model, model_version, task
        self.size, self.max_age = size, max_age
        self._rows: "OrderedDict[str, dict]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: dict) -> None:
        self._rows[row["prediction_id"]] = row
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def set_label(self, prediction_id: str, label: object) -> bool:
        row = self._rows.get(prediction_id)
        if row is None:
            return False
        row["label"] = label
        return True

    def snapshot(self, now: Optional[float] = None) -> WindowData:
        rows = sorted(self._rows.values(), key=lambda r: r["timestamp"])
        if self.max_age is not None and now is not None:
            rows = [r for r in rows if r["timestamp"] >= now - self.max_age]
        return rows_to_window(self.model, self.model_version, self.task, rows)
