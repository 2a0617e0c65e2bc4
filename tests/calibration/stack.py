"""The calibration run: cohorts of seeded models fed in steps to a real processor, and every
model-quality alert condition read from a real Prometheus after each step.

A cohort is a set of models with one configuration and one feeding schedule; ``rows_after[s]``
is how many predictions each of its models has sent after its reference once step ``s`` is in.
Labels come back one step late (the labels of step ``s``'s predictions are sent with step
``s + 1``). After every step the run waits until the processor's figures are those of all the
step's data (a model's window and labeled window reach their new sizes, or, where those stay,
two compute cycles after the step's last acknowledged request), then for a rule evaluation
after that scrape, and queries each alert's expression, as read from the shipped alerts file,
as an instant query: the series returned are those for which the condition is true at that
evaluation.

Example::

    with CalibrationRun(tmp_path, [Cohort("refile", 64, 400, (100, 200, 400, 600), reference_file=1000)]) as run:
        result = run.measure()
    result.hits[("MLFeatureDrift", "warning")][step]      # models whose condition was true at that step
    result.window[("refile-00", step)]                    # ml_window_predictions then
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from dashboards.prometheus import generate
from otel_ml import semconv as sc
from tests.calibration import streams, wire
from tests.support import ProcessorProcess, PrometheusProcess, grpc_export, wait_for

#: The model-quality alerts (docs/runbook.md, "What a model-quality alert promises").
MODEL_QUALITY = ("MLFeatureDrift", "MLFeatureMissingValues", "MLPredictionDrift", "MLMultivariateDrift", "MLPerformanceBelowThreshold",
                 "MLPerformanceBelowBaseline", "MLEstimatedPerformanceDrop", "MLOODRatioHigh", "MLFairnessGap")
#: ``for:`` of the test copy of the alerts (the shipped ones are 15m to 1h).
SHORT_FOR = "2s"
RECORDS_PER_REQUEST = 3000
#: the otel-ml job's scrape interval and timeout (see __enter__)
SCRAPE_INTERVAL = "3s"
DEFAULT_FIRST_N = 1000


@dataclass(frozen=True)
class Cohort:
    name: str
    models: int
    window: int                       # window.size
    rows_after: tuple                 # predictions sent after the reference, after each step
    reference_file: int = 0           # rows of the reference file; 0: the first_n default (1000)
    high_cardinality: bool = False
    change: str = ""                  # a key of streams.CHANGES: the stream after the reference changes
    task: str = "binary"              # "binary" | "multiclass" | "regression" (streams.multiclass / regression)

    def model_names(self) -> list:
        return [f"{self.name}-{k:02d}" for k in range(self.models)]


@dataclass
class Measurement:
    """What the run saw. ``hits[(alert, severity)][s]`` = models whose condition was true at step s."""

    steps: int
    models: dict = field(default_factory=dict)        # model -> Cohort
    window: dict = field(default_factory=dict)        # (model, step) -> ml_window_predictions
    labeled: dict = field(default_factory=dict)       # (model, step) -> ml_window_labeled
    ood: dict = field(default_factory=dict)           # (model, step) -> ml_ood_ratio
    ood_floor: dict = field(default_factory=dict)     # (model, step) -> ml_ood_ratio_floor
    hits: dict = field(default_factory=dict)          # (alert, severity) -> [set of models per step]
    detail: dict = field(default_factory=dict)        # (alert, severity) -> [(step, series labels, value)]
    seconds: float = 0.0
    timings: list = field(default_factory=list)       # (what, seconds) of the run's phases


def shipped_alerts() -> list:
    """(name, severity, expr) of every model-quality alert of the shipped alerts file."""
    doc = yaml.safe_load(generate.ALERTS.read_text())
    return [(r["alert"], r["labels"]["severity"], r["expr"]) for g in doc["groups"] for r in g["rules"]
            if r["alert"] in MODEL_QUALITY]


def expected_window(cohort: Cohort, step: int) -> int:
    """Predictions in the window after ``step``: those sent after the reference, at most window.size."""
    return min(cohort.window, cohort.rows_after[step])


def expected_labeled(cohort: Cohort, step: int) -> int:
    """The labeled window after ``step``: the predictions of earlier steps (labels come one step
    late) and, with the first_n reference, its predictions (labeled before they were sent: the
    labeled window does not wait for the reference), at most window.size."""
    reference = 0 if cohort.reference_file else DEFAULT_FIRST_N
    return min(cohort.window, reference + (cohort.rows_after[step - 1] if step else 0))


class CalibrationRun:
    def __init__(self, tmp: Path, cohorts: list, seed: int = 20261130):
        self.tmp = Path(tmp)
        self.cohorts = cohorts
        self.seed = seed
        self.steps = len(cohorts[0].rows_after)
        assert all(len(c.rows_after) == self.steps for c in cohorts), "every cohort has one schedule"
        self.streams: dict = {}        # model -> (reference Rows or None, stream Rows)
        self.sent_labels: dict = {}    # model -> stream rows labeled so far
        self.t0 = time.time_ns() - 3600 * 10**9   # record times: from an hour ago, 1 ms apart
        self.proc: ProcessorProcess | None = None
        self.prom: PrometheusProcess | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def _model_config(self, cohort: Cohort, name: str, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.cohorts.index(cohort), index])
        reference_rows = cohort.reference_file or DEFAULT_FIRST_N
        if cohort.task == "multiclass":
            reference = streams.multiclass(rng, reference_rows)
            stream = streams.multiclass(rng, cohort.rows_after[-1], cohort.change)
            config = {"name": name, "task": sc.TASK_CLASSIFICATION, "window": {"size": cohort.window}}
        elif cohort.task == "regression":
            reference = streams.regression(rng, reference_rows)
            stream = streams.regression(rng, cohort.rows_after[-1])
            config = {"name": name, "task": sc.TASK_REGRESSION, "window": {"size": cohort.window}}
        else:
            reference = streams.stable(rng, reference_rows, cohort.high_cardinality)
            stream = streams.generate(rng, cohort.rows_after[-1], cohort.high_cardinality, cohort.change)
            config = {"name": name, "task": sc.TASK_CLASSIFICATION, "positive_label": streams.POSITIVE,
                      "window": {"size": cohort.window}, "fairness": {"attributes": [streams.SEGMENT]}}
        if cohort.reference_file:
            path = streams.write_reference(self.tmp / f"{name}.csv", reference)
            config["reference"] = {"path": str(path)}
            self.streams[name] = (None, stream)
        else:
            self.streams[name] = (reference, stream)
        return config

    def __enter__(self) -> CalibrationRun:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.measurement = Measurement(steps=self.steps, models={n: c for c in self.cohorts for n in c.model_names()})
        timings, t = self.measurement.timings, time.monotonic()
        models = [self._model_config(cohort, name, k)
                  for cohort in self.cohorts for k, name in enumerate(cohort.model_names())]
        timings.append(("generate", time.monotonic() - t))
        # the shipped recording rules, and the alerts with every for: shortened (expressions as shipped)
        _, alerts = generate.render_to(generate.load_thresholds(), self.tmp / "rules", for_override=SHORT_FOR)
        self._pool = ThreadPoolExecutor(3)
        try:
            t = time.monotonic()
            self.proc = ProcessorProcess(self.tmp / "processor", models=models,
                                         extra={"limits": {"max_models": len(models) + 10}})
            self.proc.start()
            timings.append(("processor start", time.monotonic() - t))
            # 120 models' series are ~2 MB of /metrics: ~1 s to write on a loaded 2-core machine,
            # past a 1 s scrape's timeout (then no sample at all and every wait times out)
            self.prom = PrometheusProcess(self.tmp, targets=[self.proc.metrics_endpoint],
                                          rule_files=[generate.RULES, alerts], scrape_interval=SCRAPE_INTERVAL)
            self.prom.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)
        if self.prom is not None:
            self.prom.stop()
        if self.proc is not None and self.proc.proc is not None:
            self.proc.stop()

    # -- feeding ---------------------------------------------------------------------------------
    def _time(self, i: int) -> int:
        return self.t0 + i * 1_000_000

    def _predictions(self, name: str, rows: streams.Rows, start: int, stop: int, offset: int) -> list:
        names = list(rows.features)
        return [wire.prediction_record(name, f"{name}-{offset + i}", self._time(offset + i),
                                       {f: rows.features[f][i] for f in names}, rows.predicted[i], rows.scores[i],
                                       {streams.SEGMENT: rows.segments[i]},
                                       {c: p[i] for c, p in rows.probabilities.items()},
                                       rows.values[i] if rows.values else None)
                for i in range(start, stop)]

    def _labels(self, name: str, rows: streams.Rows, start: int, stop: int, offset: int) -> list:
        return [wire.label_record(name, f"{name}-{offset + i}", rows.labels[i], self._time(offset + i))
                for i in range(start, stop)]

    def _send(self, records: list) -> None:
        chunks = [records[i:i + RECORDS_PER_REQUEST] for i in range(0, len(records), RECORDS_PER_REQUEST)]
        for response in self._pool.map(lambda c: grpc_export(self.proc.grpc_endpoint, wire.logs_request(c)), chunks):
            assert response.partial_success.rejected_log_records == 0, response.partial_success.error_message

    def send_references(self) -> None:
        """The first_n references: their labels first (they wait for their predictions and are
        joined as those are stored, so the reference has its labels when it is taken), then the
        predictions."""
        labels, predictions = [], []
        for name, (reference, _) in self.streams.items():
            if reference is not None:
                labels += self._labels(name, reference, 0, len(reference), 0)
                predictions += self._predictions(name, reference, 0, len(reference), 0)
        self._send(labels)
        self._send(predictions)

    def send_step(self, step: int) -> float:
        """Step ``step``'s predictions and the previous step's labels; returns when all are acknowledged."""
        records = []
        for name, (reference, stream) in self.streams.items():
            cohort = self.measurement.models[name]
            offset = len(reference) if reference is not None else 0
            start = cohort.rows_after[step - 1] if step else 0
            records += self._predictions(name, stream, start, cohort.rows_after[step], offset)
            labeled = self.sent_labels.get(name, 0)
            records += self._labels(name, stream, labeled, start, offset)
            self.sent_labels[name] = start
        self._send(records)
        return time.time()

    # -- reading ---------------------------------------------------------------------------------
    def _per_model(self, promql: str) -> dict:
        """model -> (value, time of the instant query)."""
        return {s["metric"][sc.L_MODEL]: (float(s["value"][1]), float(s["value"][0])) for s in self.prom.query(promql)}

    def _computed_after(self, acked: float, names: set) -> None:
        """Wait until each of ``names`` was computed twice after ``acked``: the second of those
        cycles started after the first ended, so after every request of the step was committed."""
        def computed(after: dict):
            last = self._per_model(sc.M_LAST_COMPUTED)
            ok = names <= last.keys() and all(last[n][0] > after.get(n, acked) for n in names)
            return ok and {n: last[n][0] for n in names}

        first = wait_for(lambda: computed({}), timeout=180, interval=0.5, what="a compute cycle after the step")
        wait_for(lambda: computed(first), timeout=180, interval=0.5, what="a second compute cycle after the step")

    def _step_computed(self, step: int) -> None:
        """Wait until the processor's exported figures are those of all of the step's data. A model
        whose window and labeled window both grow in this step shows it by its two counts (the
        values of DESIGN.md's windows: the predictions after the reference, and the labeled ones,
        at most window.size); one whose counts stay (full windows) by two compute cycles."""
        expected, by_counts = {}, set()
        for name, cohort in self.measurement.models.items():
            expected[name] = (expected_window(cohort, step), expected_labeled(cohort, step))
            if step and all(now != before for now, before in zip(
                    expected[name], (expected_window(cohort, step - 1), expected_labeled(cohort, step - 1)))):
                by_counts.add(name)
        deadline = time.monotonic() + 180
        while True:
            windows, labeled = self._per_model(sc.M_WINDOW_PREDICTIONS), self._per_model(sc.M_WINDOW_LABELED)
            wrong = {n: (windows.get(n, (None,))[0], labeled.get(n, (None,))[0], expected[n]) for n in by_counts
                     if (windows.get(n, (None,))[0], labeled.get(n, (None,))[0]) != expected[n]}
            if not wrong:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"step {step}: (window, labeled window, expected) of "
                                     f"{dict(list(wrong.items())[:8])} (of {len(wrong)} models)")
            time.sleep(0.5)
        rest = set(expected) - by_counts
        if rest:
            self._computed_after(self._acked, rest)

    def evaluate(self, step: int, alerts: list) -> None:
        m = self.measurement
        self._step_computed(step)
        windows = self._per_model(sc.M_WINDOW_PREDICTIONS)
        labeled = self._per_model(sc.M_WINDOW_LABELED)
        ood = self._per_model(sc.M_OOD_RATIO)
        ood_floor = self._per_model(sc.M_OOD_RATIO_FLOOR)
        for name in m.models:
            m.window[(name, step)] = windows[name][0]
            m.labeled[(name, step)] = labeled.get(name, (0.0, 0.0))[0]
            m.ood[(name, step)] = ood.get(name, (None, 0.0))[0]
            m.ood_floor[(name, step)] = ood_floor.get(name, (None, 0.0))[0]
        # the query's time (an instant query answers at it), after the scrape of those figures: a rule
        # evaluation a whole interval later read that scrape
        seen = max(t for _, t in windows.values())
        wait_for(lambda: (self.prom.value(f"min(timestamp({generate.LABEL_COVERAGE}))") or 0) >= seen + 1.0,
                 timeout=60, interval=0.3, what="a rule evaluation after the scrape")
        for name, severity, expr in alerts:
            key = (name, severity)
            result = self.prom.query(expr)
            m.hits.setdefault(key, [set() for _ in range(self.steps)])[step] = {s["metric"][sc.L_MODEL] for s in result}
            m.detail.setdefault(key, []).extend((step, s["metric"], float(s["value"][1])) for s in result)

    def measure(self) -> Measurement:
        started = time.monotonic()
        alerts = shipped_alerts()
        timings = self.measurement.timings
        self.send_references()
        timings.append(("references", time.monotonic() - started))
        for step in range(self.steps):
            t = time.monotonic()
            self._acked = self.send_step(step)
            timings.append((f"send {step}", time.monotonic() - t))
            t = time.monotonic()
            self.evaluate(step, alerts)
            timings.append((f"evaluate {step}", time.monotonic() - t))
        self.measurement.seconds = time.monotonic() - started
        return self.measurement

    def firing(self, alert: str, severity: str) -> set:
        """Models for which the test copy of ``alert`` fires now."""
        result = self.prom.query(f'ALERTS{{alertname="{alert}", severity="{severity}", alertstate="firing"}}')
        return {s["metric"][sc.L_MODEL] for s in result}
