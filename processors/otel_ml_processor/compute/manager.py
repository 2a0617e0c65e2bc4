"""Windows of every (model, version), their references, and the periodic compute cycle.

The writer thread hands each committed write to :meth:`ModelWindows.committed` (a
:class:`Committed`: the predictions stored, the labels joined); the compute thread snapshots
each window, runs the engine on it and publishes the results as one immutable
:class:`Snapshot` that the exporter reads (it never computes). On start the windows are
rebuilt from the database, so a restart exports the same values as before it.

Example::

    windows = ModelWindows(config, db, caps)
    windows.rebuild()
    windows.committed(Committed(predictions=stored_records))
    computer = Computer(config, db, windows, counters)
    computer.run_once()
    computer.snapshot.models[("churn", "3")].performance
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.compute.engine import ModelMetrics, ModelSpec, compute_model_metrics
from otel_ml_processor.compute.reference import (
    ReferenceError, check_reference_columns, load_reference_file, prepare_reference, reference_from_window,
)
from otel_ml_processor.compute.window import WindowBuffer
from otel_ml import semconv as sc
from otel_ml_processor.config import Config, ConfigError, ModelConfig
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.join.labels import window_label
from otel_ml_processor.stats.registry import DriftConfigError
from otel_ml_processor.store.database import Database, Join

log = logging.getLogger(__name__)

#: A compute cycle slower than this share of compute.interval is logged as a warning.
SLOW_CYCLE_SHARE = 0.5


def model_spec(m: ModelConfig, config: Config) -> ModelSpec:
    """The engine's view of one model's configuration."""
    return ModelSpec(
        task=m.task, positive_label=m.positive_label, window_size=m.window.size,
        window_max_age=m.window.max_age, drift_default_method=m.drift.default.method,
        drift_default_threshold=m.drift.default.threshold,
        drift_features={k: (v.method, v.threshold) for k, v in m.drift.features.items()},
        fairness_attributes=tuple(m.fairness.attributes),
        fairness_min_group_size=m.fairness.min_group_size,
        max_features=config.limits.max_features_per_model,
        max_groups_per_attribute=config.limits.max_groups_per_attribute,
    )


def check_drift_methods(config: Config) -> None:
    """Every configured drift method must exist: a typo is an error at start, naming the known ones."""
    from otel_ml_processor.stats.registry import builtin_tests  # noqa: PLC0415

    known = {sc.METHOD_AUTO, *builtin_tests()}
    for i, m in enumerate(config.models):
        entries = [("default", m.drift.default.method)] + [(f"features.{k}", v.method) for k, v in m.drift.features.items()]
        for where, method in entries:
            allowed = known | ({sc.METHOD_PCA_RECONSTRUCTION} if where == f"features.{sc.FEATURE_MULTIVARIATE}" else set())
            if method not in allowed:
                raise ConfigError(f"models[{i}].drift.{where}.method",
                                  f"unknown drift method {method!r} (known: {', '.join(sorted(allowed))})", config.source)


@dataclass(frozen=True)
class Committed:
    """What the writer thread hands the compute stage once a write is committed."""

    predictions: Sequence[PredictionRecord] = ()   # newly stored (duplicates are not)
    joins: Sequence[Join] = ()                     # labels attached to a stored prediction


class CommitListener(Protocol):
    """The compute stage's input from the stages before it (wired in ``service.py``)."""

    def committed(self, batch: Committed) -> None: ...


class ModelWindows:
    """The windows of the admitted models (``caps``: ``limits.max_models``), fed by :meth:`committed`."""

    def __init__(self, config: Config, db: Database, caps: Caps):
        self.config, self.db, self.caps = config, db, caps
        self._lock = threading.Lock()
        self.buffers: dict = {}          # (model, version) -> WindowBuffer
        self.specs: dict = {}            # model -> ModelSpec
        self.references: dict = {}       # (model, version) -> PreparedReference
        self.file_references: dict = {}  # model -> ReferenceData loaded from the config's file
        self.reference_errors: dict = {}  # (model, version) -> why its reference cannot be used
        check_drift_methods(config)
        for m in config.models:
            self.specs[m.name] = model_spec(m, config)
            if m.reference.path:
                # A missing or mismatching reference is a start-up error (raised to the CLI).
                self.file_references[m.name] = load_reference_file(config.resolve_path(m.reference.path))

    def spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            spec = self.specs[model] = model_spec(self.config.model(model), self.config)
        return spec

    def _buffer(self, model: str, version: str, task: str) -> WindowBuffer:
        key = (model, version)
        buf = self.buffers.get(key)
        if buf is None:
            spec = self.spec(model)
            buf = self.buffers[key] = WindowBuffer(model, version, spec.task or task, spec.window_size, spec.window_max_age)
        return buf

    def committed(self, batch: Committed) -> None:
        """Take a committed write: its predictions of admitted models, then its joined labels."""
        if batch.predictions:
            admitted = self.caps.admitted
            self.add_predictions([r for r in batch.predictions if admitted(r.model)])
        for j in batch.joins:
            self.set_label(j.model, j.model_version, j.prediction_id, j.value)

    def add_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Append stored predictions (one lock and one bulk append per window), with the
        features under ``limits.max_features_per_model``."""
        features_of = self.caps.features
        groups: dict = {}
        for r in records:
            groups.setdefault((r.model, r.model_version), []).append(r)
        with self._lock:
            for (model, version), group in groups.items():
                self._buffer(model, version, group[0].task).extend([{
                    "prediction_id": r.prediction_id, "timestamp": r.time, "features": features_of(model, r.features),
                    "output_label": r.output_label, "output_value": r.output_value, "score": r.score,
                    "probabilities": r.probabilities, "segments": r.segments, "label": None,
                } for r in group])

    def set_label(self, model: str, version: str, prediction_id: str, value: object) -> None:
        with self._lock:
            buf = self.buffers.get((model, version))
            if buf is not None:
                buf.set_label(prediction_id, window_label(buf.task, value))

    def rebuild(self, now: Optional[float] = None) -> int:
        """Refill every window from the database (at start); returns the rows loaded."""
        now = time.time() if now is None else now
        loaded = 0
        for model, version, task in self.db.model_versions():
            if not self.caps.admitted(model):
                continue
            spec = self.spec(model)
            min_time = now - spec.window_max_age if spec.window_max_age else None
            rows = self.db.window_rows(model, version, spec.window_size, min_time)
            with self._lock:
                buf = self._buffer(model, version, task)
                for row in rows:
                    row = {k: row[k] for k in ("prediction_id", "timestamp", "features", "output_label",
                                               "output_value", "score", "probabilities", "segments", "label")}
                    if row["label"] is not None:
                        row["label"] = window_label(buf.task, row["label"])
                    buf.append(row)
            loaded += len(rows)
        return loaded

    def snapshots(self, now: float) -> list:
        with self._lock:
            return [(key, buf.snapshot(now)) for key, buf in self.buffers.items()]

    def reference(self, model: str, version: str, task: str, features: Optional[list] = None):
        """The prepared reference of a model version, or None until it exists (or if it cannot be used).

        A reference file whose columns differ from the model's ``features``, or a drift method
        that cannot run on a feature's kind, raises at start (:meth:`check_references`); later it
        is logged once and the model is computed without a reference (no drift, no OOD).
        """
        key = (model, version)
        ref = self.references.get(key)
        if ref is not None or key in self.reference_errors:
            return ref
        try:
            ref = self._prepare(model, version, task, features)
        except (ReferenceError, DriftConfigError) as exc:
            self.reference_errors[key] = str(exc)
            log.error("model %s version %s: reference unusable, computing without drift and OOD: %s",
                      model, version, exc)
            return None
        if ref is not None:
            self.references[key] = ref
        return ref

    def check_references(self) -> None:
        """At start: every model version with stored rows and a reference file must match it."""
        for (model, version), buf in list(self.buffers.items()):
            if model in self.file_references and len(buf):
                window = buf.snapshot()
                self._prepare(model, version, window.task, sorted(window.features))

    def _prepare(self, model: str, version: str, task: str, features: Optional[list]):
        spec = self.spec(model)
        data = self.file_references.get(model)
        if data is not None and features:
            check_reference_columns(data, features)
        if data is None:
            first_n = self.config.model(model).reference.first_n
            if self.db.count(model, version) < first_n:
                return None
            from otel_ml_processor.compute.window import rows_to_window  # noqa: PLC0415
            rows = self.db.first_rows(model, version, first_n)
            for row in rows:
                if row["label"] is not None:
                    row["label"] = window_label(task, row["label"])
            data = reference_from_window(rows_to_window(model, version, spec.task or task, rows), first_n)
        return prepare_reference(data, spec)


@dataclass(frozen=True)
class Snapshot:
    """What the exporter serves: the last compute cycle's results."""

    models: dict = field(default_factory=dict)       # (model, version) -> ModelMetrics
    computed_at: dict = field(default_factory=dict)  # (model, version) -> unix seconds
    durations: dict = field(default_factory=dict)    # (model, version) -> seconds
    labels_pending: int = 0


class Computer:
    def __init__(self, config: Config, db: Database, windows: ModelWindows, counters: Counters):
        self.config, self.db, self.windows, self.counters = config, db, windows, counters
        self.snapshot = Snapshot()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.cycles = 0

    def run_once(self, now: Optional[float] = None) -> Snapshot:
        now = time.time() if now is None else now
        started = time.perf_counter()
        expired = self.db.expire_labels(now, self.config.labels.pending_ttl, self.config.labels.pending_max)
        if expired:
            self.counters.expired(expired)
        self.db.apply_retention(now, self.config.storage.retention)
        models, computed_at, durations = {}, {}, {}
        for (model, version), window in self.windows.snapshots(now):
            t0 = time.perf_counter()
            try:
                ref = self.windows.reference(model, version, window.task, sorted(window.features))
                metrics: ModelMetrics = compute_model_metrics(window, ref, self.windows.spec(model))
            except Exception:  # one model's failure must not stop the others' metrics
                log.exception("computing metrics of model %s version %s failed", model, version)
                continue
            models[(model, version)] = metrics
            computed_at[(model, version)] = time.time()
            durations[(model, version)] = time.perf_counter() - t0
        self.snapshot = Snapshot(models, computed_at, durations, self.db.pending_labels())
        self.cycles += 1
        took = time.perf_counter() - started
        if took > SLOW_CYCLE_SHARE * self.config.compute.interval:
            log.warning("compute cycle took %.3fs (compute.interval is %ss)", took, self.config.compute.interval)
        return self.snapshot

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="otel-ml-compute", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("compute cycle failed")
            self._stop.wait(self.config.compute.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
