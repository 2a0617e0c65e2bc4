"""A ``prometheus_client`` custom Collector serving the processor's ``ml_*`` metrics.

``collect()`` reads the ingest counters and the compute stage's last :class:`Snapshot`; it
never computes. A NaN or infinite value is not exported (the series is absent until the
value is defined again).

Example::

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(MLCollector(counters, lambda: computer.snapshot))
    print(generate_latest(registry).decode())
    registry.get_sample_value("ml_window_predictions", {"model": "churn", "model_version": "3"})
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from otel_ml import semconv as sc
from otel_ml_processor.counters import JOIN_DELAY_BUCKETS, Counters

if TYPE_CHECKING:                 # the exporter reads compute's snapshot; it does not import compute
    from otel_ml_processor.compute.manager import Snapshot

MV = [sc.L_MODEL, sc.L_MODEL_VERSION]


def _ok(v) -> bool:
    return v is not None and math.isfinite(v)


class MLCollector(Collector):
    def __init__(self, counters: Counters, snapshot: Callable[[], Snapshot]):
        self.counters = counters
        self.snapshot = snapshot

    def describe(self) -> Iterable:
        return []  # values appear and disappear with models; no fixed description

    def collect(self) -> Iterable:
        yield from self._ingest()
        yield from self._computed()

    def _ingest(self) -> Iterable:
        s = self.counters.snapshot()
        fam = CounterMetricFamily(sc.M_RECORDS_RECEIVED, "OTLP records received, by model and signal.",
                                  labels=[sc.L_MODEL, sc.L_SIGNAL])
        for (model, signal), v in sorted(s["received"].items()):
            fam.add_metric([model, signal], v)
        yield fam
        fam = CounterMetricFamily(sc.M_RECORDS_REJECTED, "Records (or whole requests, for request-level reasons) rejected, by reason.",
                                  labels=[sc.L_REASON])
        for reason in sc.REJECT_REASONS:
            fam.add_metric([reason], s["rejected"].get((reason,), 0))
        yield fam
        fam = CounterMetricFamily(sc.M_DATA_QUALITY_ISSUES, "Feature values counted as data-quality problems (the row is kept).",
                                  labels=[sc.L_MODEL, sc.L_FEATURE, sc.L_ISSUE])
        for (model, feature, issue), v in sorted(s["data_quality"].items()):
            fam.add_metric([model, feature, issue], v)
        yield fam
        fam = CounterMetricFamily(sc.M_CARDINALITY_LIMITED, "Label values folded into __other__ by the cardinality limits.",
                                  labels=[sc.L_KIND])
        for kind in (sc.KIND_MODEL, sc.KIND_FEATURE, sc.KIND_GROUP):
            fam.add_metric([kind], s["cardinality_limited"].get((kind,), 0))
        yield fam
        fam = CounterMetricFamily(sc.M_LABELS_JOINED, "True labels joined to their prediction.", labels=[sc.L_MODEL])
        for (model,), v in sorted(s["labels_joined"].items()):
            fam.add_metric([model], v)
        yield fam
        fam = CounterMetricFamily(sc.M_LABELS_REPLACED, "Labels that replaced an earlier label of the same prediction.",
                                  labels=[sc.L_MODEL])
        for (model,), v in sorted(s["labels_replaced"].items()):
            fam.add_metric([model], v)
        yield fam
        yield CounterMetricFamily(sc.M_LABELS_EXPIRED, "Labels dropped before their prediction arrived (TTL or pending_max).",
                                  value=s["labels_expired"])
        counts, cum, buckets = s["join_delay_counts"], 0, []
        for bound, n in zip(list(JOIN_DELAY_BUCKETS) + [math.inf], counts):
            cum += n
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cum))
        yield HistogramMetricFamily(sc.M_LABEL_JOIN_DELAY, "Time from a prediction to the join of its true label.",
                                    buckets=buckets, sum_value=s["join_delay_sum"])

    def _computed(self) -> Iterable:
        snap = self.snapshot()
        g = lambda name, doc, labels: GaugeMetricFamily(name, doc, labels=labels)  # noqa: E731
        pending = GaugeMetricFamily(sc.M_LABELS_PENDING, "Labels waiting for their prediction.", value=snap.labels_pending)
        yield pending
        perf = g(sc.M_PERFORMANCE, "Model performance on the labeled window.", MV + [sc.L_METRIC])
        perf_ci = g(sc.M_PERFORMANCE_INTERVAL, "95 % Wilson interval of accuracy, precision and recall on the labeled window.",
                    MV + [sc.L_METRIC, sc.L_BOUND])
        est = g(sc.M_ESTIMATED_PERFORMANCE, "Label-free performance estimate (CBPE, DLE) on the window.", MV + [sc.L_METRIC])
        est_ci = g(sc.M_ESTIMATED_PERFORMANCE_INTERVAL, "The estimate +- 3 of NannyML's sampling errors "
                   "(clipped to [0, 1], or at 0 for mae and rmse).", MV + [sc.L_METRIC, sc.L_BOUND])
        ood = g(sc.M_OOD_RATIO, "Fraction of window predictions with any out-of-distribution feature.", MV)
        ood_floor = g(sc.M_OOD_RATIO_FLOOR, "The OOD fraction a stable window of this size stays under at level "
                      "drift.alpha (the reference's own unseen share; MLOODRatioHigh needs ml_ood_ratio above it).", MV)
        food = g(sc.M_FEATURE_OOD_RATIO, "Fraction of window predictions with this feature out of distribution.", MV + [sc.L_FEATURE])
        fmiss = g(sc.M_FEATURE_MISSING_RATIO, "Fraction of window predictions with this input feature missing (absent, "
                  "null or a non-finite number; the score of drift method missing).", MV + [sc.L_FEATURE])
        dscore = g(sc.M_DRIFT_SCORE, "Drift statistic of the window against the reference.", MV + [sc.L_FEATURE, sc.L_METHOD])
        dp = g(sc.M_DRIFT_PVALUE, "P-value of the drift test (methods that have one).", MV + [sc.L_FEATURE, sc.L_METHOD])
        dq = g(sc.M_DRIFT_QVALUE, "Benjamini-Hochberg q-value of the drift p-value across the model's features.",
               MV + [sc.L_FEATURE, sc.L_METHOD])
        dt = g(sc.M_DRIFT_THRESHOLD, "What the drift decision compares: the q-value threshold (p-value tests) or "
               "max(threshold, noise floor) for the score (distances, multivariate).", MV + [sc.L_FEATURE, sc.L_METHOD])
        dd = g(sc.M_DRIFT_DETECTED, "1 when the drift test crosses its threshold.", MV + [sc.L_FEATURE, sc.L_METHOD])
        fair = g(sc.M_FAIRNESS, "Fairness metric across the groups of a sensitive attribute.", MV + [sc.L_ATTRIBUTE, sc.L_METRIC])
        fair_p = g(sc.M_FAIRNESS_PVALUE, "Chi-squared p-value of the fairness gap (is it more than chance?).",
                   MV + [sc.L_ATTRIBUTE, sc.L_METRIC])
        gperf = g(sc.M_GROUP_PERFORMANCE, "Per-group performance.", MV + [sc.L_ATTRIBUTE, sc.L_GROUP, sc.L_METRIC])
        gpred = g(sc.M_GROUP_PREDICTIONS, "Predictions per group in the window.", MV + [sc.L_ATTRIBUTE, sc.L_GROUP])
        wp = g(sc.M_WINDOW_PREDICTIONS, "Predictions in the window.", MV)
        wl = g(sc.M_WINDOW_LABELED, "Predictions in the labeled window (the last window.size with a joined true label).", MV)
        wla = g(sc.M_WINDOW_LABELED_AFTER_REFERENCE, "Predictions in the labeled window stored after the reference "
                "(the labels the baseline comparison may rest on).", MV)
        refp = g(sc.M_REFERENCE_PREDICTIONS, "Rows of the reference so far (a file's rows; for first_n, the "
                 "predictions collected towards it).", MV)
        refs = g(sc.M_REFERENCE_SIZE, "Rows the reference will have (the file's rows, or first_n).", MV)
        last = g(sc.M_LAST_COMPUTED, "When the model's metrics were last computed (unix seconds).", MV)
        dur = g(sc.M_COMPUTE_DURATION, "Duration of the model's last compute.", MV)
        for (model, version), m in sorted(snap.models.items()):
            mv = [model, version]
            for k, v in sorted(m.performance.items()):
                if _ok(v):
                    perf.add_metric(mv + [k], v)
            for (k, bound), v in sorted(m.performance_interval.items()):
                if _ok(v):
                    perf_ci.add_metric(mv + [k, bound], v)
            for k, v in sorted(m.estimated_performance.items()):
                if _ok(v):
                    est.add_metric(mv + [k], v)
            for (k, bound), v in sorted(m.estimated_performance_interval.items()):
                if _ok(v):
                    est_ci.add_metric(mv + [k, bound], v)
            if _ok(m.ood_ratio):
                ood.add_metric(mv, m.ood_ratio)
            if _ok(m.ood_ratio_floor):
                ood_floor.add_metric(mv, m.ood_ratio_floor)
            for k, v in sorted(m.feature_ood_ratio.items()):
                if _ok(v):
                    food.add_metric(mv + [k], v)
            for k, v in sorted(m.feature_missing_ratio.items()):
                if _ok(v):
                    fmiss.add_metric(mv + [k], v)
            for d in m.drift:
                if not _ok(d.score):
                    continue
                labels = mv + [d.feature, d.method]
                dscore.add_metric(labels, d.score)
                if _ok(d.pvalue):
                    dp.add_metric(labels, d.pvalue)
                if _ok(d.qvalue):
                    dq.add_metric(labels, d.qvalue)
                if _ok(d.threshold):
                    dt.add_metric(labels, d.threshold)
                dd.add_metric(labels, 1.0 if d.detected else 0.0)
            for (attr, metric), v in sorted(m.fairness.items()):
                if _ok(v):
                    fair.add_metric(mv + [attr, metric], v)
            for (attr, metric), v in sorted(m.fairness_pvalue.items()):
                if _ok(v):
                    fair_p.add_metric(mv + [attr, metric], v)
            for (attr, group, metric), v in sorted(m.group_performance.items()):
                if _ok(v):
                    gperf.add_metric(mv + [attr, group, metric], v)
            for (attr, group), v in sorted(m.group_predictions.items()):
                gpred.add_metric(mv + [attr, group], v)
            wp.add_metric(mv, m.window_predictions)
            wl.add_metric(mv, m.window_labeled)
            if m.window_labeled_after_reference is not None:
                wla.add_metric(mv, m.window_labeled_after_reference)
            if m.reference_predictions is not None:
                refp.add_metric(mv, m.reference_predictions)
            if m.reference_target is not None:
                refs.add_metric(mv, m.reference_target)
            if (model, version) in snap.computed_at:
                last.add_metric(mv, snap.computed_at[(model, version)])
                dur.add_metric(mv, snap.durations[(model, version)])
        yield from (perf, perf_ci, est, est_ci, ood, ood_floor, food, fmiss, dscore, dp, dq, dt, dd, fair, fair_p, gperf,
                    gpred, wp, wl, wla, refp, refs, last, dur)
