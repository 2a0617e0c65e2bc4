"""Validate flattened OTLP events against the wire contract (docs/processor.md, "Cleaning").

Rules, each with its counter:
- A prediction or label without ``ml.model.name``, ``ml.prediction.id`` (and, for a prediction,
  ``ml.model.version``; for a label, ``ml.label.value``) is rejected: ``missing_attribute``.
- One of those of the wrong type (not a string; a label value neither string nor number), an
  unknown ``ml.model.task`` or an audit action outside the documented set is rejected:
  ``invalid_attribute``.
- A feature value that is NaN or infinite becomes missing: issue ``nan``. An array or map
  becomes missing: ``unsupported_type``. Booleans are the strings ``true`` / ``false``
  (categorical); numbers are floats. The row itself stays. (Kind changes and missing features
  need memory across records: ``clean/kinds.py``.)
- A score that is NaN, infinite or outside [0, 1] is dropped from the row:
  ``feature="__score__"``, issue ``nan`` / ``out_of_range``.

Example::

    v = Validator(issues=counter_fn)
    result = v.validate(event)     # PredictionRecord | LabelRecord | AuditRecord | Rejection | None
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import AuditRecord, LabelRecord, PredictionRecord
from otel_ml_processor.receive.otlp import LogEvent

IssueSink = Callable[[str, str, str], None]   # (model, feature, issue)

_NUMERIC, _TEXT = "numeric", "text"
_FEATURE = sc.ML_FEATURE_PREFIX
_SEGMENT = sc.ML_SEGMENT_PREFIX
_PROB = sc.ML_OUTPUT_PROBABILITY_PREFIX
_FEATURE_LEN, _SEGMENT_LEN = len(_FEATURE), len(_SEGMENT)
#: Longest model name, model version or prediction id accepted (the database's key columns).
MAX_KEY_LENGTH = 255
_INF = (math.inf, -math.inf)
#: Bound on the feature names (and on the string values) a validator remembers: senders choose them.
MAX_CACHED_NAMES = 10_000
#: Longest string value a validator shares (categories and ids are short; free text is not).
MAX_SHARED_LENGTH = 64
_KNOWN = {
    sc.ML_MODEL_NAME, sc.ML_MODEL_VERSION, sc.ML_MODEL_TASK, sc.ML_PREDICTION_ID,
    sc.ML_OUTPUT_LABEL, sc.ML_OUTPUT_VALUE, sc.ML_OUTPUT_SCORE,
}


@dataclass(slots=True)
class Rejection:
    reason: str
    signal: str
    model: Optional[str]
    message: str


Validated = Union[PredictionRecord, LabelRecord, AuditRecord, Rejection, None]


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Validator:
    """Stateless validator (it can run in any ingest worker process).

    What needs memory across records (a feature's first kind, the features a model sent
    before) is checked afterwards by :class:`otel_ml_processor.clean.kinds.FeatureKinds`.
    """

    def __init__(self, issues: IssueSink):
        self._issues = issues
        #: feature attribute key -> feature name, one str object per name: records of a batch
        #: then share their keys, so the batch pickles each name once and the writer thread
        #: hashes it once (a slice per record made 20 new strings per record).
        self._names: dict = {}
        #: the same for repeated string values (model, version, task, labels, categories)
        self._shared: dict = {}

    def _share(self, value: str) -> str:
        """The one str object kept for ``value`` (``value`` itself when not kept)."""
        kept = self._shared.get(value)
        if kept is not None:
            return kept
        # Short values only: the cache must stay small whatever the senders send.
        if 0 < len(value) <= MAX_SHARED_LENGTH and len(self._shared) < MAX_CACHED_NAMES:
            self._shared[value] = value
        return value

    def validate(self, event: LogEvent) -> Validated:
        """The typed record of ``event``, a :class:`Rejection`, or None for a non-ML log."""
        name = event.event_name
        if name == sc.EVENT_PREDICTION:
            return self._prediction(event)
        if name == sc.EVENT_LABEL:
            return self._label(event)
        if name == sc.EVENT_AUDIT:
            return self._audit(event)
        return None

    def _required(self, attrs: dict, keys: tuple, signal: str) -> Optional[Rejection]:
        model = attrs.get(sc.ML_MODEL_NAME)
        model = model if isinstance(model, str) and model else None
        for key in keys:
            v = attrs.get(key)
            if v is None or v == "":
                return Rejection(sc.REASON_MISSING_ATTRIBUTE, signal, model, f"{key} is missing")
            if not isinstance(v, str):
                return Rejection(sc.REASON_INVALID_ATTRIBUTE, signal, model, f"{key} must be a string")
            if len(v) > MAX_KEY_LENGTH or "\x00" in v:
                # Key columns are VARCHAR(255) and text cannot hold NUL on PostgreSQL: one such
                # record would fail its whole batch there.
                return Rejection(sc.REASON_INVALID_ATTRIBUTE, signal, None,
                                 f"{key} must be at most {MAX_KEY_LENGTH} characters, without NUL")
        return None

    def _prediction(self, event: LogEvent) -> Union[PredictionRecord, Rejection]:
        a = event.attributes
        bad = self._required(a, (sc.ML_MODEL_NAME, sc.ML_MODEL_VERSION, sc.ML_PREDICTION_ID), sc.SIGNAL_PREDICTION)
        if bad:
            return bad
        model = a[sc.ML_MODEL_NAME]
        label = a.get(sc.ML_OUTPUT_LABEL)
        value = a.get(sc.ML_OUTPUT_VALUE)
        task = a.get(sc.ML_MODEL_TASK)
        if task is None:
            task = sc.TASK_REGRESSION if label is None and value is not None else sc.TASK_CLASSIFICATION
        if task not in sc.TASKS:
            return Rejection(sc.REASON_INVALID_ATTRIBUTE, sc.SIGNAL_PREDICTION, model, f"{sc.ML_MODEL_TASK}={task!r}")
        if label is not None:
            label = str(label).lower() if isinstance(label, bool) else str(label) if isinstance(label, (str, int, float)) else None
            if label is not None and "\x00" in label:
                return Rejection(sc.REASON_INVALID_ATTRIBUTE, sc.SIGNAL_PREDICTION, model, f"{sc.ML_OUTPUT_LABEL} contains NUL")
        if value is not None:
            if not _finite(value):
                return Rejection(sc.REASON_INVALID_ATTRIBUTE, sc.SIGNAL_PREDICTION, model, f"{sc.ML_OUTPUT_VALUE} must be a finite number")
            value = float(value)
        if task == sc.TASK_CLASSIFICATION and label is None:
            return Rejection(sc.REASON_MISSING_ATTRIBUTE, sc.SIGNAL_PREDICTION, model, f"{sc.ML_OUTPUT_LABEL} is missing")
        if task == sc.TASK_REGRESSION and value is None:
            return Rejection(sc.REASON_MISSING_ATTRIBUTE, sc.SIGNAL_PREDICTION, model, f"{sc.ML_OUTPUT_VALUE} is missing")
        score = a.get(sc.ML_OUTPUT_SCORE)
        if score is not None:
            if not _finite(score):
                self._issues(model, sc.FEATURE_SCORE, sc.ISSUE_NAN if isinstance(score, float) else sc.ISSUE_UNSUPPORTED_TYPE)
                score = None
            elif not 0.0 <= score <= 1.0:
                self._issues(model, sc.FEATURE_SCORE, sc.ISSUE_OUT_OF_RANGE)
                score = None
            else:
                score = float(score)
        features, segments, probabilities, extra = {}, {}, {}, {}
        issue, names, share = self._issues, self._names, self._share
        for key, v in a.items():
            # One pass over the attributes: this loop is the ingest hot path.
            if key.startswith(_FEATURE):
                name = names.get(key)
                if name is None:
                    name = key[_FEATURE_LEN:]
                    if len(names) < MAX_CACHED_NAMES and len(key) <= MAX_KEY_LENGTH:
                        names[key] = name
                if type(v) is float or type(v) is int:
                    if v != v or v in _INF:
                        issue(model, name, sc.ISSUE_NAN)
                        v = None
                    else:
                        v = float(v)
                elif type(v) is str:
                    v = share(v)
                elif type(v) is bool:
                    v = "true" if v else "false"
                else:
                    issue(model, name, sc.ISSUE_UNSUPPORTED_TYPE)
                    v = None
                features[name] = v
            elif key.startswith(_SEGMENT):
                segments[key[_SEGMENT_LEN:]] = self._segment(v)
            elif key.startswith(_PROB):
                if _finite(v) and 0.0 <= v <= 1.0:
                    probabilities[key[len(_PROB):]] = float(v)
            elif key not in _KNOWN:
                extra[key] = v
        version = a[sc.ML_MODEL_VERSION]
        return PredictionRecord(
            model=share(model), model_version=share(version), prediction_id=a[sc.ML_PREDICTION_ID],
            task=share(task), time=event.time, features=features,
            output_label=label if label is None else share(label), output_value=value, score=score, probabilities=probabilities, segments=segments, extra=extra,
            trace_id=event.trace_id, span_id=event.span_id,
        )

    @staticmethod
    def _segment(v: object) -> Optional[str]:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (str, int)) or _finite(v):
            return str(v)
        return None

    def _label(self, event: LogEvent) -> Union[LabelRecord, Rejection]:
        a = event.attributes
        bad = self._required(a, (sc.ML_MODEL_NAME, sc.ML_PREDICTION_ID), sc.SIGNAL_LABEL)
        if bad:
            return bad
        v = a.get(sc.ML_LABEL_VALUE)
        model = a[sc.ML_MODEL_NAME]
        if v is None or v == "":
            return Rejection(sc.REASON_MISSING_ATTRIBUTE, sc.SIGNAL_LABEL, model, f"{sc.ML_LABEL_VALUE} is missing")
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            if not math.isfinite(v):
                return Rejection(sc.REASON_INVALID_ATTRIBUTE, sc.SIGNAL_LABEL, model, f"{sc.ML_LABEL_VALUE} must be finite")
            v = float(v)
        elif not isinstance(v, str) or "\x00" in v:
            return Rejection(sc.REASON_INVALID_ATTRIBUTE, sc.SIGNAL_LABEL, model,
                             f"{sc.ML_LABEL_VALUE} must be a string (without NUL) or a number")
        return LabelRecord(model=model, prediction_id=a[sc.ML_PREDICTION_ID], value=v, time=event.time)

    def _audit(self, event: LogEvent) -> Union[AuditRecord, Rejection]:
        a = event.attributes
        bad = self._required(a, (sc.ML_MODEL_NAME, sc.ML_AUDIT_ACTION), sc.SIGNAL_AUDIT)
        if bad:
            return bad
        if a[sc.ML_AUDIT_ACTION] not in sc.AUDIT_ACTIONS:
            return Rejection(sc.REASON_INVALID_ATTRIBUTE, sc.SIGNAL_AUDIT, a[sc.ML_MODEL_NAME], f"{sc.ML_AUDIT_ACTION} unknown")
        return AuditRecord(
            model=a[sc.ML_MODEL_NAME], model_version=str(a.get(sc.ML_MODEL_VERSION, "")),
            action=a[sc.ML_AUDIT_ACTION], actor=str(a.get(sc.ML_AUDIT_ACTOR, "")).replace("\x00", ""),
            detail=str(a.get(sc.ML_AUDIT_DETAIL, "")).replace("\x00", ""), time=event.time,
            audit_id=str(a[sc.ML_AUDIT_ID])[:64].replace("\x00", "") if a.get(sc.ML_AUDIT_ID) else None,
        )
