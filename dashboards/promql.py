"""PromQL spelled from otel-ml's names: selectors, counters, histograms, recording-rule names.

Both generators (``prometheus/generate.py`` and ``grafana/generate.py``) build their
expressions with these helpers and the names of :mod:`otel_ml.semconv`, so no otel-ml metric
or label name is spelled as a literal twice.

Example::

    from otel_ml import semconv as sc
    from dashboards.promql import eq, sel, counter, rule_name

    sel(sc.M_DRIFT_DETECTED, eq(sc.L_FEATURE, sc.FEATURE_PREDICTION))
    # -> 'ml_drift_detected{feature="__prediction__"}'
    counter(sc.M_RECORDS_RECEIVED)                  # -> 'ml_records_received_total'
    rule_name([sc.L_MODEL], sc.PROM_CLIENT_ERRORS, "ratio_rate5m")
    # -> 'model:ml_client_errors:ratio_rate5m'
"""

from __future__ import annotations

from collections.abc import Iterable

from otel_ml import semconv as sc

# Prometheus' own label names (not otel-ml's: they are the same in every Prometheus setup).
LE = "le"
JOB = "job"
INSTANCE = "instance"
METRIC_NAME = "__name__"

#: The labels that name one model version in every processor series.
MODEL_VERSION = (sc.L_MODEL, sc.L_MODEL_VERSION)
#: The same, as model servers' OTel metrics carry them.
CLIENT_MODEL_VERSION = (sc.PROM_LABEL_MODEL_NAME, sc.PROM_LABEL_MODEL_VERSION)
#: ``feature`` values that are not model inputs (prediction drift, multivariate drift).
PSEUDO_FEATURES = f"{sc.FEATURE_PREDICTION}|{sc.FEATURE_MULTIVARIATE}"


def eq(label: str, value: str) -> str:
    """``label="value"``."""
    return f'{label}="{value}"'


def ne(label: str, value: str) -> str:
    """``label!="value"``."""
    return f'{label}!="{value}"'


def match(label: str, pattern: str) -> str:
    """``label=~"pattern"``."""
    return f'{label}=~"{pattern}"'


def not_match(label: str, pattern: str) -> str:
    """``label!~"pattern"``."""
    return f'{label}!~"{pattern}"'


def sel(metric: str, *matchers: str) -> str:
    """A series selector: ``metric{m1, m2}`` (just ``metric`` without matchers)."""
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def labels(names: Iterable[str]) -> str:
    """``(a, b)``: the label list of ``by``, ``without``, ``on``, ``ignoring``."""
    return f"({', '.join(names)})"


def counter(name: str) -> str:
    """Prometheus name of a processor counter (prometheus_client appends ``_total``)."""
    return name + "_total"


def bucket(histogram: str) -> str:
    """The ``_bucket`` series of a histogram."""
    return histogram + "_bucket"


def rule_name(level: Iterable[str], metric: str, operations: str) -> str:
    """A recording rule's name, ``level:metric:operations`` (the Prometheus convention):
    ``level`` is the labels the result keeps, ``metric`` loses a counter's ``_total``."""
    return f"{'_'.join(level)}:{metric.removesuffix('_total')}:{operations}"
