"""Every shipped collector config runs, as written, on the real otelcol built from the pinned release.

For each file in collector-config/ that is a Collector config: ``otelcol validate`` accepts it,
the Collector starts with it (its placeholders set through the environment to free loopback
ports), its health_check answers, and its log has no deprecation warning (a deprecated
component alias such as ``otlp`` for ``otlp_grpc`` fails the test). A config written with the
old names is the counter-example: the same check sees its warnings. Every component type the
configs name is built into the binary (``otelcol components``).
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support import COLLECTOR_CONFIGS, COLLECTOR_ENV, CollectorProcess, free_port, otelcol_binary

pytestmark = pytest.mark.e2e

CONFIGS = ["agent.yaml", "gateway.yaml", "gateway-loadbalancing.yaml", "gateway-replicas.yaml"]
SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")


def _env() -> dict:
    """Placeholders that would otherwise bind fixed ports on this host."""
    return {COLLECTOR_ENV["prometheus"]: f"127.0.0.1:{free_port()}"}


def test_the_configs_are_all_the_collector_configs_shipped():
    shipped = {p.name for p in COLLECTOR_CONFIGS.glob("*.yaml") if "service" in (yaml.safe_load(p.read_text()) or {})}
    assert shipped == set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_starts_without_deprecation_warnings(tmp_path, name):
    col = CollectorProcess(tmp_path, name, env=_env(), name=name.removesuffix(".yaml"))
    result = col.validate()
    assert result.returncode == 0, f"otelcol validate {name}: {result.stdout}{result.stderr}"
    with col:
        assert col.ready()
        assert col.warnings() == [], f"{name} starts with deprecation warnings"
        assert col.telemetry("otelcol_process_uptime") > 0  # its own telemetry is served
    assert "Shutdown complete" in col.log()


def test_the_old_names_are_caught(tmp_path):
    """The counter-example: the agent written with the release's deprecated alias ``otlp``."""
    old = (COLLECTOR_CONFIGS / "agent.yaml").read_text().replace("otlp_grpc/gateway", "otlp/gateway")
    (tmp_path / "old-agent.yaml").write_text(old)
    with CollectorProcess(tmp_path, str(tmp_path / "old-agent.yaml"), env=_env(), name="old") as col:
        assert any('"otlp" alias is deprecated' in line for line in col.warnings())


def test_every_component_the_configs_name_is_built_in():
    import subprocess

    built = yaml.safe_load(subprocess.run([otelcol_binary(), "components"], capture_output=True, text=True,
                                          check=True, timeout=60).stdout)
    available = {section: {c["name"] for c in built.get(section) or []} for section in SECTIONS}
    for name in CONFIGS:
        cfg = yaml.safe_load((COLLECTOR_CONFIGS / name).read_text())
        for section in SECTIONS:
            for component_id in cfg.get(section) or {}:
                assert component_id.split("/")[0] in available[section], f"{name}: {component_id} is not built in"
    assert built["buildinfo"]["version"] == yaml.safe_load(
        (COLLECTOR_CONFIGS.parent / "build" / "otelcol" / "manifest.yaml").read_text())["dist"]["version"]


def test_every_placeholder_is_known_and_documented():
    doc = (COLLECTOR_CONFIGS.parent / "docs" / "collector.md").read_text()
    for name in CONFIGS:
        values = yaml.safe_dump(yaml.safe_load((COLLECTOR_CONFIGS / name).read_text()))  # values, not comments
        for var in re.findall(r"\$\{env:([A-Z0-9_]+)", values):
            assert var in COLLECTOR_ENV.values() or var == "OTEL_ML_TOKEN", f"{name}: unknown placeholder {var}"
            assert f"`{var}`" in doc, f"docs/collector.md does not document {var}"
