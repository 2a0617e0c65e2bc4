"""The processor's configuration file (YAML), parsed strictly.

Every key has a default (DESIGN.md, "Processor configuration"); an unknown key or a value of
the wrong type raises :class:`ConfigError` naming the key's path and the file, which the CLI
turns into exit status 2.

Example::

    from otel_ml_processor.config import load_config

    cfg = load_config("otel-ml.yaml")        # or load_config(None) for every default
    cfg.receiver.grpc_endpoint               # "127.0.0.1:4317"
    cfg.model("churn").positive_label        # a model not listed gets every default
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from otel_ml import semconv as sc

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class ConfigError(ValueError):
    """A configuration problem, with the offending key's path and the file it came from."""

    def __init__(self, key: str, message: str, source: str = "<defaults>"):
        self.key, self.source = key, source
        super().__init__(f"{source}: {key}: {message}")


def parse_duration(text: Any, key: str = "duration", source: str = "<defaults>") -> float:
    """Seconds in a Prometheus-style duration (``15s``, ``5m``, ``7d``, ``250ms``)."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ConfigError(key, f"expected a duration such as 15s, 5m or 7d, got {text!r}", source)
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(key, f"expected a duration such as 15s, 5m or 7d, got {text!r}", source)
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Optional[str] = None
    key_file: Optional[str] = None


@dataclass(frozen=True)
class ReceiverConfig:
    grpc_endpoint: str = "127.0.0.1:4317"
    http_endpoint: str = "127.0.0.1:4318"
    bearer_token_env: Optional[str] = None
    tls: TLSConfig = TLSConfig()
    max_request_bytes: int = 16 * 1024 * 1024
    max_inflight_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class PrometheusConfig:
    endpoint: str = "127.0.0.1:9464"
    #: serve the model pages ``/`` and ``/models/<name>`` beside ``/metrics`` (aggregates only)
    pages: bool = True
    #: TLS and basic auth of /metrics and the pages, in the format of Prometheus exporters'
    #: ``--web.config.file`` (read by ``export/webconfig.py``; relative to this file's folder)
    web_config_file: Optional[str] = None


@dataclass(frozen=True)
class StorageConfig:
    url: str = "sqlite:///otel-ml.db"
    retention: float = 30 * 86400.0


@dataclass(frozen=True)
class ComputeConfig:
    interval: float = 15.0


@dataclass(frozen=True)
class LabelsConfig:
    pending_max: int = 1_000_000
    pending_ttl: float = 7 * 86400.0


@dataclass(frozen=True)
class LimitsConfig:
    max_models: int = 100
    max_features_per_model: int = 500
    max_groups_per_attribute: int = 50


@dataclass(frozen=True)
class AnonymizationRule:
    attribute: str
    action: str                      # drop | hash | mask | generalize
    keep_chars: Optional[int] = None  # generalize: prefix kept of a string
    bucket: Optional[float] = None    # generalize: width of a numeric bucket


ANONYMIZATION_ACTIONS = ("drop", "hash", "mask", "generalize")


@dataclass(frozen=True)
class AnonymizationConfig:
    hash_key_env: str = "OTEL_ML_HASH_KEY"
    rules: tuple = (
        AnonymizationRule(sc.ENDUSER_ID, "hash"),
        AnonymizationRule(sc.feature_key("email"), "drop"),
        AnonymizationRule(sc.feature_key("zip"), "generalize", keep_chars=3),
    )


@dataclass(frozen=True)
class ReferenceConfig:
    path: Optional[str] = None
    first_n: int = 1000


@dataclass(frozen=True)
class WindowConfig:
    size: int = 10_000
    max_age: Optional[float] = None


@dataclass(frozen=True)
class DriftMethodConfig:
    method: str = "auto"
    threshold: Optional[float] = None


@dataclass(frozen=True)
class DriftConfig:
    #: false-discovery rate of the p-value tests; family-wise rate of the distance floors
    alpha: float = 0.01
    default: DriftMethodConfig = DriftMethodConfig()
    features: dict = field(default_factory=dict)   # feature name -> DriftMethodConfig


@dataclass(frozen=True)
class OODConfig:
    #: the reference's [min, max] is widened on each side by margin x (max - min)
    margin: float = 0.1


@dataclass(frozen=True)
class FairnessConfig:
    attributes: tuple = ()
    min_group_size: int = 30


@dataclass(frozen=True)
class ModelConfig:
    name: str
    task: Optional[str] = None        # None: taken from the records' ml.model.task
    positive_label: Optional[str] = None
    reference: ReferenceConfig = ReferenceConfig()
    window: WindowConfig = WindowConfig()
    drift: DriftConfig = DriftConfig()
    ood: OODConfig = OODConfig()
    fairness: FairnessConfig = FairnessConfig()


@dataclass(frozen=True)
class Config:
    receiver: ReceiverConfig = ReceiverConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    storage: StorageConfig = StorageConfig()
    compute: ComputeConfig = ComputeConfig()
    labels: LabelsConfig = LabelsConfig()
    limits: LimitsConfig = LimitsConfig()
    anonymization: AnonymizationConfig = AnonymizationConfig()
    models: tuple = ()
    source: str = "<defaults>"
    base_dir: str = "."

    def model(self, name: str) -> ModelConfig:
        """The configuration of model ``name``; a model not listed gets every default."""
        for m in self.models:
            if m.name == name:
                return m
        return ModelConfig(name=name)

    def resolve_path(self, path: str) -> str:
        """A path from the file, taken relative to the file's folder."""
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)


# --- strict parsing ---------------------------------------------------------------------------

_DURATION_FIELDS = {"retention", "interval", "pending_ttl", "max_age"}


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str):
        raise ConfigError(key, message, self.source)

    def mapping(self, value: Any, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def scalar(self, value: Any, kind: type, key: str, optional: bool) -> Any:
        if value is None:
            if optional:
                return None
            self.fail(key, f"expected {kind.__name__}, got null")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith(("positive_label",)):
            return str(value)  # positive_label: 1 in YAML is the class "1"
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(key, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    def dataclass(self, cls: type, value: Any, key: str, **overrides: Any):
        data = self.mapping(value, key)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for k in data:
            if k not in fields or k in overrides:
                known = ", ".join(n for n in fields if n not in overrides)
                self.fail(f"{key}.{k}" if key else k, f"unknown key (known keys: {known})")
        kwargs = dict(overrides)
        for name, value in data.items():
            kwargs[name] = self.field(cls, fields[name], value, f"{key}.{name}" if key else name)
        return cls(**kwargs)

    def field(self, cls: type, f: dataclasses.Field, value: Any, key: str) -> Any:
        sub = {
            "tls": TLSConfig, "reference": ReferenceConfig, "window": WindowConfig,
            "fairness": FairnessConfig, "default": DriftMethodConfig, "ood": OODConfig,
        }
        if cls is Config and f.name in ("receiver", "prometheus", "storage", "compute", "labels", "limits"):
            target = {
                "receiver": ReceiverConfig, "prometheus": PrometheusConfig, "storage": StorageConfig,
                "compute": ComputeConfig, "labels": LabelsConfig, "limits": LimitsConfig,
            }[f.name]
            return self.dataclass(target, value, key)
        if cls is Config and f.name == "anonymization":
            return self.anonymization(value, key)
        if cls is Config and f.name == "models":
            return self.models(value, key)
        if cls is ModelConfig and f.name == "drift":
            return self.drift(value, key)
        if f.name in sub and cls in (ReceiverConfig, ModelConfig, DriftConfig):
            return self.dataclass(sub[f.name], value, key)
        if f.name in _DURATION_FIELDS:
            return None if value is None and f.default is None else parse_duration(value, key, self.source)
        if f.name == "attributes":
            items = value if isinstance(value, list) else self.fail(key, "expected a list of attribute names")
            return tuple(self.scalar(v, str, f"{key}[{i}]", False) for i, v in enumerate(items))
        annotation = str(f.type)
        optional = "Optional" in annotation or f.default is None
        t = next(k for n, k in (("bool", bool), ("int", int), ("float", float), ("str", str)) if n in annotation)
        result = self.scalar(value, t, key, optional)
        if isinstance(result, (int, float)) and not isinstance(result, bool) and result < 0:
            self.fail(key, f"must not be negative, got {result!r}")
        return result

    def drift(self, value: Any, key: str) -> DriftConfig:
        data = self.mapping(value, key)
        for k in data:
            if k not in ("alpha", "default", "features"):
                self.fail(f"{key}.{k}", "unknown key (known keys: alpha, default, features)")
        alpha = DriftConfig.alpha
        if "alpha" in data:
            alpha = self.scalar(data["alpha"], float, f"{key}.alpha", False)
            if not 0.0 < alpha < 1.0:
                self.fail(f"{key}.alpha", f"must be between 0 and 1 (exclusive), got {alpha!r}")
        default = self.dataclass(DriftMethodConfig, data.get("default"), f"{key}.default")
        features = {
            str(name): self.dataclass(DriftMethodConfig, spec, f"{key}.features.{name}")
            for name, spec in self.mapping(data.get("features"), f"{key}.features").items()
        }
        return DriftConfig(alpha=alpha, default=default, features=features)

    def anonymization(self, value: Any, key: str) -> AnonymizationConfig:
        data = self.mapping(value, key)
        for k in data:
            if k not in ("hash_key_env", "rules"):
                self.fail(f"{key}.{k}", "unknown key (known keys: hash_key_env, rules)")
        env = self.scalar(data.get("hash_key_env", AnonymizationConfig.hash_key_env), str, f"{key}.hash_key_env", False)
        if "rules" not in data:
            return AnonymizationConfig(hash_key_env=env)
        rules = data["rules"] or []
        if not isinstance(rules, list):
            self.fail(f"{key}.rules", "expected a list of rules")
        parsed = []
        for i, r in enumerate(rules):
            rule = self.dataclass(AnonymizationRule, r, f"{key}.rules[{i}]")
            if rule.action not in ANONYMIZATION_ACTIONS:
                self.fail(f"{key}.rules[{i}].action", f"unknown action {rule.action!r} (known: {', '.join(ANONYMIZATION_ACTIONS)})")
            parsed.append(rule)
        return AnonymizationConfig(hash_key_env=env, rules=tuple(parsed))

    def models(self, value: Any, key: str) -> tuple:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(key, "expected a list of models")
        out, seen = [], set()
        for i, m in enumerate(value):
            data = self.mapping(m, f"{key}[{i}]")
            if not isinstance(data.get("name"), str) or not data.get("name"):
                self.fail(f"{key}[{i}].name", "every model needs a name (a non-empty string)")
            if data["name"] in seen:
                self.fail(f"{key}[{i}].name", f"model {data['name']!r} is listed twice")
            seen.add(data["name"])
            model = self.dataclass(ModelConfig, data, f"{key}[{i}]")
            if model.task not in (None, "classification", "regression"):
                self.fail(f"{key}[{i}].task", f"expected classification or regression, got {model.task!r}")
            out.append(model)
        return tuple(out)


def parse_config(data: Any, source: str = "<defaults>", base_dir: str = ".") -> Config:
    """A :class:`Config` from already-loaded YAML data."""
    parser = _Parser(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("(top level)", "expected a mapping of sections", source)
    return parser.dataclass(Config, data, "", source=source, base_dir=base_dir)


def load_config(path: Optional[str]) -> Config:
    """Read and check the YAML file at ``path`` (``None``: every default)."""
    if path is None:
        return Config()
    return parse_config(read_yaml(path, "(file)"), source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def read_yaml(path: str, key: str) -> Any:
    """The YAML document at ``path``; a file that cannot be read or parsed is a ConfigError for ``key``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(key, f"cannot read: {exc.strerror}", path) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"not valid YAML: {exc}", path) from exc
