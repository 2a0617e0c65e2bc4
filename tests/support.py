"""Real processes on loopback for the tests: the processor, Prometheus, Alertmanager.

Every port is a free one picked at run time; every data folder is a temporary one.

Example::

    with ProcessorProcess(tmp_path, models=[{"name": "m", "drift": {"default": {"method": "ks"}}}]) as proc:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        ...
        with PrometheusProcess(tmp_path, targets=[proc.metrics_endpoint]) as prom:
            prom.query('ml_window_predictions{model="m"}')
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling while the service starts
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def http_get(url: str, timeout: float = 5.0) -> tuple:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def otel_ml_command() -> list:
    exe = shutil.which("otel-ml")
    return [exe] if exe else [sys.executable, "-m", "otel_ml_processor.cli"]


class ProcessorProcess:
    """``otel-ml processor --config FILE`` as a real process with free ports."""

    def __init__(self, tmp: Path, models: Optional[list] = None, db_url: Optional[str] = None,
                 extra: Optional[dict] = None, env: Optional[dict] = None, interval: str = "1s"):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.db_path = self.tmp / "otel-ml.db"
        self.config = {
            "receiver": {"grpc_endpoint": f"127.0.0.1:{self.grpc_port}", "http_endpoint": f"127.0.0.1:{self.http_port}"},
            "prometheus": {"endpoint": f"127.0.0.1:{self.metrics_port}"},
            "storage": {"url": db_url or f"sqlite:///{self.db_path}"},
            "compute": {"interval": interval},
            "models": models or [],
        }
        for section, values in (extra or {}).items():
            if isinstance(values, dict):
                self.config.setdefault(section, {}).update(values)
            else:
                self.config[section] = values
        self.config_path = self.tmp / "otel-ml.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.env = {**os.environ, "OTEL_ML_HASH_KEY": "test-hash-key", **(env or {})}
        self.log_path = self.tmp / "processor.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_endpoint(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def start(self) -> "ProcessorProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(otel_ml_command() + ["processor", "--config", str(self.config_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp)
        wait_for(self.ready, timeout=60, what=f"processor ready (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"processor exited with {self.proc.returncode}: {self.log()}")
        return http_get(f"http://{self.metrics_endpoint}/-/ready", timeout=1)[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics_text(self) -> str:
        return http_get(f"http://{self.metrics_endpoint}/metrics")[1].decode()

    def sample(self, name: str, labels: Optional[dict] = None) -> Optional[float]:
        """One sample's value from /metrics (None when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    return s.value
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def __enter__(self) -> "ProcessorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


class PrometheusProcess:
    """A real Prometheus (Debian's ``prometheus``) scraping ``targets`` every second."""

    def __init__(self, tmp: Path, targets: list, rule_files: Optional[list] = None,
                 alertmanager: Optional[str] = None, extra_args: Optional[list] = None,
                 scrape_configs: Optional[list] = None, scrape_interval: str = "1s"):
        self.tmp = Path(tmp) / "prometheus"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # ``scrape_interval`` of the otel-ml job (its scrape timeout too): a processor exporting
        # many models' series may need more than a second to answer on a loaded machine
        job = {"job_name": "otel-ml", "static_configs": [{"targets": targets}]}
        if scrape_interval != "1s":
            job.update(scrape_interval=scrape_interval, scrape_timeout=scrape_interval)
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [job, *(scrape_configs or [])],
        }
        if rule_files:
            cfg["rule_files"] = [str(r) for r in rule_files]
        if alertmanager:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.args = ["prometheus", f"--config.file={self.tmp / 'prometheus.yml'}",
                     f"--storage.tsdb.path={self.tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                     *(extra_args or [])]
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "PrometheusProcess":
        self._log = open(self.tmp / "prometheus.log", "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: http_get(f"{self.url}/-/ready", timeout=1)[0] == 200, timeout=60, what="Prometheus ready")
        return self

    def query(self, promql: str) -> list:
        status, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {status} {data}")
        return data["data"]["result"]

    def value(self, promql: str) -> Optional[float]:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self._log.close()

    def __enter__(self) -> "PrometheusProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def sdk_logger_provider(endpoint: str, protocol: str, headers: Optional[dict] = None):
    """An OTel SDK LoggerProvider exporting over real OTLP to ``endpoint`` (host:port)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        exporter = OTLPLogExporter(endpoint=f"http://{endpoint}", insecure=True, headers=headers)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        exporter = OTLPLogExporter(endpoint=f"http://{endpoint}/v1/logs", headers=headers)
    provider = LoggerProvider(resource=Resource.create({"service.name": "otel-ml-test"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def otlp_logs_request(records: list) -> bytes:
    """A serialized ExportLogsServiceRequest of ``(event_name, attributes)`` records."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    def kv(key, value):
        if isinstance(value, bool):
            return KeyValue(key=key, value=AnyValue(bool_value=value))
        if isinstance(value, str):
            return KeyValue(key=key, value=AnyValue(string_value=value))
        return KeyValue(key=key, value=AnyValue(double_value=value))

    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for event, attrs in records:
        lr = LogRecord(event_name=event)
        lr.attributes.extend(kv(k, v) for k, v in attrs.items())
        sl.log_records.append(lr)
    return req.SerializeToString()


def prediction(model: str, pid: str, features: Optional[dict] = None, label: str = "1", **extra) -> tuple:
    """An ``ml.prediction`` record for :func:`otlp_logs_request`."""
    from otel_ml import semconv as sc

    attrs = {sc.ML_MODEL_NAME: model, sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: pid, sc.ML_OUTPUT_LABEL: label}
    attrs.update({sc.feature_key(k): v for k, v in (features or {"x": 1.0}).items()})
    attrs.update(extra)
    return "ml.prediction", attrs


def label(model: str, pid: str, value) -> tuple:
    from otel_ml import semconv as sc

    return "ml.label", {sc.ML_MODEL_NAME: model, sc.ML_PREDICTION_ID: pid, sc.ML_LABEL_VALUE: value}


def grpc_export(endpoint: str, body: bytes, timeout: float = 30, metadata=None):
    """Send raw OTLP logs bytes over gRPC; returns the ExportLogsServiceResponse."""
    import grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    with grpc.insecure_channel(endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                                     response_deserializer=ExportLogsServiceResponse.FromString)
        return export(body, timeout=timeout, metadata=metadata)


# --- The OpenTelemetry Collector (otelcol built by scripts/build-otelcol) ----------------------------

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR_CONFIGS = ROOT / "collector-config"
OTELCOL_MANIFEST = ROOT / "build" / "otelcol" / "manifest.yaml"
#: The ``${env:NAME}`` placeholders of the shipped collector configs that the tests set, by role
#: (documented in docs/collector.md; the Collector reads them, no otel-ml code does).
COLLECTOR_ENV = {
    "health": "OTEL_ML_COLLECTOR_HEALTH_ENDPOINT",
    "storage": "OTEL_ML_COLLECTOR_STORAGE_DIR",
    "grpc": "OTEL_ML_COLLECTOR_GRPC_ENDPOINT",
    "http": "OTEL_ML_COLLECTOR_HTTP_ENDPOINT",
    "telemetry": "OTEL_ML_COLLECTOR_METRICS_PORT",
    "gateway": "OTEL_ML_GATEWAY_ENDPOINT",
    "processor": "OTEL_ML_PROCESSOR_ENDPOINT",
    "replicas": "OTEL_ML_PROCESSOR_REPLICAS",
    "replicas_dns": "OTEL_ML_PROCESSOR_REPLICAS_DNS",
    "prometheus": "OTEL_ML_PROMETHEUS_EXPORTER_ENDPOINT",
    "logs_backend": "OTEL_ML_LOGS_BACKEND",
    "traces_backend": "OTEL_ML_TRACES_BACKEND",
}


def otelcol_binary() -> str:
    """The ``otelcol`` that scripts/build-otelcol cached for the committed manifest (or $OTELCOL_BIN)."""
    import hashlib

    if os.environ.get("OTELCOL_BIN"):
        return os.environ["OTELCOL_BIN"]
    manifest = OTELCOL_MANIFEST.read_bytes()
    version = yaml.safe_load(manifest)["dist"]["version"]
    cache = os.environ.get("OTEL_ML_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "otel-ml")
    path = Path(cache) / f"otelcol-{version}-{hashlib.sha256(manifest).hexdigest()[:12]}" / "otelcol"
    if not os.access(path, os.X_OK):
        raise AssertionError(f"otelcol is not built at {path}: run scripts/install-test-deps (or scripts/build-otelcol)")
    return str(path)


class CollectorProcess:
    """A real ``otelcol --config collector-config/<file>`` with its placeholders set to free loopback
    ports and a temporary storage folder; ``env`` adds or overrides placeholders (COLLECTOR_ENV names).

    Restartable: ``stop()`` (any signal) then ``start()`` again keeps the ports and the disk queue.
    """

    def __init__(self, tmp: Path, config: str, env: Optional[dict] = None, name: str = "otelcol"):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.config = Path(config) if os.path.isabs(str(config)) else COLLECTOR_CONFIGS / config
        self.name = name
        self.grpc_port, self.http_port, self.health_port, self.telemetry_port = (free_port() for _ in range(4))
        self.storage_dir = self.tmp / f"{name}-storage"
        names = COLLECTOR_ENV
        self.env = {**os.environ,
                    names["health"]: f"127.0.0.1:{self.health_port}", names["storage"]: str(self.storage_dir),
                    names["grpc"]: f"127.0.0.1:{self.grpc_port}", names["http"]: f"127.0.0.1:{self.http_port}",
                    names["telemetry"]: str(self.telemetry_port), **(env or {})}
        self.log_path = self.tmp / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def validate(self) -> subprocess.CompletedProcess:
        return subprocess.run([otelcol_binary(), "validate", "--config", str(self.config)], env=self.env,
                              capture_output=True, text=True, timeout=60)

    def start(self) -> "CollectorProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([otelcol_binary(), "--config", str(self.config)], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self.ready, timeout=60, what=f"{self.name} health_check (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.log()[-3000:]}")
        return http_get(f"http://127.0.0.1:{self.health_port}/", timeout=1)[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def warnings(self, word: str = "deprecated") -> list:
        """Log lines at level warn or above that mention ``word`` (case-insensitive)."""
        return [line for line in self.log().splitlines()
                if word in line.lower() and any(f"\t{lvl}\t" in line for lvl in ("warn", "error"))]

    def telemetry(self, name: str, labels: Optional[dict] = None) -> float:
        """Sum of the Collector's own metric ``name`` over the samples matching ``labels`` (its counters
        have no ``_total``; prometheus_client's parser adds one)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = http_get(f"http://127.0.0.1:{self.telemetry_port}/metrics")[1].decode()
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name in (name, f"{name}_total" if fam.type == "counter" and fam.name == name else name)
                   and all(s.labels.get(k) == v for k, v in (labels or {}).items()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        self.proc = None
        return code

    def __enter__(self) -> "CollectorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.stop()
