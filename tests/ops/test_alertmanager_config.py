"""dashboards/alertmanager/alertmanager.yml: ``amtool check-config`` clean, and the routing tree
sends each kind of alert where its comment says (``amtool config routes test``)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.ops.stack import ALERTMANAGER_YML


def test_amtool_check_config_is_clean():
    result = subprocess.run(["amtool", "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("labels, receiver", [
    ({"alertname": "MLFeatureDrift", "severity": "warning", "model": "churn"}, "ml-models"),
    ({"alertname": "MLFeatureDrift", "severity": "critical", "model": "churn"}, "ml-oncall-pager"),
    ({"alertname": "MLOODRatioHigh", "severity": "warning", "model": "fraud-detector"}, "risk-team"),
    ({"alertname": "MLOODRatioHigh", "severity": "critical", "model": "credit-score"}, "risk-team-pager"),
    ({"alertname": "MLIngestRejectionsHigh", "severity": "warning"}, "ml-platform"),
    ({"alertname": "MLProcessorNotComputing", "severity": "critical", "model": "churn"}, "ml-oncall-pager"),
    ({"alertname": "MLSomethingNew", "severity": "critical"}, "ml-platform-pager"),
])
def test_routing_by_model_then_severity(labels, receiver):
    args = [f"{k}={v}" for k, v in labels.items()]
    result = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def test_grouping_and_inhibition_by_model_and_alertname():
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text())
    assert cfg["route"]["group_by"] == ["alertname", "model", "model_version"]
    sev = next(r for r in cfg["inhibit_rules"] if r["source_matchers"] == ['severity="critical"'])
    assert sev["target_matchers"] == ['severity="warning"']
    assert {"alertname", "model"} <= set(sev["equal"])
    for receiver in cfg["receivers"]:  # placeholders only: nothing real is committed
        for hook in receiver["webhook_configs"]:
            assert ".example.invalid/" in hook["url"]
