"""The shipped Prometheus rules: promtool-clean, unit-tested alert by alert, generated from
thresholds.yaml, linked to the runbook.

- ``promtool check rules`` on every rule file, clean;
- ``promtool test rules`` on dashboards/prometheus/tests/*.yaml;
- every alert in the rule files has promtool cases that expect it firing AND cases that
  expect nothing (before ``for:`` runs out, after it resolved);
- the committed rule files and the runbook's thresholds table are what generate.py makes;
- every alert has ``for``, a ``severity``, a fixed summary, a templated description and a
  ``runbook_url`` whose anchor is a heading of docs/runbook.md; every model-quality alert also
  links to the model's page on the processor (base URL from thresholds.yaml);
- every recording rule is named in docs/runbook.md; a threshold for a metric that cannot have
  one is refused with its name.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dashboards.prometheus import generate

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "dashboards" / "prometheus"
MODEL_QUALITY = {"MLFeatureDrift", "MLFeatureMissingValues", "MLPredictionDrift", "MLMultivariateDrift", "MLPerformanceBelowThreshold",
                 "MLPerformanceBelowBaseline", "MLEstimatedPerformanceDrop", "MLOODRatioHigh", "MLFairnessGap"}
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


def test_model_quality_alerts_link_to_the_model_page():
    base = generate.load_thresholds()["model_page_base_url"]
    names = set()
    for rule in _alert_rules():
        page = rule["annotations"].get("model_page")
        if rule["alert"] in MODEL_QUALITY:
            names.add(rule["alert"])
            assert page and page.startswith(f"{base}/models/{{{{ $labels.model "), rule["alert"]
            assert "?version={{ $labels.model_version " in page, rule["alert"]
        else:
            assert page is None, f"{rule['alert']} has no model to link to"
    assert names == MODEL_QUALITY


def test_every_recording_rule_is_in_the_runbook():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    assert f"`{rule['record']}`" in runbook, rule["record"]


@pytest.mark.parametrize("metric", ["log_loss", "mae", "nope"])
def test_a_below_threshold_on_a_metric_where_lower_is_better_is_refused(metric):
    thresholds = copy.deepcopy(generate.load_thresholds())
    thresholds["performance"]["metrics"][metric] = {"warning_below": 0.5, "critical_below": 0.4}
    with pytest.raises(ValueError, match=f"performance.metrics: '{metric}'"):
        generate.alerts(thresholds)


def test_metrics_without_an_interval_are_compared_by_value_with_more_labels():
    thresholds = copy.deepcopy(generate.load_thresholds())
    thresholds["performance"]["metrics"] = {"recall": {"warning_below": 0.6, "critical_below": 0.5},
                                            "roc_auc": {"warning_below": 0.7, "critical_below": 0.6}}
    exprs = {(a.severity, a.expr) for a in generate.alerts(thresholds) if a.name == "MLPerformanceBelowThreshold"}
    minimum = thresholds["performance"]["min_labeled_without_interval"]
    recall = ('ml_performance_interval{metric="recall", bound="upper"} < 0.6\n'
              f'and on (model, model_version) ml_window_labeled >= {thresholds["performance"]["min_labeled"]}')
    roc_auc = f'ml_performance{{metric="roc_auc"}} < 0.6\nand on (model, model_version) ml_window_labeled >= {minimum}'
    assert ("warning", recall) in exprs
    assert ("critical", roc_auc) in exprs


def test_generators_take_names_from_semconv():
    """No otel-ml metric name is spelled as a literal in the generators, bare or as a selector
    (prose in descriptions may name them): they come from otel_ml.semconv."""
    import ast

    from otel_ml import semconv as sc

    metrics = {v for k, v in vars(sc).items() if k.startswith(("M_", "PROM_CLIENT_")) and isinstance(v, str)}
    metrics |= {m + "_total" for m in metrics} | {m + "_bucket" for m in metrics}
    literal = re.compile(rf"^({'|'.join(sorted(metrics, key=len, reverse=True))})([{{\[]|$)")
    for path in (ROOT / "dashboards" / "promql.py", PROM / "generate.py", ROOT / "dashboards" / "grafana" / "generate.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not literal.match(node.value), f"{path.name}: literal {node.value!r}"
