"""Settings of the otel-ml SDK: from ``OTEL_ML_*`` environment variables, or given in code.

Every duration is in milliseconds, as the OpenTelemetry SDK's own variables are. A value given
in code wins over the environment, which wins over the default.

| variable | default | meaning |
|---|---|---|
| ``OTEL_ML_MODEL_NAME`` | (from the model) | model name for auto-instrumented calls |
| ``OTEL_ML_MODEL_VERSION`` | (from the model, else ``unknown``) | model version |
| ``OTEL_ML_BUFFER_PATH`` | ``$XDG_STATE_HOME/otel-ml/<service.name>.db`` | SQLite buffer file; empty = no disk buffer |
| ``OTEL_ML_BUFFER_MAX_BYTES`` | 104857600 (100 MiB) | bound on buffered record bytes; oldest dropped first |
| ``OTEL_ML_EXPORT_INTERVAL`` | 1000 | ms between shipments of buffered records |
| ``OTEL_ML_EXPORT_BATCH_SIZE`` | 512 | records per OTLP request |
| ``OTEL_ML_SHUTDOWN_TIMEOUT`` | 5000 | ms to keep trying (with back-off) to ship on a normal exit; the rest stays on disk |
| ``OTEL_ML_SAMPLE_RATIO`` | 1.0 | fraction of predictions sent as ``ml.prediction`` events |
| ``OTEL_ML_MAX_TEXT_LENGTH`` | 256 | longer string features are summarized by their length |
| ``OTEL_ML_MAX_QUEUE_SIZE`` | 100000 | calls waiting for the background thread; beyond it they are dropped and counted |
| ``OTEL_ML_AUDIT_ACTOR`` | ``user@host pid N`` | who ``ml.audit`` events name as the actor |
| ``OTEL_ML_LOGGING_BRIDGE`` | ``true`` | bridge Python ``logging`` to OTel logs |

Example::

    from otel_ml.config import MLConfig

    cfg = MLConfig.from_env(sample_ratio=0.1)        # code wins over OTEL_ML_SAMPLE_RATIO
    assert cfg.sample_ratio == 0.1
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Optional

from otel_ml import semconv as sc

_log = logging.getLogger(__name__)

DEFAULT_BUFFER_MAX_BYTES = 100 * 1024 * 1024


def default_buffer_path(service_name: str) -> str:
    """``$XDG_STATE_HOME/otel-ml/<service_name>.db`` (``~/.local/state`` when unset).

    A stable path per service, so a restarted server finds what its previous run left.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name) or "service"
    return os.path.join(base, "otel-ml", safe + ".db")


@dataclass
class MLConfig:
    """Effective SDK settings (see the module docstring for each one)."""

    model_name: Optional[str] = None
    model_version: Optional[str] = None
    buffer_path: Optional[str] = None          # None: the default path; "": no disk buffer
    buffer_max_bytes: int = DEFAULT_BUFFER_MAX_BYTES
    export_interval_ms: int = 1000
    export_batch_size: int = 512
    shutdown_timeout_ms: int = 5000
    sample_ratio: float = 1.0
    max_text_length: int = 256
    max_queue_size: int = 100_000
    audit_actor: Optional[str] = None
    logging_bridge: bool = True

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **overrides) -> "MLConfig":
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` (None = not given)."""
        env = os.environ if env is None else env
        cfg = cls()
        readers = (
            ("model_name", sc.ENV_MODEL_NAME, str),
            ("model_version", sc.ENV_MODEL_VERSION, str),
            ("buffer_path", sc.ENV_BUFFER_PATH, str),
            ("buffer_max_bytes", sc.ENV_BUFFER_MAX_BYTES, int),
            ("export_interval_ms", sc.ENV_EXPORT_INTERVAL, int),
            ("export_batch_size", sc.ENV_EXPORT_BATCH_SIZE, int),
            ("shutdown_timeout_ms", sc.ENV_SHUTDOWN_TIMEOUT, int),
            ("sample_ratio", sc.ENV_SAMPLE_RATIO, float),
            ("max_text_length", sc.ENV_MAX_TEXT_LENGTH, int),
            ("max_queue_size", sc.ENV_MAX_QUEUE_SIZE, int),
            ("audit_actor", sc.ENV_AUDIT_ACTOR, str),
            ("logging_bridge", sc.ENV_LOGGING_BRIDGE, _parse_bool),
        )
        for field, var, parse in readers:
            raw = env.get(var)
            if raw is None:
                continue
            try:
                setattr(cfg, field, parse(raw.strip()))
            except ValueError:
                # A bad variable must not stop the model server: keep the default, say so once.
                _log.warning("otel-ml: ignoring %s=%r (not a valid %s)", var, raw, parse.__name__)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise TypeError(f"unknown otel-ml setting {key!r}; known: {sorted(known)}")
            if value is not None:
                setattr(cfg, key, value)
        cfg.sample_ratio = min(1.0, max(0.0, float(cfg.sample_ratio)))
        return cfg


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_parse_bool.__name__ = "bool"
