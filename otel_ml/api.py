"""Explicit API: record predictions, true labels and audit events; name a model in code.

Each call emits one event (an OTel LogRecord with ``event_name`` ``ml.prediction``,
``ml.label`` or ``ml.audit``) carrying the current trace context. While otel-ml is active
(``opentelemetry-instrument`` or ``otel_ml.configure()``) it is encoded at once into OTLP bytes
and queued for otel-ml's disk buffer, so it travels over the same OTLP endpoint and with the
same resource as the rest of the service's telemetry. Given a ``logger_provider`` (or when
otel-ml is not active: the global one), it is emitted through that provider as an SDK log record.

Example::

    import otel_ml
    from otel_ml.providers import build_logger_provider

    provider = build_logger_provider()          # OTLP, from the standard OTEL_* variables
    pid = otel_ml.record_prediction(
        "churn", "3", {"age": 42, "plan": "pro"},
        label="1", score=0.83, segments={"gender": "f"}, logger_provider=provider,
    )
    ...                                         # hours later, when the truth is known
    otel_ml.record_label("churn", pid, "0", logger_provider=provider)
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Mapping, Optional, Union

from opentelemetry._logs import LoggerProvider, get_logger_provider

from otel_ml import semconv as sc
from otel_ml.registry import register
from otel_ml.version import __version__

Scalar = Union[str, bool, int, float]


def _active():
    from otel_ml import pipeline  # keep ``import otel_ml`` light

    return pipeline.active()


def _emit(event_name: str, attrs: dict, logger_provider: Optional[LoggerProvider]) -> None:
    now = time.time_ns()
    active = _active() if logger_provider is None else None
    if active is not None:
        # otel-ml's own path: encoded now, committed to the disk buffer within 100 ms.
        from opentelemetry import trace

        from otel_ml.events import TraceIds

        active.record(event_name, attrs, now, TraceIds.of(trace.get_current_span().get_span_context()))
        return
    provider = logger_provider if logger_provider is not None else get_logger_provider()
    provider.get_logger(sc.INSTRUMENTATION_NAME, __version__).emit(
        event_name=event_name, attributes=attrs, timestamp=now)


def prediction_attributes(
    model_name: str,
    model_version: str,
    features: Mapping[str, Scalar],
    *,
    prediction_id: str,
    label: Optional[str] = None,
    value: Optional[float] = None,
    score: Optional[float] = None,
    probabilities: Optional[Mapping[str, float]] = None,
    segments: Optional[Mapping[str, Scalar]] = None,
    task: Optional[str] = None,
) -> dict:
    """The ``ml.prediction`` attributes of one prediction (see docs/semantic-conventions.md)."""
    attrs: dict = {
        sc.ML_MODEL_NAME: model_name,
        sc.ML_MODEL_VERSION: str(model_version),
        sc.ML_PREDICTION_ID: prediction_id,
    }
    if task is None:
        task = sc.TASK_REGRESSION if value is not None and label is None else sc.TASK_CLASSIFICATION
    attrs[sc.ML_MODEL_TASK] = task
    for name, v in features.items():
        attrs[sc.feature_key(name)] = v
    if label is not None:
        attrs[sc.ML_OUTPUT_LABEL] = str(label)
    if value is not None:
        attrs[sc.ML_OUTPUT_VALUE] = float(value)
    if score is not None:
        attrs[sc.ML_OUTPUT_SCORE] = float(score)
    for cls, p in (probabilities or {}).items():
        attrs[sc.probability_key(str(cls))] = float(p)
    for name, v in (segments or {}).items():
        attrs[sc.segment_key(name)] = v
    return attrs


def record_prediction(
    model_name: str,
    model_version: str,
    features: Mapping[str, Scalar],
    *,
    label: Optional[str] = None,
    value: Optional[float] = None,
    score: Optional[float] = None,
    probabilities: Optional[Mapping[str, float]] = None,
    segments: Optional[Mapping[str, Scalar]] = None,
    prediction_id: Optional[str] = None,
    task: Optional[str] = None,
    logger_provider: Optional[LoggerProvider] = None,
) -> str:
    """Emit one ``ml.prediction`` event and return its prediction id.

    ``label`` is the predicted class (classification), ``value`` the predicted number
    (regression), ``score`` the confidence of the predicted class in [0, 1]. The returned id
    (a new UUID unless ``prediction_id`` is given) is what ``record_label`` needs later.
    The record keeps the current trace context.
    """
    pid = prediction_id if prediction_id is not None else uuid.uuid4().hex
    attrs = prediction_attributes(
        model_name, model_version, features, prediction_id=pid, label=label, value=value,
        score=score, probabilities=probabilities, segments=segments, task=task,
    )
    _emit(sc.EVENT_PREDICTION, attrs, logger_provider)
    return pid


def record_label(
    model_name: str,
    prediction_id: str,
    value: Union[str, float],
    *,
    logger_provider: Optional[LoggerProvider] = None,
) -> None:
    """Emit one ``ml.label`` event: the true label (class string, or number) of a prediction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = str(value)
    else:
        value = float(value)
    attrs = {sc.ML_MODEL_NAME: model_name, sc.ML_PREDICTION_ID: prediction_id, sc.ML_LABEL_VALUE: value}
    _emit(sc.EVENT_LABEL, attrs, logger_provider)


def record_audit(
    action: str,
    model_name: str,
    model_version: str,
    detail: str = "",
    *,
    actor: Optional[str] = None,
    logger_provider: Optional[LoggerProvider] = None,
) -> None:
    """Emit one ``ml.audit`` event: ``action`` is ``model_load``, ``version_change`` or
    ``config_change``; ``actor`` defaults to ``OTEL_ML_AUDIT_ACTOR`` or this process's
    ``user@host pid N``."""
    if action not in sc.AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; use one of {sc.AUDIT_ACTIONS}")
    if actor is None:
        from otel_ml.recorder import default_actor

        actor = os.environ.get(sc.ENV_AUDIT_ACTOR) or default_actor()
    attrs = {sc.ML_AUDIT_ACTION: action, sc.ML_AUDIT_ACTOR: actor, sc.ML_MODEL_NAME: model_name,
             sc.ML_MODEL_VERSION: str(model_version), sc.ML_AUDIT_DETAIL: detail}
    from otel_ml.events import audit_id

    attrs[sc.ML_AUDIT_ID] = audit_id(attrs, time.time_ns())
    _emit(sc.EVENT_AUDIT, attrs, logger_provider)


def set_model(model: Any, name: str, version: str) -> None:
    """Give ``model``'s predictions the name and version ``name`` / ``version``.

    Also writes an ``ml.audit`` event (``model_load``, or ``version_change`` when ``name`` was
    seen with another version) when otel-ml is active.

    Example::

        model = joblib.load("churn-3.joblib")
        otel_ml.set_model(model, "churn", "3")     # its predictions now carry churn / 3
    """
    active = _active()
    if active is not None:
        # Names are resolved on the background thread: calls made before this one keep the old name.
        active.recorder.flush()
    register(model, name, version)
    if active is not None:
        active.recorder.note_model(str(name), str(version),
                                   f"registered {type(model).__module__}.{type(model).__qualname__}")
