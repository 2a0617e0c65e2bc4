"""otel-ml: OpenTelemetry-native monitoring for machine-learning services.

Inside a model server, ``otel_ml`` records what the model was asked, what it answered and how
sure it was, as OpenTelemetry events and metrics. Three ways in (``docs/instrumentation.md``):

1. no code: ``opentelemetry-instrument python serve.py`` (scikit-learn, XGBoost, LightGBM and
   ONNX Runtime predict calls are instrumented through the ``MLInstrumentor`` entry point);
2. two lines: ``import otel_ml; otel_ml.configure(model_name="churn", model_version="3")``;
3. explicit API: ``record_prediction``, ``record_label``, ``monitor_predict``; and
   ``model_context(name=..., version=...)`` to name the predictions of a server otel-ml does not know.

Example::

    import otel_ml
    pid = otel_ml.record_prediction("churn", "3", {"age": 42}, label="1", score=0.9)
    otel_ml.record_label("churn", pid, "1")
"""

from otel_ml.api import record_audit, record_label, record_prediction, set_model
from otel_ml.version import __version__


def shutdown() -> None:
    """Stop otel-ml now: record what is queued, ship within ``OTEL_ML_SHUTDOWN_TIMEOUT``, keep
    the rest on disk, and restore the instrumented methods. For servers whose exit skips
    ``atexit``: call it from the app's shutdown hook (uvicorn, which re-raises SIGTERM, is
    handled by ``otel_ml.instrumentation.uvicorn``)."""
    from otel_ml.instrumentation import MLInstrumentor

    instrumentor = MLInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def update_config(actor=None, **changes):
    """Change otel-ml settings at run time, e.g. ``update_config(sample_ratio=0.1)``; writes an
    ``ml.audit`` ``config_change`` event (who: ``actor`` or this process) and returns
    ``{setting: (old, new)}``. Settings read at start (buffer path, export interval) do not
    change a running buffer."""
    from otel_ml import pipeline

    active = pipeline.active()
    if active is None:
        raise RuntimeError("otel-ml is not active: use opentelemetry-instrument or otel_ml.configure() first")
    return active.recorder.update_config(actor=actor, **changes)


def __getattr__(name: str):
    # Lazy: ``import otel_ml`` stays light (no SDK threads, no wrapt) until these are used.
    if name == "configure":
        from otel_ml.bootstrap import configure

        return configure
    if name == "monitor_predict":
        from otel_ml.timing import monitor_predict

        return monitor_predict
    if name in ("prediction_context", "last_prediction_ids", "model_context"):
        from otel_ml import calls

        return getattr(calls, name)
    if name == "MLInstrumentor":
        from otel_ml.instrumentation import MLInstrumentor

        return MLInstrumentor
    raise AttributeError(f"module 'otel_ml' has no attribute {name!r}")


__all__ = [
    "record_prediction", "record_label", "record_audit", "configure", "monitor_predict",
    "prediction_context", "last_prediction_ids", "model_context", "set_model", "MLInstrumentor", "shutdown", "update_config",
    "__version__",
]
