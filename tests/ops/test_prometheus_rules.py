"""The shipped Prometheus rules: promtool-clean, unit-tested alert by alert, generated from
thresholds.yaml, linked to the runbook.

- ``promtool check rules`` on every rule file, clean;
- ``promtool test rules`` on dashboards/prometheus/tests/*.yaml;
- every alert in the rule files has promtool cases that expect it firing AND cases that
  expect nothing (before ``for:`` runs out, after it resolved);
- the committed rule files and the runbook's thresholds table are what generate.py makes;
- every alert has ``for``, a ``severity``, a fixed summary, a templated description and a
  ``runbook_url`` whose anchor is a heading of docs/runbook.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from dashboards.prometheus import generate

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "dashboards" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yaml")) + sorted((PROM / "alerts").glob("*.yaml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yaml"))


def _alert_rules() -> list:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def test_promtool_check_rules_is_clean():
    result = subprocess.run(["promtool", "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "WARNING" not in (result.stdout + result.stderr).upper()


def test_promtool_unit_tests_pass():
    result = subprocess.run(["promtool", "test", "rules", *[p.name for p in TEST_FILES]],
                            capture_output=True, text=True, cwd=PROM / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_alert_has_firing_and_quiet_promtool_cases():
    firing, quiet, severities = set(), set(), {}
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    firing.add(case["alertname"])
                    for exp in case["exp_alerts"]:
                        severities.setdefault(case["alertname"], set()).add(exp["exp_labels"]["severity"])
                else:
                    quiet.add(case["alertname"])
    for rule in _alert_rules():
        name = rule["alert"]
        assert name in firing, f"{name} has no promtool case where it fires"
        assert name in quiet, f"{name} has no promtool case where it stays quiet"
        assert rule["labels"]["severity"] in severities[name], f"{name} {rule['labels']['severity']} is never tested firing"


def test_committed_rules_and_runbook_table_are_generated():
    result = subprocess.run([sys.executable, str(PROM / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_test_copy_shortens_only_for(tmp_path):
    paths = generate.render_to(generate.load_thresholds(), tmp_path, for_override="2s")
    short = yaml.safe_load(next(p for p in paths if "alerts" in p.name).read_text())["groups"][0]["rules"]
    shipped = _alert_rules()
    assert [r["alert"] for r in short] == [r["alert"] for r in shipped]
    assert {r["for"] for r in short} == {"2s"}
    assert [r["expr"] for r in short] == [r["expr"] for r in shipped]


def test_alert_metadata_and_runbook_anchors():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {m.lower() for m in re.findall(r"^## (\w+)", runbook, flags=re.M)}
    for rule in _alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"ML[A-Z][A-Za-z]+", name), name
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        ann = rule["annotations"]
        assert "{{" not in ann["summary"], f"{name}: summary must be fixed"
        assert "{{" in ann["description"], f"{name}: description must be templated"
        url = ann["runbook_url"]
        assert url.split("#")[0].endswith("docs/runbook.md") and url.split("#")[1] == name.lower(), url
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"


def test_per_model_alerts_carry_a_model_label():
    # Recording rules and alerts on client metrics copy ml_model_name into model with
    # label_replace, so Alertmanager routes model-server and processor alerts alike.
    global_alerts = {"MLIngestRejectionsHigh", "MLLabelJoinLag", "MLLabelsExpiring", "MLLabelsPendingGrowing",
                     "MLClientBufferDropping",
                     "MLCardinalityLimited"}
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                for exp in case.get("exp_alerts") or []:
                    if case["alertname"] not in global_alerts:
                        assert "model" in exp["exp_labels"], case["alertname"]
