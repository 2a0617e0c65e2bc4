"""otel-ml: OpenTelemetry-native monitoring for machine-learning services.

Inside a model server, ``otel_ml`` records what the model was asked, what it answered and how
sure it was, as OpenTelemetry events and metrics. See ``docs/instrumentation.md``.

Example::

    import otel_ml
    pid = otel_ml.record_prediction("churn", "3", {"age": 42}, label="1", score=0.9)
    otel_ml.record_label("churn", pid, "1")
"""

from otel_ml.api import record_label, record_prediction
from otel_ml.version import __version__

__all__ = ["record_prediction", "record_label", "__version__"]
