"""Generate otel-ml's Grafana dashboards (JSON beside this file) with grafana-foundation-sdk.

Usage::

    python dashboards/grafana/generate.py           # writes dashboards/grafana/*.json
    python dashboards/grafana/generate.py --check   # exit 1 if a committed file differs

Four dashboards, each with a ``datasource`` variable (type prometheus, no hard-coded uid):

- ``otel-ml-overview``: all models: traffic, latency, errors, accuracy, drift, OOD, label coverage;
- ``otel-ml-model``: one model (``model`` / ``model_version`` variables): per-feature drift,
  performance vs its label-free estimate, fairness, group performance, OOD, windows;
- ``otel-ml-pipeline``: ingest, rejections, label join delay, compute, buffer drops, data quality;
- ``otel-ml-system``: the OTel system metrics of model servers
  (``opentelemetry-instrumentation-system-metrics``).

One ``model`` variable drives both kinds of panels: processor metrics filter ``model=~"$model"``,
model-server metrics (OTel -> Prometheus names) ``ml_model_name=~"$model"``.

From Python::

    from dashboards.grafana.generate import dashboards, render
    texts = render()          # {file name: JSON text}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import common, heatmap, prometheus, stat, statushistory, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
M = 'model=~"$model"'
MV = 'model=~"$model", model_version=~"$model_version"'
C = 'ml_model_name=~"$model"'
CV = 'ml_model_name=~"$model", ml_model_version=~"$model_version"'
INPUT_FEATURES = 'feature!~"__prediction__|__multivariate__"'
#: System metrics as exported by the Python Prometheus exporter (unit "1" -> no suffix) and by
#: the Collector's Prometheus exporter (unit "1" -> _ratio): match both.
PROC_CPU = '{__name__=~"process_cpu_utilization(_ratio)?", job=~"$job", instance=~"$instance"}'
SYS_CPU = '{__name__=~"system_cpu_utilization(_ratio)?", job=~"$job", instance=~"$instance"}'


# --- variables ---------------------------------------------------------------------------------

def datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_var(name: str, label: str, query: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(label).query(query).datasource(DS)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def model_vars() -> list:
    return [query_var("model", "Model", "label_values(ml_window_predictions, model)"),
            query_var("model_version", "Version", 'label_values(ml_window_predictions{model=~"$model"}, model_version)')]


# --- panels -----------------------------------------------------------------------------------

def q(expr: str, legend: str = "", ref: str = "A", instant: bool = False, table_format: bool = False):
    target = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        target = target.legend_format(legend)
    if instant:
        target = target.instant()
    if table_format:
        target = target.format(pm.PromQueryFormat.TABLE)
    return target


def ts(title: str, description: str, targets: Iterable, unit: str = "short", width: int = 12, height: int = 8,
       vmin: float | None = None, vmax: float | None = None):
    p = (timeseries.Panel().title(title).description(description).datasource(DS).unit(unit).span(width).height(height)
         .legend(common.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST)
                 .placement(cm.LegendPlacement.BOTTOM).calcs([]))
         .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)))
    for t in targets:
        p = p.with_target(t)
    if vmin is not None:
        p = p.min(vmin)
    if vmax is not None:
        p = p.max(vmax)
    return p


def stat_panel(title: str, description: str, target, unit: str = "short", width: int = 6, height: int = 4):
    return (stat.Panel().title(title).description(description).datasource(DS).unit(unit).span(width).height(height)
            .with_target(target))


def table_panel(title: str, description: str, targets: Iterable, width: int = 24, height: int = 8):
    p = (table.Panel().title(title).description(description).datasource(DS).span(width).height(height)
         .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
         .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
             "excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True}})))
    for t in targets:
        p = p.with_target(t)
    return p


def drift_status_panel():
    mapping = dm.ValueMap(options={
        "0": dm.ValueMappingResult(text="no drift", color="green", index=0),
        "1": dm.ValueMappingResult(text="drift", color="red", index=1)})
    return (statushistory.Panel().title("Drift detected per feature")
            .description("One row per input feature (and __prediction__, __multivariate__): red while the drift test "
                         "of the window against the reference crosses its threshold (ml_drift_detected).")
            .datasource(DS).span(24).height(9).mappings([mapping])
            .with_target(q(f"max by (feature) (ml_drift_detected{{{MV}}})", "{{feature}}")))


def score_heatmap():
    return (heatmap.Panel().title("Prediction confidence distribution")
            .description("Histogram of ml.client.prediction.score per time bucket (model-server metric): a shift "
                         "of the mass shows the model getting more or less sure.")
            .datasource(DS).span(12).height(8)
            .with_target(q(f"sum by (le) (rate(ml_client_prediction_score_bucket{{{CV}}}[{RATE}]))", "{{le}}")
                         .format(pm.PromQueryFormat.HEATMAP)))


# --- dashboards -------------------------------------------------------------------------------

def _dashboard(uid: str, title: str, description: str, variables: list, panels: list, tags: list) -> db.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(description).tags(["otel-ml", *tags]).editable()
         .time("now-6h", "now").refresh("1m").timezone("browser"))
    d = d.with_variable(datasource_var())
    for v in variables:
        d = d.with_variable(v)
    for p in panels:
        d = d.with_row(p) if isinstance(p, db.Row) else d.with_panel(p)
    return d


def overview() -> db.Dashboard:
    panels = [
        db.Row("Now"),
        stat_panel("Models monitored", "Models (any version) with a window in the processor.",
                   q(f"count(count by (model) (ml_window_predictions{{{M}}}))", instant=True), width=6),
        stat_panel("Predictions per second", "All selected models, from the model servers' ml_client_predictions_total.",
                   q(f"sum(rate(ml_client_predictions_total{{{C}}}[{RATE}]))", instant=True), "reqps", width=6),
        stat_panel("Models with drift", "Models with at least one drifted input feature now.",
                   q(f"count(sum by (model) (ml_drift_detected{{{M}, {INPUT_FEATURES}}}) > 0) or vector(0)", instant=True), width=6),
        stat_panel("Firing ML alerts", "Alerts of dashboards/prometheus/alerts firing now (ALERTS series of Prometheus).",
                   q('count(ALERTS{alertstate="firing", alertname=~"ML.*"}) or vector(0)', instant=True), width=6),
        db.Row("Traffic and service"),
        ts("Predictions per second", "Predict calls per second, per model (model-server counter ml_client_predictions_total).",
           [q(f"sum by (ml_model_name) (rate(ml_client_predictions_total{{{C}}}[{RATE}]))", "{{ml_model_name}}")], "reqps", 8),
        ts("Predict latency p50 / p99", "Quantiles of ml_client_predict_duration_seconds per model.",
           [q(f"histogram_quantile(0.99, sum by (ml_model_name, le) (rate(ml_client_predict_duration_seconds_bucket{{{C}}}[{RATE}])))",
              "{{ml_model_name}} p99"),
            q(f"histogram_quantile(0.5, sum by (ml_model_name, le) (rate(ml_client_predict_duration_seconds_bucket{{{C}}}[{RATE}])))",
              "{{ml_model_name}} p50", "B")], "s", 8),
        ts("Error ratio", "Share of predict calls that raised (ml_client_errors_total / ml_client_predictions_total; 0 while none did: "
           "the errors counter appears with the first error).",
           [q(f"(sum by (ml_model_name) (rate(ml_client_errors_total{{{C}}}[{RATE}]))\n"
              f" or 0 * sum by (ml_model_name) (rate(ml_client_predictions_total{{{C}}}[{RATE}])))\n/\n"
              f"sum by (ml_model_name) (rate(ml_client_predictions_total{{{C}}}[{RATE}]))", "{{ml_model_name}}")],
           "percentunit", 8, vmin=0),
        db.Row("Model quality"),
        ts("Accuracy (labeled window)", "ml_performance{metric=\"accuracy\"}: accuracy on the window's predictions that have a true label.",
           [q(f'ml_performance{{{M}, metric="accuracy"}}', "{{model}} v{{model_version}}")], "percentunit", 8, vmin=0, vmax=1),
        ts("Drifted input features", "Number of input features whose drift test is positive (ml_drift_detected, pseudo-features excluded).",
           [q(f"sum by (model, model_version) (ml_drift_detected{{{M}, {INPUT_FEATURES}}})", "{{model}} v{{model_version}}")],
           "short", 8, vmin=0),
        ts("Out-of-distribution ratio", "ml_ood_ratio: share of window predictions with an input outside the reference.",
           [q(f"ml_ood_ratio{{{M}}}", "{{model}} v{{model_version}}")], "percentunit", 8, vmin=0, vmax=1),
        ts("Label coverage", "ml_window_labeled / ml_window_predictions: share of the window with a joined true label.",
           [q(f"sum by (model, model_version) (ml_window_labeled{{{M}}})\n/\nsum by (model, model_version) (ml_window_predictions{{{M}}})",
              "{{model}} v{{model_version}}")], "percentunit", 8, vmin=0, vmax=1),
        ts("Prediction drift", "ml_drift_score of the predictions (feature=\"__prediction__\") per model.",
           [q(f'ml_drift_score{{{M}, feature="__prediction__"}}', "{{model}} v{{model_version}} ({{method}})")], "short", 8),
        ts("Records received by the processor", "ml_records_received_total per model and signal.",
           [q(f"sum by (model, signal) (rate(ml_records_received_total{{{M}}}[{RATE}]))", "{{model}} {{signal}}")], "rps", 8),
    ]
    return _dashboard("otel-ml-overview", "otel-ml / Overview", "Every monitored model at a glance.", model_vars(), panels,
                      ["overview"])


def model_detail() -> db.Dashboard:
    panels = [
        db.Row("Drift"),
        drift_status_panel(),
        table_panel("Drift per feature (now)", "Latest drift statistic, p-value (methods that have one) and decision per feature and method.",
                    [q(f"ml_drift_score{{{MV}}}", ref="A", instant=True, table_format=True),
                     q(f"ml_drift_pvalue{{{MV}}}", ref="B", instant=True, table_format=True),
                     q(f"ml_drift_detected{{{MV}}}", ref="C", instant=True, table_format=True)]),
        ts("Drift score per feature", "ml_drift_score over time (scale depends on the method: ks, psi, wasserstein, ...).",
           [q(f"ml_drift_score{{{MV}}}", "{{feature}} ({{method}})")], "short", 12),
        ts("Out-of-distribution ratio per feature", "ml_feature_ood_ratio: share of the window outside the reference, per feature.",
           [q(f"ml_feature_ood_ratio{{{MV}}}", "{{feature}}")], "percentunit", 12, vmin=0, vmax=1),
        db.Row("Performance"),
        ts("Performance vs estimated performance", "ml_performance (labeled window) against ml_estimated_performance (CBPE, label-free).",
           [q(f"ml_performance{{{MV}}}", "{{metric}}"), q(f"ml_estimated_performance{{{MV}}}", "estimated {{metric}}", "B")],
           "short", 12),
        ts("Window and labels", "Predictions in the window and how many of them have a joined label.",
           [q(f"ml_window_predictions{{{MV}}}", "window"), q(f"ml_window_labeled{{{MV}}}", "labeled", "B")], "short", 12),
        db.Row("Fairness"),
        ts("Fairness per attribute", "ml_fairness: demographic parity difference, disparate impact ratio, equalized odds difference.",
           [q(f"ml_fairness{{{MV}}}", "{{attribute}} {{metric}}")], "short", 12),
        table_panel("Group performance", "ml_group_performance per attribute and group (selection_rate, accuracy, tpr, fpr) "
                    "and ml_group_predictions (rows).",
                    [q(f"ml_group_performance{{{MV}}}", ref="A", instant=True, table_format=True),
                     q(f"ml_group_predictions{{{MV}}}", ref="B", instant=True, table_format=True)], width=12),
        db.Row("Serving"),
        ts("Predict latency", "p50, p95, p99 of ml_client_predict_duration_seconds for this model and version.",
           [q(f"histogram_quantile({x}, sum by (le) (rate(ml_client_predict_duration_seconds_bucket{{{CV}}}[{RATE}])))", f"p{int(x * 100)}", r)
            for x, r in ((0.5, "A"), (0.95, "B"), (0.99, "C"))], "s", 12),
        score_heatmap(),
    ]
    return _dashboard("otel-ml-model", "otel-ml / Model detail", "One model: drift, performance, fairness, serving.",
                      model_vars(), panels, ["model"])


def pipeline() -> db.Dashboard:
    panels = [
        db.Row("Ingest"),
        ts("Records received by signal", "ml_records_received_total per signal (prediction, label, audit, log, metric, span).",
           [q(f"sum by (signal) (rate(ml_records_received_total{{{M}}}[{RATE}]))", "{{signal}}")], "rps", 12),
        ts("Rejections by reason", "ml_records_rejected_total per reason (unauthenticated, malformed, too_large, duplicate, ...).",
           [q(f"sum by (reason) (rate(ml_records_rejected_total[{RATE}]))", "{{reason}}")], "rps", 12),
        ts("Data-quality issues", "ml_data_quality_issues_total per model, feature and issue (the rows are kept).",
           [q(f"sum by (model, feature, issue) (rate(ml_data_quality_issues_total{{{M}}}[{RATE}]))", "{{model}} {{feature}} {{issue}}")],
           "rps", 12),
        ts("Client buffer drops", "ml_client_buffer_dropped_total: records a model server dropped because its disk buffer was full "
           "(a flat 0 while no server ever dropped one).",
           [q(f"sum by (job, instance) (rate(ml_client_buffer_dropped_total[{RATE}])) or vector(0)", "{{instance}}")], "rps", 12),
        db.Row("Labels"),
        ts("Label join delay", "Time from a prediction to the join of its true label (ml_label_join_delay_seconds), p50 and p90.",
           [q(f"histogram_quantile(0.5, sum by (le) (rate(ml_label_join_delay_seconds_bucket[{RATE}])))", "p50"),
            q(f"histogram_quantile(0.9, sum by (le) (rate(ml_label_join_delay_seconds_bucket[{RATE}])))", "p90", "B")], "s", 12),
        ts("Labels joined, replaced, expired, pending", "Label join counters and the labels still waiting for their prediction.",
           [q(f"sum by (model) (rate(ml_labels_joined_total{{{M}}}[{RATE}]))", "joined {{model}}"),
            q(f"sum by (model) (rate(ml_labels_replaced_total{{{M}}}[{RATE}]))", "replaced {{model}}", "B"),
            q(f"rate(ml_labels_expired_total[{RATE}])", "expired", "C"),
            q("ml_labels_pending", "pending", "D")], "short", 12),
        db.Row("Compute"),
        ts("Compute duration", "ml_compute_duration_seconds: duration of each model's last compute.",
           [q(f"ml_compute_duration_seconds{{{M}}}", "{{model}} v{{model_version}}")], "s", 8),
        ts("Seconds since last compute", "time() - ml_last_computed_timestamp_seconds: grows when compute is stuck.",
           [q(f"time() - ml_last_computed_timestamp_seconds{{{M}}}", "{{model}} v{{model_version}}")], "s", 8),
        ts("Cardinality limited", "ml_cardinality_limited_total: label values folded into __other__, per kind.",
           [q(f"sum by (kind) (rate(ml_cardinality_limited_total[{RATE}]))", "{{kind}}")], "short", 8),
    ]
    return _dashboard("otel-ml-pipeline", "otel-ml / Pipeline health", "Ingest, labels and compute of the otel-ml processor.",
                      [model_vars()[0]], panels, ["pipeline"])


def system() -> db.Dashboard:
    job = query_var("job", "Job", "label_values(process_memory_usage_bytes, job)")
    instance = query_var("instance", "Instance", 'label_values(process_memory_usage_bytes{job=~"$job"}, instance)')
    panels = [
        db.Row("Model-server processes"),
        ts("Process CPU utilization", "process.cpu.utilization of each model-server process (OTel system metrics).",
           [q(f"sum by (job, instance) ({PROC_CPU})", "{{instance}}")], "percentunit", 8),
        ts("Process memory", "process.memory.usage (resident) of each model-server process.",
           [q('process_memory_usage_bytes{job=~"$job", instance=~"$instance"}', "{{instance}}")], "bytes", 8),
        ts("Process threads and open files", "process.thread.count and process.open_file_descriptor.count.",
           [q('process_thread_count{job=~"$job", instance=~"$instance"}', "threads {{instance}}"),
            q('process_open_file_descriptor_count{job=~"$job", instance=~"$instance"}', "fds {{instance}}", "B")], "short", 8),
        ts("Python GC collections per second", "cpython.gc.collections per generation: GC pressure of the model server.",
           [q(f'sum by (instance, generation) (rate(cpython_gc_collections_total{{job=~"$job", instance=~"$instance"}}[{RATE}]))',
              "{{instance}} gen {{generation}}")], "short", 8),
        db.Row("Hosts"),
        ts("System CPU utilization by state", "system.cpu.utilization averaged over CPUs, per state.",
           [q(f"avg by (instance, state) ({SYS_CPU})", "{{instance}} {{state}}")], "percentunit", 12),
        ts("System memory by state", "system.memory.usage per state (used, free, cached, ...).",
           [q('sum by (instance, state) (system_memory_usage_bytes{job=~"$job", instance=~"$instance"})', "{{instance}} {{state}}")], "bytes", 12),
        ts("Network I/O", "system.network.io per direction.",
           [q(f'sum by (instance, direction) (rate(system_network_io_bytes_total{{job=~"$job", instance=~"$instance"}}[{RATE}]))', "{{instance}} {{direction}}")],
           "Bps", 12),
        ts("Disk I/O", "system.disk.io per direction.",
           [q(f'sum by (instance, direction) (rate(system_disk_io_bytes_total{{job=~"$job", instance=~"$instance"}}[{RATE}]))', "{{instance}} {{direction}}")],
           "Bps", 12),
    ]
    return _dashboard("otel-ml-system", "otel-ml / System resources",
                      "Model-server processes and hosts, from opentelemetry-instrumentation-system-metrics.", [job, instance], panels,
                      ["system"])


DOCS = HERE.parents[1] / "docs" / "dashboards.md"
TABLE_BEGIN = "<!-- panels:begin (generated by dashboards/grafana/generate.py) -->"
TABLE_END = "<!-- panels:end -->"


def panels_table(rendered: dict) -> str:
    """Markdown list of every dashboard, row and panel with its queries (docs/dashboards.md)."""
    out = []
    for name, text in rendered.items():
        d = json.loads(text)
        out.append(f"\n### {d['title']} (`dashboards/grafana/{name}`, uid `{d['uid']}`)\n")
        out.append("| panel | type | queries |")
        out.append("|---|---|---|")
        for p in d["panels"]:
            if p["type"] == "row":
                out.append(f"| **{p['title']}** | row | |")
                continue
            exprs = "<br>".join("`" + " ".join(t["expr"].split()).replace("|", "\\|") + "`" for t in p["targets"])
            out.append(f"| {p['title']} | {p['type']} | {exprs} |")
    return "\n".join(out) + "\n"


def docs_with_table(text: str, rendered: dict) -> str:
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + TABLE_BEGIN + "\n" + panels_table(rendered) + TABLE_END + tail


def dashboards() -> dict:
    return {"otel-ml-overview.json": overview(), "otel-ml-model.json": model_detail(),
            "otel-ml-pipeline.json": pipeline(), "otel-ml-system.json": system()}


def _finish(d: dm.Dashboard) -> dm.Dashboard:
    """Stable panel ids (1..n, rows included) and ``{}`` instead of null options, so Grafana
    keeps the ids across imports and every panel type gets its defaults."""
    for i, panel in enumerate(d.panels or [], start=1):
        panel.id_val = i
        if getattr(panel, "options", "absent") is None:
            panel.options = {}
    return d


def render() -> dict:
    return {name: json.dumps(_finish(d.build()), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
            for name, d in dashboards().items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = ap.parse_args()
    stale = []
    outputs = {HERE / name: text for name, text in render().items()}
    if DOCS.exists():
        outputs[DOCS] = docs_with_table(DOCS.read_text(), render())
    for path, text in outputs.items():
        name = path.name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date, run dashboards/grafana/generate.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
