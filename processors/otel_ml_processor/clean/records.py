"""Typed records the clean stage hands to storage.

Example::

    from otel_ml_processor.clean.records import LabelRecord
    LabelRecord(model="churn", prediction_id="p1", value="1", time=1700000000.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import orjson

Scalar = Union[str, float, None]


def dumps(obj: dict) -> str:
    """Compact JSON of a record's mapping field (``{}`` without work when empty).

    orjson: 1.4 µs for 20 features where ``json.dumps`` took 5.8 (it runs for every record), and
    a NaN or infinity that reaches here (an extra attribute) is written ``null``, valid JSON.
    """
    return orjson.dumps(obj).decode() if obj else "{}"


@dataclass(slots=True)
class PredictionRecord:
    model: str
    model_version: str
    prediction_id: str
    task: str
    time: float
    features: dict                       # name -> float | str | None (None = missing)
    output_label: Optional[str] = None
    output_value: Optional[float] = None
    score: Optional[float] = None
    probabilities: dict = field(default_factory=dict)   # class -> float
    segments: dict = field(default_factory=dict)        # attribute -> str | None
    extra: dict = field(default_factory=dict)           # other attributes, anonymized
    trace_id: str = ""
    span_id: str = ""
    #: JSON of (features, segments, probabilities, extra), made by the ingest worker so that the
    #: writer thread need not; None when not made yet or when a field changed since.
    encoded: Optional[tuple] = None

    def encode(self) -> tuple:
        if self.encoded is None:
            self.encoded = (dumps(self.features), dumps(self.segments), dumps(self.probabilities), dumps(self.extra))
        return self.encoded

    def __reduce__(self):
        # Positional pickling: half the cost of the default for slotted dataclasses, and
        # records cross from ingest workers to the writer by the thousand.
        return (PredictionRecord, (
            self.model, self.model_version, self.prediction_id, self.task, self.time, self.features,
            self.output_label, self.output_value, self.score, self.probabilities, self.segments,
            self.extra, self.trace_id, self.span_id, self.encoded))


@dataclass(slots=True)
class LabelRecord:
    model: str
    prediction_id: str
    value: Union[str, float]
    time: float


@dataclass(slots=True)
class AuditRecord:
    model: str
    model_version: str
    action: str
    actor: str
    detail: str
    time: float
    audit_id: Optional[str] = None        # ml.audit.id: stored once (None from older SDKs: always kept)
