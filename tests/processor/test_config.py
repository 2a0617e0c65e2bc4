"""The config file: every default, strict keys and types, durations (DESIGN.md)."""

import pytest
import yaml

from otel_ml_processor.config import Config, ConfigError, load_config, parse_config, parse_duration
from otel_ml_processor.export.webconfig import WebConfig


def test_defaults_match_design():
    c = load_config(None)
    assert c.receiver.grpc_endpoint == "127.0.0.1:4317" and c.receiver.http_endpoint == "127.0.0.1:4318"
    assert c.receiver.max_request_bytes == 16777216 and c.receiver.max_inflight_bytes == 268435456
    assert c.prometheus.endpoint == "127.0.0.1:9464"
    assert c.prometheus.pages is True and c.prometheus.web_config_file is None
    assert c.storage.url == "sqlite:///otel-ml.db" and c.storage.retention == 30 * 86400
    assert c.compute.interval == 15 and c.labels.pending_max == 1_000_000 and c.labels.pending_ttl == 7 * 86400
    assert (c.limits.max_models, c.limits.max_features_per_model, c.limits.max_groups_per_attribute) == (100, 500, 50)
    assert c.anonymization.hash_key_env == "OTEL_ML_HASH_KEY"
    m = c.model("anything")
    assert m.window.size == 10_000 and m.reference.first_n == 1000 and m.drift.default.method == "auto"
    assert m.drift.alpha == 0.01 and m.ood.margin == 0.1
    assert m.fairness.min_group_size == 30


def test_design_example_parses(tmp_path):
    text = """
models:
  - name: churn
    task: classification
    positive_label: "1"
    reference: {path: reference.csv}
    window: {size: 10000, max_age: null}
    drift:
      alpha: 0.01
      default: {method: auto}
      features: {age: {method: psi, threshold: 0.2}}
    ood: {margin: 0.1}
    fairness: {attributes: [gender], min_group_size: 30}
prometheus:
  endpoint: 127.0.0.1:9464
  pages: true
  web_config_file: null
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    m = load_config(str(path)).model("churn")
    assert m.positive_label == "1" and m.drift.features["age"].method == "psi" and m.fairness.attributes == ("gender",)
    assert m.drift.alpha == 0.01 and m.ood.margin == 0.1
    assert load_config(str(path)).resolve_path(m.reference.path) == str(tmp_path / "reference.csv")


@pytest.mark.parametrize("text, key", [
    ("nope: 1", "nope"),
    ("receiver: {tls: {cert: x}}", "receiver.tls.cert"),
    ("storage: {retention: 30 days}", "storage.retention"),
    ("limits: {max_models: '100'}", "limits.max_models"),
    ("labels: {pending_max: -1}", "labels.pending_max"),
    ("anonymization: {rules: [{attribute: a, action: scramble}]}", "anonymization.rules[0].action"),
    ("models: [{name: a}, {name: a}]", "models[1].name"),
    ("models: [{task: regression}]", "models[0].name"),
    ("models: [{name: a, fairness: {attributes: gender}}]", "models[0].fairness.attributes"),
    ("models: [{name: a, drift: {alpha: 0}}]", "models[0].drift.alpha"),
    ("models: [{name: a, drift: {alpha: 1.5}}]", "models[0].drift.alpha"),
    ("models: [{name: a, drift: {alpha: '0.01'}}]", "models[0].drift.alpha"),
    ("models: [{name: a, drift: {fdr: 0.01}}]", "models[0].drift.fdr"),
    ("models: [{name: a, ood: {margin: -0.1}}]", "models[0].ood.margin"),
    ("models: [{name: a, ood: {margin: wide}}]", "models[0].ood.margin"),
    ("models: [{name: a, ood: {range: 1}}]", "models[0].ood.range"),
    ("prometheus: {pages: 'yes'}", "prometheus.pages"),
    ("prometheus: {web_config_file: 3}", "prometheus.web_config_file"),
])
def test_errors_name_key_and_file(text, key):
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_load(text), "conf.yaml")
    assert err.value.key == key and "conf.yaml" in str(err.value)


@pytest.mark.parametrize("text, seconds", [("15s", 15), ("5m", 300), ("7d", 604800), ("250ms", 0.25), ("1h", 3600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("receiver: [unclosed")
    with pytest.raises(ConfigError):
        load_config(str(tmp_path / "bad.yaml"))
    assert isinstance(parse_config(None), Config)


# --- prometheus.pages, prometheus.web_config_file (issue 15) ---------------------------------------

def test_prometheus_pages_and_web_config_defaults_and_values(tmp_path):
    c = load_config(None)
    assert c.prometheus.pages is True and c.prometheus.web_config_file is None
    path = tmp_path / "c.yaml"
    path.write_text("prometheus: {endpoint: '0.0.0.0:9464', pages: false, web_config_file: web.yml}\n")
    c = load_config(str(path))
    assert c.prometheus.pages is False and c.prometheus.web_config_file == "web.yml"
    assert c.resolve_path(c.prometheus.web_config_file) == str(tmp_path / "web.yml")


@pytest.mark.parametrize("text, key", [
    ("prometheus: {pages: 'yes'}", "prometheus.pages"),
    ("prometheus: {pages: 1}", "prometheus.pages"),
    ("prometheus: {web_config_file: 3}", "prometheus.web_config_file"),
    ("prometheus: {web_config: web.yml}", "prometheus.web_config"),
])
def test_prometheus_section_errors_name_the_key(text, key):
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_load(text), "conf.yaml")
    assert err.value.key == key and "conf.yaml" in str(err.value)


def test_new_keys_reach_the_model_config():
    c = parse_config(yaml.safe_load("models: [{name: a, drift: {alpha: 0.05}, ood: {margin: 0}}]"), "c.yaml")
    m = c.model("a")
    assert m.drift.alpha == 0.05 and m.ood.margin == 0.0 and m.drift.default.method == "auto"
    assert c.model("other").drift.alpha == 0.01


def test_drift_alpha_and_ood_margin_reach_the_engine_spec():
    from otel_ml_processor.compute.manager import model_spec

    c = parse_config(yaml.safe_load("models: [{name: a, drift: {alpha: 0.05}, ood: {margin: 0.25}}]"), "c.yaml")
    spec = model_spec(c.model("a"), c)
    assert spec.drift_alpha == 0.05 and spec.ood_margin == 0.25
    default = model_spec(c.model("unlisted"), c)
    assert default.drift_alpha == 0.01 and default.ood_margin == 0.1


@pytest.mark.parametrize("content, message", [(None, "cannot read"), ("a: [1, 2", "not valid YAML")],
                         ids=["missing-file", "broken-yaml"])
@pytest.mark.parametrize("load, key", [(load_config, "(file)"), (WebConfig.load, "prometheus.web_config_file")],
                         ids=["config", "web-config"])
def test_a_file_that_cannot_be_read_is_a_config_error_naming_its_key(tmp_path, content, message, load, key):
    path = tmp_path / "file.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load(str(path))
    assert err.value.key == key and err.value.source == str(path) and message in str(err.value)


def test_missing_is_not_a_method_it_runs_on_every_feature():
    from otel_ml_processor.compute.manager import check_drift_methods

    c = parse_config(yaml.safe_load("models: [{name: a, drift: {features: {age: {method: missing}}}}]"), "c.yaml")
    with pytest.raises(ConfigError) as err:
        check_drift_methods(c)
    assert err.value.key == "models[0].drift.features.age.method" and "every feature" in str(err.value)
    assert "missing" not in str(err.value).split("known:")[1]
