"""Generate otel-ml's Grafana dashboards with grafana-foundation-sdk.

Usage::

    python dashboards/grafana/generate.py          # writes dashboards/grafana/*.json
    python dashboards/grafana/generate.py --check  # exit 1 if the committed JSON differs

Every dashboard has a ``datasource`` variable (type prometheus; no datasource uid is written in
the JSON) and a ``model`` variable (from the processor's ``model`` label) that drives both the
model-server panels (``ml_model_name`` label, OTel -> Prometheus names) and the processor
panels (``model`` label). Import: Grafana > Dashboards > New > Import > upload the JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode, LegendDisplayMode, LegendPlacement, SortOrder, TooltipDisplayMode,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
MODEL = 'model=~"$model"'
MV = 'model=~"$model", model_version=~"$model_version"'
CLIENT = 'ml_model_name=~"$model"'
PSEUDO = 'feature!~"__prediction__|__multivariate__"'


def q(expr: str, legend: str = "", instant: bool = False, fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS)
    if instant:
        query = query.instant()
    if fmt:
        query = query.format(fmt)
    return query


def _targets(panel, queries):
    for i, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + i)))
    return panel


def ts(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "", w: int = 12, h: int = 8):
    panel = (timeseries.Panel().title(title).unit(unit).datasource(DS).height(h).span(w)
             .legend(common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM).calcs([]))
             .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))
    if description:
        panel = panel.description(description)
    return _targets(panel, queries)


def single(title: str, unit: str, query: prometheus.Dataquery, description: str = "", w: int = 6):
    panel = _targets(stat.Panel().title(title).unit(unit).datasource(DS).height(4).span(w).graph_mode(BigValueGraphMode.AREA), [query])
    return panel.description(description) if description else panel


def tab(title: str, query: prometheus.Dataquery, description: str = "", w: int = 12, h: int = 8):
    panel = _targets(table.Panel().title(title).datasource(DS).height(h).span(w).show_header(True), [query])
    return panel.description(description) if description else panel


def variables(board: dashboard.Dashboard, with_version: bool, multi_model: bool) -> dashboard.Dashboard:
    board = board.with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    board = board.with_variable(
        dashboard.QueryVariable("model").label("Model").datasource(DS)
        .query("label_values(ml_window_predictions, model)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(multi_model).include_all(multi_model).all_value(".*" if multi_model else None))
    if with_version:
        board = board.with_variable(
            dashboard.QueryVariable("model_version").label("Version").datasource(DS)
            .query('label_values(ml_window_predictions{model=~"$model"}, model_version)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"))
    return board


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (dashboard.Dashboard(title).uid(uid).description(description).tags(["otel-ml", "mlops"])
            .refresh("30s").time("now-6h", "now").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
            .editable())


def overview() -> dashboard.Dashboard:
    b = variables(base("otel-ml-overview", "otel-ml / ML overview",
                       "Every monitored model: traffic, latency, errors, accuracy, drift, OOD, label coverage."),
                  with_version=False, multi_model=True)
    b = b.with_row(dashboard.Row("Traffic and service health (model servers)"))
    b = b.with_panel(ts("Predictions per second", "reqps", q(
        f"sum by (ml_model_name) (rate(ml_client_predictions_total{{{CLIENT}}}[$__rate_interval]))", "{{ml_model_name}}"),
        description="Rows predicted per second, from the model servers' ml.client.predictions counter."))
    b = b.with_panel(ts("Predict latency p50 / p99", "s",
        q(f"histogram_quantile(0.5, sum by (ml_model_name, le) (rate(ml_client_predict_duration_seconds_bucket{{{CLIENT}}}[$__rate_interval])))", "p50 {{ml_model_name}}"),
        q(f"histogram_quantile(0.99, sum by (ml_model_name, le) (rate(ml_client_predict_duration_seconds_bucket{{{CLIENT}}}[$__rate_interval])))", "p99 {{ml_model_name}}")))
    b = b.with_panel(ts("Predict error ratio", "percentunit", q(
        f"(sum by (ml_model_name) (rate(ml_client_errors_total{{{CLIENT}}}[$__rate_interval]))"
        f" or 0 * sum by (ml_model_name) (rate(ml_client_predictions_total{{{CLIENT}}}[$__rate_interval])))"
        f" / sum by (ml_model_name) (rate(ml_client_predictions_total{{{CLIENT}}}[$__rate_interval]))", "{{ml_model_name}}"),
        description="Share of predict calls that raised (0 when none did)."))
    b = b.with_row(dashboard.Row("Model quality (processor)"))
    b = b.with_panel(ts("Accuracy (labeled window)", "percentunit", q(
        f'ml_performance{{{MODEL}, metric="accuracy"}}', "{{model}} v{{model_version}}"), w=8))
    b = b.with_panel(ts("Drifted features", "short", q(
        f"sum by (model, model_version) (ml_drift_detected{{{MODEL}, {PSEUDO}}})", "{{model}} v{{model_version}}"),
        description="Features whose drift test crosses its threshold against the reference.", w=8))
    b = b.with_panel(ts("Out-of-distribution ratio", "percentunit", q(
        f"ml_ood_ratio{{{MODEL}}}", "{{model}} v{{model_version}}"), w=8))
    b = b.with_panel(ts("Label coverage", "percentunit", q(
        f"sum by (model, model_version) (ml_window_labeled{{{MODEL}}}) / sum by (model, model_version) (ml_window_predictions{{{MODEL}}})",
        "{{model}} v{{model_version}}"), description="Share of the window whose true label has arrived.", w=8))
    b = b.with_panel(tab("Models", q(
        f"ml_window_predictions{{{MODEL}}}", instant=True, fmt=PromQueryFormat.TABLE), "Model versions and their window sizes.", w=16))
    return b


def model_detail() -> dashboard.Dashboard:
    b = variables(base("otel-ml-model", "otel-ml / Model detail",
                       "One model: per-feature drift, performance vs estimate, OOD, fairness and groups."),
                  with_version=True, multi_model=False)
    b = b.with_row(dashboard.Row("Performance"))
    b = b.with_panel(ts("Performance (labeled window) vs estimate (CBPE)", "short",
        q(f"ml_performance{{{MV}}}", "{{metric}} v{{model_version}}"),
        q(f"ml_estimated_performance{{{MV}}}", "estimated {{metric}} v{{model_version}}"),
        description="Realized metrics need labels; CBPE estimates them from calibrated scores while labels lag."))
    b = b.with_panel(ts("Window and labels", "short",
        q(f"ml_window_predictions{{{MV}}}", "predictions v{{model_version}}"),
        q(f"ml_window_labeled{{{MV}}}", "labeled v{{model_version}}")))
    b = b.with_row(dashboard.Row("Drift"))
    b = b.with_panel(tab("Feature drift (now)", q(
        f"ml_drift_score{{{MV}}}", instant=True, fmt=PromQueryFormat.TABLE),
        "Drift statistic per feature and method; compare with ml_drift_detected and ml_drift_pvalue.", h=10))
    b = b.with_panel(heatmap.Panel().title("Drift detected per feature").datasource(DS).height(10).span(12).show_legend().show_tooltip()
        .with_target(q(f"max by (feature) (ml_drift_detected{{{MV}, {PSEUDO}}})", "{{feature}}").ref_id("A"))
        .description("1 when the feature's test crosses its threshold."))
    b = b.with_panel(ts("Prediction and multivariate drift", "short", q(
        f'ml_drift_score{{{MV}, feature=~"__prediction__|__multivariate__"}}', "{{feature}} {{method}}")))
    b = b.with_panel(ts("Out-of-distribution ratio per feature", "percentunit",
        q(f"ml_feature_ood_ratio{{{MV}}}", "{{feature}}"), q(f"ml_ood_ratio{{{MV}}}", "any feature")))
    b = b.with_panel(heatmap.Panel().title("Confidence score distribution").datasource(DS).height(8).span(12).show_legend().show_tooltip()
        .with_target(q(f"sum by (le) (rate(ml_client_prediction_score_bucket{{{CLIENT}}}[$__rate_interval]))", "{{le}}")
                     .format(PromQueryFormat.HEATMAP).ref_id("A")))
    b = b.with_panel(ts("Data-quality issues", "short", q(
        f"sum by (feature, issue) (increase(ml_data_quality_issues_total{{{MODEL}}}[$__rate_interval]))", "{{feature}} {{issue}}"),
        description="Missing, NaN or wrongly typed feature values (the rows are kept)."))
    b = b.with_row(dashboard.Row("Responsible AI"))
    b = b.with_panel(ts("Fairness per attribute", "short", q(
        f"ml_fairness{{{MV}}}", "{{attribute}} {{metric}}"),
        description="Demographic parity difference, disparate impact ratio, equalized odds difference."))
    b = b.with_panel(tab("Group performance", q(
        f"ml_group_performance{{{MV}}}", instant=True, fmt=PromQueryFormat.TABLE), "Selection rate, accuracy, TPR, FPR per group."))
    b = b.with_panel(ts("Predictions per group", "short", q(
        f"ml_group_predictions{{{MV}}}", "{{attribute}}={{group}}")))
    return b


def pipeline_health() -> dashboard.Dashboard:
    b = variables(base("otel-ml-pipeline", "otel-ml / Pipeline health",
                       "Ingest, rejections, label joins, compute and the model servers' buffers."),
                  with_version=False, multi_model=True)
    b = b.with_panel(ts("Records received per second", "reqps", q(
        "sum by (signal) (rate(ml_records_received_total[$__rate_interval]))", "{{signal}}")))
    b = b.with_panel(ts("Records rejected per second", "reqps", q(
        "sum by (reason) (rate(ml_records_rejected_total[$__rate_interval]))", "{{reason}}")))
    b = b.with_panel(ts("Label joins", "short",
        q(f"sum by (model) (increase(ml_labels_joined_total{{{MODEL}}}[$__rate_interval]))", "joined {{model}}"),
        q("sum(increase(ml_labels_expired_total[$__rate_interval]))", "expired"),
        q("ml_labels_pending", "pending")))
    b = b.with_panel(ts("Label join delay", "s",
        q("histogram_quantile(0.5, sum by (le) (rate(ml_label_join_delay_seconds_bucket[$__rate_interval])))", "p50"),
        q("histogram_quantile(0.9, sum by (le) (rate(ml_label_join_delay_seconds_bucket[$__rate_interval])))", "p90")))
    b = b.with_panel(ts("Compute duration per model", "s", q(
        f"ml_compute_duration_seconds{{{MODEL}}}", "{{model}} v{{model_version}}")))
    b = b.with_panel(ts("Seconds since last compute", "s", q(
        f"time() - ml_last_computed_timestamp_seconds{{{MODEL}}}", "{{model}} v{{model_version}}")))
    b = b.with_panel(ts("Cardinality folds (last hour)", "short", q(
        "sum by (kind) (increase(ml_cardinality_limited_total[1h]))", "{{kind}}")))
    b = b.with_panel(ts("Model-server buffer drops per second", "reqps", q(
        "sum by (job, instance) (rate(ml_client_buffer_dropped_total[$__rate_interval])) or vector(0)", "{{instance}}"),
        description="Prediction records a model server dropped because its local buffer was full (hub down too long)."))
    return b


def system_resources() -> dashboard.Dashboard:
    b = base("otel-ml-system", "otel-ml / System resources",
             "Model servers' resources from opentelemetry-instrumentation-system-metrics.")
    b = b.with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    b = b.with_variable(dashboard.QueryVariable("instance").label("Instance").datasource(DS)
                        .query("label_values(process_cpu_utilization, instance)").multi(True).include_all(True)
                        .all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    inst = 'instance=~"$instance"'
    b = b.with_panel(ts("Process CPU utilization", "percentunit", q(f"sum by (instance) (process_cpu_utilization{{{inst}}})", "{{instance}}")))
    b = b.with_panel(ts("Process memory (RSS)", "bytes", q(f"process_memory_usage_bytes{{{inst}}}", "{{instance}}")))
    b = b.with_panel(ts("Process threads", "short", q(f"process_thread_count{{{inst}}}", "{{instance}}")))
    b = b.with_panel(ts("Python GC collections per second", "short", q(
        f"sum by (instance, generation) (rate(cpython_gc_collections_total{{{inst}}}[$__rate_interval]))", "{{instance}} gen {{generation}}")))
    b = b.with_panel(ts("System CPU utilization", "percentunit", q(
        f'avg by (instance) (system_cpu_utilization{{{inst}, state!="idle"}}) * count by (instance) (count by (instance, state) (system_cpu_utilization{{{inst}, state!="idle"}}))',
        "{{instance}}"), description="Busy share of the machine's CPUs (all states but idle)."))
    b = b.with_panel(ts("System memory utilization", "percentunit", q(f'system_memory_utilization{{{inst}, state="used"}}', "{{instance}}")))
    b = b.with_panel(ts("Network I/O", "Bps", q(
        f"sum by (instance, direction) (rate(system_network_io_bytes_total{{{inst}}}[$__rate_interval]))", "{{instance}} {{direction}}")))
    b = b.with_panel(ts("Disk I/O", "Bps", q(
        f"sum by (instance, direction) (rate(system_disk_io_bytes_total{{{inst}}}[$__rate_interval]))", "{{instance}} {{direction}}")))
    return b


DASHBOARDS = {
    "otel-ml-overview.json": overview,
    "otel-ml-model.json": model_detail,
    "otel-ml-pipeline.json": pipeline_health,
    "otel-ml-system.json": system_resources,
}


def render() -> dict:
    return {HERE / name: json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
            for name, build in DASHBOARDS.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date, run dashboards/grafana/generate.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
