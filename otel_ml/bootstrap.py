"""The two-line way in: ``otel_ml.configure()`` sets up everything ``opentelemetry-instrument`` would.

If no OpenTelemetry SDK is configured yet, it configures one from the standard ``OTEL_*``
variables with OTLP exporters for traces, metrics and logs (what ``opentelemetry-distro``
does), then starts system metrics (``opentelemetry-instrumentation-system-metrics``) and the
``MLInstrumentor``. Keyword arguments are ``MLConfig`` fields and ``instrument()`` options.

Example::

    import otel_ml
    otel_ml.configure(service_name="churn-api", model_name="churn", model_version="3")
"""

from __future__ import annotations

import os
from typing import Any, Optional

from opentelemetry import trace

from otel_ml.instrumentation import MLInstrumentor


def configure(service_name: Optional[str] = None, *, system_metrics: bool = True, **options: Any) -> MLInstrumentor:
    """Set up the OTel SDK (if nobody did), system metrics and ML instrumentation; idempotent."""
    if service_name:
        os.environ.setdefault("OTEL_SERVICE_NAME", service_name)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # What opentelemetry-instrument does: the distro's defaults (OTLP for every signal),
        # then its configurator builds the SDK providers from the OTEL_* variables.
        from opentelemetry.distro import OpenTelemetryConfigurator, OpenTelemetryDistro

        OpenTelemetryDistro().configure()
        OpenTelemetryConfigurator().configure()
    if system_metrics:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

        sm = SystemMetricsInstrumentor()
        if not sm.is_instrumented_by_opentelemetry:
            sm.instrument()
    instrumentor = MLInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(**options)
    return instrumentor
