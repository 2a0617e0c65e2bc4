"""otel-ml's own rules for the shipped OpenTelemetry Collector configs (collector-config/).

The real otelcol (built from the pinned release by scripts/build-otelcol) validates and starts
every file in tests/collector/. These tests hold the files to otel-ml's rules beyond what the
Collector enforces: every declared component is used, ``memory_limiter`` is the first processor
of every pipeline and no ``batch`` processor stands in front of a queue (it acknowledges data it
only holds in memory), every push exporter batches inside a persistent ``sending_queue`` on the
``file_storage`` extension and retries forever, the load balancer's per-replica sub-exporters
have no queue of their own, and the endpoints (their ``${env:...:-default}`` defaults) agree with
the processor's defaults and with the ports docs/collector.md documents.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from otel_ml_processor.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "collector-config"
COLLECTOR_FILES = ["agent.yaml", "gateway.yaml", "gateway-loadbalancing.yaml", "gateway-replicas.yaml"]
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
#: The ports the processor moves to when a Collector runs on the same host (docs/collector.md).
SIDE_BY_SIDE_GRPC, SIDE_BY_SIDE_HTTP = "127.0.0.1:14317", "127.0.0.1:14318"
#: Exporters that pull (nothing to queue).
PULL_EXPORTERS = {"prometheus"}
VERSION = "v0.161.0"
_PLACEHOLDER = re.compile(r"\$\{env:[A-Z0-9_]+:-(.*?)\}$")


def _defaults(value):
    """The config as it runs with no environment: each ``${env:NAME:-default}`` by its default
    (YAML, as the Collector parses a whole-value placeholder)."""
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, str):
        m = _PLACEHOLDER.fullmatch(value)
        if m:
            return yaml.safe_load(m.group(1))
    return value


def _load(name: str) -> dict:
    return _defaults(yaml.safe_load((CONFIGS / name).read_text()))


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


@pytest.fixture(params=COLLECTOR_FILES)
def config(request) -> tuple:
    return request.param, _load(request.param)


def test_every_wired_component_is_declared_and_every_declared_one_is_wired(config):
    name, cfg = config
    used = {s: set() for s in SECTIONS}
    for pipeline, spec in cfg["service"]["pipelines"].items():
        assert spec.get("receivers") and spec.get("exporters"), f"{name}: {pipeline} needs receivers and exporters"
        for section in ("receivers", "processors", "exporters"):
            for component in spec.get(section, []):
                assert component in (cfg.get(section) or {}), f"{name}: {pipeline} uses undeclared {section[:-1]} {component}"
                used[section].add(component)
    for ext in cfg["service"].get("extensions", []):
        assert ext in cfg.get("extensions", {}), f"{name}: undeclared extension {ext}"
        used["extensions"].add(ext)
    # Extensions referenced from component settings (storage: file_storage) count as used too.
    for section in ("receivers", "processors", "exporters"):
        for component_id, settings in (cfg.get(section) or {}).items():
            for ref in re.findall(r"'storage': '([^']+)'", repr(settings)):
                assert ref in cfg["service"]["extensions"], f"{name}: {component_id} uses storage {ref} not enabled in service"
    for section in SECTIONS:
        declared = set(cfg.get(section) or {})
        assert declared == used[section], f"{name}: {section} declared but unused: {sorted(declared - used[section])}"


def test_memory_limiter_first_and_no_batch_processor(config):
    name, cfg = config
    for pipeline, spec in cfg["service"]["pipelines"].items():
        procs = spec.get("processors", [])
        assert procs and _type(procs[0]) == "memory_limiter", f"{name}: {pipeline} must start with memory_limiter"
        assert "batch" not in {_type(p) for p in procs}, f"{name}: {pipeline} batches before the persistent queue"


def test_push_exporters_batch_in_persistent_queues_and_retry(config):
    name, cfg = config
    assert _type(next(iter(cfg["extensions"]))) in {"health_check", "file_storage"}
    storages = {e for e in cfg["extensions"] if _type(e) == "file_storage"}
    assert storages, f"{name}: no file_storage extension"
    for component_id, settings in cfg["exporters"].items():
        if _type(component_id) in PULL_EXPORTERS:
            continue
        queue = settings.get("sending_queue") or {}
        assert queue.get("enabled") is True, f"{name}: {component_id} has no sending_queue"
        assert queue.get("storage") in storages, f"{name}: {component_id}'s queue is not on file_storage"
        batch = queue.get("batch") or {}
        assert batch.get("flush_timeout") and batch.get("max_size", 0) >= batch.get("min_size", 0) > 0, \
            f"{name}: {component_id} does not batch inside its queue"
        assert queue.get("sizer") == "items" and queue.get("queue_size", 0) >= batch["max_size"]
        retry = settings.get("retry_on_failure") or {}
        assert retry.get("enabled") is True, f"{name}: {component_id} has no retry_on_failure"
        assert retry.get("max_elapsed_time") == 0, f"{name}: {component_id} gives up retrying (data loss)"


def test_agent_listens_on_the_sdk_defaults_and_forwards_everything_to_the_gateway():
    cfg = _load("agent.yaml")
    grpc = cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    http = cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert grpc.endswith(":4317") and http.endswith(":4318")
    for spec in cfg["service"]["pipelines"].values():
        assert spec["exporters"] == ["otlp_grpc/gateway"]


def test_gateway_sends_ml_events_to_the_side_by_side_processor_config():
    gateway = _load("gateway.yaml")
    processor = load_config(str(CONFIGS / "otel-ml-processor.yaml"))  # the processor's own parser
    assert isinstance(processor, Config)
    assert processor.receiver.grpc_endpoint == SIDE_BY_SIDE_GRPC
    assert processor.receiver.http_endpoint == SIDE_BY_SIDE_HTTP
    assert gateway["exporters"]["otlp_grpc/otel_ml"]["endpoint"] == processor.receiver.grpc_endpoint
    # The gateway itself owns the processor's default ports, which is why the processor moved.
    defaults = Config()
    for proto, default in (("grpc", defaults.receiver.grpc_endpoint), ("http", defaults.receiver.http_endpoint)):
        endpoint = gateway["receivers"]["otlp"]["protocols"][proto]["endpoint"]
        assert endpoint.rsplit(":", 1)[1] == default.rsplit(":", 1)[1]
    assert gateway["service"]["pipelines"]["logs/ml"]["exporters"] == ["otlp_grpc/otel_ml"]
    # Prometheus scrapes the processor's /metrics where the config serves it, and the gateway.
    prom = yaml.safe_load((CONFIGS / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert processor.prometheus.endpoint in targets
    assert "127.0.0.1:" + gateway["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1] in targets


def test_ml_event_filters_are_complements():
    for name in ("gateway.yaml", "gateway-loadbalancing.yaml", "gateway-replicas.yaml"):
        procs = _load(name)["processors"]
        keep_ml = procs["filter/ml_events"]["log_conditions"]
        drop_ml = procs["filter/not_ml_events"]["log_conditions"]
        assert keep_ml == [f"not ({drop_ml[0]})"]


def test_loadbalancing_routes_logs_by_model_name_to_processor_replicas():
    cfg = _load("gateway-loadbalancing.yaml")
    lb = cfg["exporters"]["load_balancing/otel_ml"]
    assert lb["routing_key"] == "attributes"
    assert lb["routing_attributes"] == ["ml.model.name"]
    hosts = lb["resolver"]["static"]["hostnames"]
    assert len(hosts) >= 2
    default_port = Config().receiver.grpc_endpoint.rsplit(":", 1)[1]
    assert all(h.rsplit(":", 1)[1] == default_port for h in hosts)
    assert cfg["service"]["pipelines"]["logs/ml"]["exporters"] == ["load_balancing/otel_ml"]
    # The per-replica sub-exporters: no queue (an in-memory one would acknowledge a batch to the
    # persistent queue before the replica had it), a bounded retry that hands back to the disk queue.
    sub = lb["protocol"]["otlp"]
    assert sub["sending_queue"] == {"enabled": False}
    assert sub["retry_on_failure"]["enabled"] is True and sub["retry_on_failure"]["max_elapsed_time"] != 0


def test_replicas_gateway_spreads_ml_events_over_every_replica_of_a_dns_name():
    """gateway-replicas.yaml: gRPC round_robin over a dns:/// name on the replicas' default port,
    from a persistent queue that retries for ever (a dead replica's batch goes to another)."""
    cfg = _load("gateway-replicas.yaml")
    exporter = cfg["exporters"]["otlp_grpc/otel_ml"]
    assert exporter["balancer_name"] == "round_robin"
    assert exporter["endpoint"].startswith("dns:///")
    assert exporter["endpoint"].rsplit(":", 1)[1] == Config().receiver.grpc_endpoint.rsplit(":", 1)[1]
    assert cfg["service"]["pipelines"]["logs/ml"]["exporters"] == ["otlp_grpc/otel_ml"]
    assert exporter["sending_queue"]["storage"] == "file_storage"
    assert exporter["retry_on_failure"]["max_elapsed_time"] == 0


def test_docs_name_the_version_and_the_ports():
    doc = (ROOT / "docs" / "collector.md").read_text()
    assert VERSION in doc
    for port in ("14317", "14318", "9464", "8889", "4317", "4318"):
        assert port in doc
    for name in COLLECTOR_FILES:
        assert f"Written for otelcol-contrib {VERSION}" in (CONFIGS / name).read_text()
