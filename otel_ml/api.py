"""Explicit API: record predictions and true labels as OpenTelemetry events.

Each call emits one OTel LogRecord with ``event_name`` ``ml.prediction`` or ``ml.label``
through a ``LoggerProvider`` (the one passed; else otel-ml's own, with its disk buffer, when
``opentelemetry-instrument`` or ``otel_ml.configure()`` activated otel-ml; else the global one), so it travels over the
same OTLP exporter, endpoint and resource as the rest of the service's telemetry.

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
from typing import Mapping, Optional, Union

from opentelemetry._logs import LoggerProvider, get_logger_provider

from otel_ml import semconv as sc
from otel_ml.version import __version__

Scalar = Union[str, bool, int, float]


def _logger(logger_provider: Optional[LoggerProvider]):
    provider = logger_provider
    if provider is None:
        # While otel-ml is active its own provider (with the disk buffer) carries ML events.
        from otel_ml import pipeline  # noqa: PLC0415 - keep ``import otel_ml`` light

        active = pipeline.active()
        provider = active.logger_provider if active is not None else get_logger_provider()
    return provider.get_logger(sc.INSTRUMENTATION_NAME, __version__)


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
        attrs[sc.ML_FEATURE_PREFIX + name] = v
    if label is not None:
        attrs[sc.ML_OUTPUT_LABEL] = str(label)
    if value is not None:
        attrs[sc.ML_OUTPUT_VALUE] = float(value)
    if score is not None:
        attrs[sc.ML_OUTPUT_SCORE] = float(score)
    for cls, p in (probabilities or {}).items():
        attrs[sc.ML_OUTPUT_PROBABILITY_PREFIX + str(cls)] = float(p)
    for name, v in (segments or {}).items():
        attrs[sc.ML_SEGMENT_PREFIX + name] = v
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
    _logger(logger_provider).emit(event_name=sc.EVENT_PREDICTION, attributes=attrs, timestamp=time.time_ns())
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
    _logger(logger_provider).emit(event_name=sc.EVENT_LABEL, attributes=attrs, timestamp=time.time_ns())


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
        from otel_ml.recorder import default_actor  # noqa: PLC0415

        actor = os.environ.get(sc.ENV_AUDIT_ACTOR) or default_actor()
    attrs = {sc.ML_AUDIT_ACTION: action, sc.ML_AUDIT_ACTOR: actor, sc.ML_MODEL_NAME: model_name,
             sc.ML_MODEL_VERSION: str(model_version), sc.ML_AUDIT_DETAIL: detail}
    _logger(logger_provider).emit(event_name=sc.EVENT_AUDIT, attributes=attrs, timestamp=time.time_ns())
