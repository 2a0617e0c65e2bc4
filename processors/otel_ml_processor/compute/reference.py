"""Reference data of a model version, and what the engine precomputes from it once.

A reference is a CSV or Parquet file (Parquet needs pyarrow) whose columns are the model's
feature names plus the optional reserved columns ``__prediction__`` (predicted label or value),
``__score__`` (confidence of the predicted label, as ``ml.output.score``), ``__label__`` (true
label) and ``__probability_<class>__`` (a class's probability, as ``ml.output.probability.<class>``); or the first N predictions of the model version (:func:`reference_from_window`).
Typing (one type per feature, :mod:`otel_ml_processor.clean.values`): an empty CSV cell is missing;
a column whose present values all read as numbers is numeric; one whose values are all true/false
words (``True``, ``true``, ``FALSE``, ...; 1 / 0 may appear among them) is boolean, written
``true`` / ``false`` as the ingest writes an OTLP bool; any other column is text, kept exactly.

:func:`prepare_reference` does every reference-only computation once per (model, version):
each feature's :class:`~otel_ml_processor.stats.registry.FeatureReference` (sorted values,
category maps, min/max for OOD) and type, the drift method resolved for each feature (``auto``
-> the actual test; config errors raised here) and what that test prepares from the reference
(its ``prepare`` step: bin edges, sorted values, ...), the noise-floor level of each distance
test, the PCA of the multivariate drift, and the CBPE calibrator. Noise floors themselves are
computed on first use, per window size rounded down to a power of two, and kept.
:func:`relabel_reference` fits only the label-dependent parts again (CBPE, sampling errors, DLE),
on the same rows with labels joined since: a ``first_n`` reference's labels usually come later.

Example::

    from otel_ml_processor.compute.engine import ModelSpec
    from otel_ml_processor.compute.reference import load_reference_file, prepare_reference

    data = load_reference_file("reference.csv", features=["age", "plan"])
    prepared = prepare_reference(data, ModelSpec(task="classification", positive_label="1"))
    prepared.methods["age"]        # ("wasserstein", 0.1) for a numeric feature of > 1000 rows
    prepared.features["age"].effective_threshold(100)   # max(0.1, the noise floor at 64 rows)
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.clean.values import (
    BOOLEAN, FALSE, NUMBER, TEXT, TRUE, column_type, file_column, read_value,
)
from otel_ml_processor.compute.deferred import Deferred
from otel_ml_processor.compute.window import WindowData
from otel_ml_processor.stats import sampling_error
from otel_ml_processor.stats.cbpe import IsotonicCalibrator
from otel_ml_processor.stats.cbpe_multiclass import MulticlassCBPE
from otel_ml_processor.stats.multivariate import DEFAULT_THRESHOLD as MULTIVARIATE_THRESHOLD
from otel_ml_processor.stats.multivariate import PCAReconstruction
from otel_ml_processor.stats.decisions import DEFAULT_ALPHA, family_level
from otel_ml_processor.stats.noise import window_bucket
from otel_ml_processor.stats.ood import categorical_unseen, numeric_unseen
from otel_ml_processor.stats.registry import (
    NUMERIC, PVALUE, DriftConfigError, DriftTest, FeatureReference, builtin_tests, companion_tests, resolve_method,
)

if TYPE_CHECKING:  # pragma: no cover
    from otel_ml_processor.compute.engine import ModelSpec

__all__ = ["ReferenceError", "ReferenceData", "PreparedReference", "PreparedFeature",
           "load_reference_file", "reference_from_window", "prepare_reference", "check_reference_columns",
           "positive_probability", "relabel_reference"]

RESERVED = (sc.REFERENCE_PREDICTION_COLUMN, sc.REFERENCE_SCORE_COLUMN, sc.REFERENCE_LABEL_COLUMN)


class ReferenceError(ValueError):
    """A reference that cannot be used: unreadable, empty, or columns not matching the model."""


@dataclass
class ReferenceData:
    features: dict                         # name -> float64 (NaN missing) or object str (None missing)
    prediction: Optional[np.ndarray] = None   # object str (classification) or float64 (regression)
    score: Optional[np.ndarray] = None        # float64
    label: Optional[np.ndarray] = None        # object: str / float, None = unlabeled
    probabilities: dict = field(default_factory=dict)  # class -> float64
    task: Optional[str] = None
    source: str = ""

    def feature_types(self) -> dict:
        """feature -> its type (number, boolean, text): how every value of it is read."""
        return {name: column_type(col) for name, col in self.features.items()}

    @property
    def n_rows(self) -> int:
        for arr in (*self.features.values(), self.prediction, self.score, self.label):
            if arr is not None:
                return int(len(arr))
        return 0


def _label_column(cells: list, parse_strings: bool) -> np.ndarray:
    """Labels / predictions keep their text (``"01"`` stays ``"01"``); numbers are written as
    :func:`number_text`, bools and a column of true/false words (any case) as ``true`` /
    ``false`` (as the ingest writes an OTLP bool); the engine converts to float for regression."""
    present = [c for c in cells if not (c is None or (parse_strings and c == ""))]
    words = bool(present) and all(isinstance(c, bool) or (isinstance(c, str) and c.strip().lower() in (TRUE, FALSE))
                                  for c in present)
    return np.array([None if c is None or (parse_strings and c == "") else
                     (read_value(BOOLEAN, c) if words else read_value(TEXT, c)) for c in cells], dtype=object)


def _read_columns(path: str) -> dict[str, list]:
    if not os.path.exists(path):
        raise ReferenceError(f"reference file {path!r} does not exist")
    if path.lower().endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - pyarrow is optional
            raise ReferenceError(f"reading {path!r} needs pyarrow (pip install 'otel-ml[parquet]')") from exc
        try:
            return pq.read_table(path).to_pydict()
        except Exception as exc:  # any pyarrow failure is an unreadable file
            raise ReferenceError(f"cannot read Parquet reference {path!r}: {exc}") from exc
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ReferenceError(f"reference file {path!r} is empty (no header row)")
            cols: dict[str, list] = {h: [] for h in header}
            for lineno, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ReferenceError(f"{path}:{lineno}: {len(row)} cells, header has {len(header)}")
                for h, c in zip(header, row):
                    cols[h].append(c)
            return cols
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReferenceError(f"cannot read CSV reference {path!r}: {exc}") from exc


def _probability_columns(cols: dict) -> dict[str, str]:
    """column -> class, of the reserved ``__probability_<class>__`` columns."""
    pre, suf = sc.REFERENCE_PROBABILITY_COLUMN_PREFIX, sc.REFERENCE_PROBABILITY_COLUMN_SUFFIX
    return {k: k[len(pre):-len(suf)] for k in cols
            if k.startswith(pre) and k.endswith(suf) and len(k) > len(pre) + len(suf)}


def check_reference_columns(ref: ReferenceData, features: list[str]) -> None:
    """Raise ReferenceError naming the columns when the reference's features differ from ``features``."""
    have, want = set(ref.features), set(features)
    if have != want:
        missing = sorted(want - have)
        extra = sorted(have - want)
        parts = []
        if missing:
            parts.append(f"missing feature columns {missing}")
        if extra:
            parts.append(f"columns that are not features of the model {extra}")
        raise ReferenceError(f"reference {ref.source or ''!s} does not match the model: " + "; ".join(parts))


def load_reference_file(path: str, features: Optional[list[str]] = None) -> ReferenceData:
    """Read a CSV (or Parquet) reference; ``features`` given: its feature columns must be exactly those."""
    cols = _read_columns(str(path))
    csv_text = not str(path).lower().endswith((".parquet", ".pq"))
    n = len(next(iter(cols.values()))) if cols else 0
    if n == 0:
        raise ReferenceError(f"reference file {path!r} has no rows")
    probs = {cls: file_column(cols[k], csv_text) for k, cls in _probability_columns(cols).items()}
    for k, v in probs.items():
        if v.dtype == object:
            raise ReferenceError(f"reference {path!r}: column {sc.reference_probability_column(k)} must hold numbers")
    feats = {k: file_column(v, csv_text) for k, v in cols.items()
             if k not in RESERVED and k not in _probability_columns(cols)}
    pred = cols.get(sc.REFERENCE_PREDICTION_COLUMN)
    score = cols.get(sc.REFERENCE_SCORE_COLUMN)
    label = cols.get(sc.REFERENCE_LABEL_COLUMN)
    score_col = None if score is None else file_column(score, csv_text)
    if score_col is not None and score_col.dtype == object:
        raise ReferenceError(f"reference {path!r}: column {sc.REFERENCE_SCORE_COLUMN} must hold numbers")
    ref = ReferenceData(
        features=feats,
        prediction=None if pred is None else _label_column(pred, csv_text),
        score=score_col,
        label=None if label is None else _label_column(label, csv_text),
        probabilities={k: v.astype(float) for k, v in probs.items()},
        source=str(path),
    )
    if features is not None:
        check_reference_columns(ref, list(features))
    return ref


def reference_from_window(window: WindowData, first_n: int) -> ReferenceData:
    """The first ``first_n`` rows (oldest) of ``window`` as a reference."""
    n = min(int(first_n), len(window))
    s = slice(0, n)
    pred = window.output_value[s].copy() if window.task == sc.TASK_REGRESSION else window.output_label[s].copy()
    return ReferenceData(
        features={k: v[s].copy() for k, v in window.features.items()},
        prediction=pred, score=window.score[s].copy(), label=window.label[s].copy(),
        probabilities={k: v[s].copy() for k, v in window.probabilities.items()},
        task=window.task, source=f"first {n} predictions of {window.model} {window.model_version}",
    )


def positive_probability(positive_label: str, output_label: np.ndarray, score: Optional[np.ndarray],
                         probabilities: dict) -> np.ndarray:
    """P(positive) per row (DESIGN.md): ``ml.output.probability.<positive_label>`` when sent, else
    ``score`` when the predicted label is the positive one and ``1 - score`` otherwise (NaN when
    neither is known)."""
    n = len(output_label)
    out = np.full(n, np.nan)
    if score is not None and n:
        is_pos = np.asarray(output_label == positive_label, dtype=bool)
        known = np.array([x is not None for x in output_label.tolist()], dtype=bool)
        s = np.asarray(score, dtype=float)
        out = np.where(known, np.where(is_pos, s, 1.0 - s), np.nan)
    direct = probabilities.get(positive_label)
    if direct is not None and n:
        d = np.asarray(direct, dtype=float)
        out = np.where(np.isnan(d), out, d)
    return out


def _label_strings(label: np.ndarray) -> np.ndarray:
    items = label.tolist()
    if label.dtype == object and set(map(type, items)) <= {str, type(None)}:
        return label
    return np.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else read_value(TEXT, v)
                     for v in items], dtype=object)


@dataclass
class PreparedFeature:
    """One feature's reference, the test run on it and what that test prepared from it.

    ``threshold``: the configured threshold (the method's default, or ``drift.alpha`` for a
    p-value test). ``level``: the noise-floor level of a distance test (``drift.alpha`` / the
    model's distance-tested input features; ``drift.alpha`` for the prediction).
    :meth:`effective_threshold` is what a window's score is compared with. ``unseen``: (p,
    variance) of the chance that a fresh value of the reference's own distribution is OOD
    (:func:`~otel_ml_processor.stats.ood.categorical_unseen` / ``numeric_unseen``; the OOD floor).
    """

    name: str
    ref: FeatureReference
    method: str            # the test actually run (never "auto")
    test: DriftTest
    threshold: float
    treatment: str         # "numeric" | "categorical"
    value_type: str = NUMBER   # "number" | "boolean" | "text": how window values are read
    state: Any = None          # the test's prepared state
    level: float = DEFAULT_ALPHA
    floors: dict = field(default_factory=dict, repr=False, compare=False)  # window bucket -> floor
    unseen: tuple[float, float] = (0.0, 0.0)

    @property
    def is_pvalue(self) -> bool:
        return self.test.score_kind == PVALUE

    def effective_threshold(self, n_window: int) -> float:
        """The threshold a distance score of ``n_window`` window values is compared with:
        max(threshold, noise floor at ``n_window`` rounded down to a power of two) (cached per
        power of two). A p-value test's is its q-value threshold."""
        if self.is_pvalue or self.test.noise_floor is None:
            return self.threshold
        bucket = window_bucket(n_window)
        floor = self.floors.get(bucket)
        if floor is None:
            floor = self.floors[bucket] = float(self.test.noise_floor(self.state, bucket, self.level, self.threshold))
        return max(self.threshold, floor)


@dataclass
class PreparedReference:
    """Everything the engine needs from a reference, computed once (see module doc)."""

    n_rows: int
    features: dict                         # name -> PreparedFeature (after the feature cap)
    dropped_features: tuple = ()           # reference features over ``max_features``
    #: name -> the companion tests (``missing``) of each input feature, run beside its method
    companions: dict = field(default_factory=dict)
    prediction: Optional[PreparedFeature] = None
    multivariate: Optional[PCAReconstruction] = None
    multivariate_features: tuple = ()
    multivariate_threshold: float = MULTIVARIATE_THRESHOLD
    calibrator: Optional[IsotonicCalibrator] = None
    #: binary CBPE's sampling-error coefficients (stats/sampling_error.py): metric -> c
    binary_coefficients: dict = field(default_factory=dict)
    #: multi-class CBPE (stats/cbpe_multiclass.py) and regression DLE (stats/dle.py), fitted off
    #: the compute thread (compute/deferred.py): ``.ready()`` is None until done
    multiclass: Optional[Deferred] = None
    dle: Optional[Deferred] = None
    #: rows of the reference with a label (what the label-dependent fits above used)
    labeled_rows: int = 0
    tests: dict = field(default_factory=dict)
    alpha: float = DEFAULT_ALPHA
    multivariate_floors: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def methods(self) -> dict:
        """feature -> (method, threshold), prediction included."""
        out = {k: (f.method, f.threshold) for k, f in self.features.items()}
        if self.prediction is not None:
            out[sc.FEATURE_PREDICTION] = (self.prediction.method, self.prediction.threshold)
        return out

    def multivariate_effective_threshold(self, n_rows: int) -> float:
        """max(multivariate threshold, the PCA score's noise floor at ``drift.alpha`` for
        ``n_rows`` complete window rows rounded down to a power of two)."""
        if self.multivariate is None:
            return self.multivariate_threshold
        bucket = window_bucket(n_rows)
        floor = self.multivariate_floors.get(bucket)
        if floor is None:
            floor = self.multivariate_floors[bucket] = self.multivariate.noise_floor(bucket, self.alpha)
        return max(self.multivariate_threshold, floor)


def _prepare_feature(name: str, values: np.ndarray, rows: int, spec: "ModelSpec",
                     tests: dict) -> PreparedFeature:
    ref = FeatureReference.build(values, rows=rows)
    if name in spec.drift_features:
        # a per-feature method without a threshold takes that method's default threshold
        method, threshold = spec.drift_features[name]
    else:
        method, threshold = spec.drift_default_method, spec.drift_default_threshold
        default_test = tests.get(method)
        if default_test is not None and ref.value_kind not in default_test.kinds \
                and default_test.treatment(ref) != ref.value_kind:
            # the model-wide default of a numeric-only test does not apply to a categorical
            # feature (nor to a classifier's predicted label): it gets ``auto``; set for the
            # feature itself, it is a config error (below)
            method, threshold = sc.METHOD_AUTO, None
    actual = resolve_method(method or sc.METHOD_AUTO, ref, tests, feature=name)
    test = tests[actual]
    treatment = test.treatment(ref)
    state = test.prepare(ref, treatment) if ref.n else None
    # OOD reads these every cycle
    _ = (ref.min, ref.max) if ref.value_kind == NUMERIC else ref.category_set
    if threshold is None:
        # a p-value test's default threshold is the model's drift.alpha
        threshold = spec.drift_alpha if test.score_kind == PVALUE else test.default_threshold
    value_type = column_type(values)
    # the engine's OOD rule: a range for a number, membership for anything else
    unseen = (numeric_unseen(ref.sorted, spec.ood_margin) if value_type == NUMBER
              else categorical_unseen(ref.category_counts))
    return PreparedFeature(name, ref, actual, test, float(threshold), treatment, value_type, state,
                           spec.drift_alpha, unseen=unseen)


def prepare_reference(ref: ReferenceData, spec: "ModelSpec", tests: Optional[dict] = None) -> PreparedReference:
    """Precompute the reference-only work (raises DriftConfigError / ReferenceError on a bad config)."""
    tests = builtin_tests() if tests is None else tests
    n = ref.n_rows
    names = list(ref.features)
    kept, dropped = names[: spec.max_features], tuple(names[spec.max_features:])
    feats = {k: _prepare_feature(k, ref.features[k], n, spec, tests) for k in kept}
    # every input feature also gets the companion tests (``missing``): p-value tests at drift.alpha,
    # whatever the feature's method and its threshold
    companions = {k: tuple(PreparedFeature(k, f.ref, t.name, t, float(spec.drift_alpha), f.treatment, f.value_type,
                                           t.prepare(f.ref, f.treatment), spec.drift_alpha)
                           for t in companion_tests(tests)) for k, f in feats.items()}
    # the input features' distance floors are set together: Bonferroni over those that can score
    family = [f for f in feats.values() if not f.is_pvalue and f.ref.n]
    for f in family:
        f.level = family_level(spec.drift_alpha, len(family))
    task = spec.task or ref.task
    pred = None
    if ref.prediction is not None and len(ref.prediction):
        pvals = ref.prediction
        if task == sc.TASK_REGRESSION:
            try:
                pvals = np.asarray([math.nan if v is None else float(v) for v in pvals.tolist()], dtype=float)
            except ValueError as exc:
                raise ReferenceError(f"reference {ref.source}: {sc.REFERENCE_PREDICTION_COLUMN} of a "
                                     f"regression model must hold numbers ({exc})") from exc
        elif pvals.dtype != object:
            pvals = _label_strings(pvals)
        pred = _prepare_feature(sc.FEATURE_PREDICTION, pvals, n, spec, tests)
    mv_method, mv_threshold = spec.drift_features.get(sc.FEATURE_MULTIVARIATE, (None, None))
    if mv_method not in (None, sc.METHOD_AUTO, sc.METHOD_PCA_RECONSTRUCTION):
        raise DriftConfigError(f"multivariate drift method {mv_method!r} is unknown; known: "
                               f"{sc.METHOD_AUTO}, {sc.METHOD_PCA_RECONSTRUCTION}")
    numeric = tuple(k for k, f in feats.items() if f.value_type == NUMBER)
    mv = None
    if len(numeric) >= 2:
        mv = PCAReconstruction.fit_columns(np.stack([ref.features[k].astype(float, copy=False) for k in numeric]))
    labeled = _label_parts(ref, spec, task, kept)
    return PreparedReference(
        n_rows=n, features=feats, dropped_features=dropped, companions=companions, prediction=pred, multivariate=mv,
        multivariate_features=numeric if mv is not None else (),
        multivariate_threshold=MULTIVARIATE_THRESHOLD if mv_threshold is None else float(mv_threshold),
        tests=tests, alpha=spec.drift_alpha, **labeled,
    )


def relabel_reference(prepared: PreparedReference, ref: ReferenceData, spec: "ModelSpec") -> PreparedReference:
    """``prepared`` with its label-dependent parts (binary CBPE's calibrator and sampling-error
    coefficients, multi-class CBPE, DLE) fitted again on ``ref``, the same rows with the labels
    joined since; its features, drift, OOD and multivariate parts are kept as they are (their
    decisions depend on a fixed reference). The result equals :func:`prepare_reference` of ``ref``
    (a reference file holding those labels): the same code fits the label-dependent parts.

    Example::

        prepared = prepare_reference(first_n_rows, spec)        # labels not back yet
        first_n_rows.label = labels_joined_since                # same rows, same order
        prepared = relabel_reference(prepared, first_n_rows, spec)
    """
    if ref.n_rows != prepared.n_rows:
        raise ReferenceError(f"reference {ref.source}: {ref.n_rows} rows, its prepared reference has {prepared.n_rows}")
    return replace(prepared, **_label_parts(ref, spec, spec.task or ref.task, list(prepared.features)))


def _label_parts(ref: ReferenceData, spec: "ModelSpec", task: Optional[str], kept: list) -> dict:
    """The label-dependent fields of :class:`PreparedReference` (the fits needing ``__label__``)."""
    calibrator = None
    binary_coefficients: dict = {}
    if spec.positive_label is not None and ref.label is not None and ref.prediction is not None:
        pos = spec.positive_label
        out_label = ref.prediction if ref.prediction.dtype == object else _label_strings(ref.prediction)
        p = positive_probability(pos, out_label, ref.score, ref.probabilities)
        labels = _label_strings(ref.label)
        ok = np.isfinite(p) & np.array([v is not None for v in labels.tolist()], dtype=bool)
        if np.any(ok):
            calibrator = IsotonicCalibrator.fit(p[ok], (labels[ok] == pos).astype(float))
        has = np.array([v is not None for v in labels.tolist()], dtype=bool) & \
            np.array([v is not None for v in out_label.tolist()], dtype=bool)
        y01, yp01 = (labels[has] == pos).astype(int), (out_label[has] == pos).astype(int)
        binary_coefficients = sampling_error.binary_coefficients(
            y01, yp01, p[has] if np.all(np.isfinite(p[has])) else None)
    multiclass: Optional[Deferred] = None
    if task == sc.TASK_CLASSIFICATION and spec.positive_label is None and len(ref.probabilities) >= 2:
        multiclass = Deferred(lambda: _fit_multiclass(ref), f"multi-class CBPE ({ref.source})")
    dle: Optional[Deferred] = None
    if task == sc.TASK_REGRESSION and ref.label is not None and ref.prediction is not None:
        dle = Deferred(lambda: _fit_dle(ref, kept), f"DLE ({ref.source})")
    return dict(calibrator=calibrator, binary_coefficients=binary_coefficients, multiclass=multiclass, dle=dle,
                labeled_rows=0 if ref.label is None else sum(v is not None for v in ref.label.tolist()))


def _fit_multiclass(ref: ReferenceData) -> MulticlassCBPE:
    """Multi-class CBPE from the reference's ``__probability_<class>__`` columns (classes sorted)."""
    classes = sorted(ref.probabilities)
    n = ref.n_rows
    probs = np.column_stack([np.asarray(ref.probabilities[c], dtype=float) for c in classes])
    labels = _label_strings(ref.label) if ref.label is not None else np.full(n, None, dtype=object)
    preds = None
    if ref.prediction is not None:
        preds = ref.prediction if ref.prediction.dtype == object else _label_strings(ref.prediction)
    return MulticlassCBPE.fit(classes, probs, labels, preds)


def as_numbers(col: np.ndarray) -> np.ndarray:
    """Each value as a float, NaN where it is missing, a bool or not a number (regression labels and
    predictions, wherever they come from: the engine reads its windows' labels with it too)."""
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col.tolist()):
        if v is None or isinstance(v, bool):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _fit_dle(ref: ReferenceData, kept: list) -> Any:
    """Regression DLE (LightGBM, imported only here) on the kept features; None without
    labeled rows or without LightGBM (the estimate is then absent, and the log says why)."""
    try:
        from otel_ml_processor.stats.dle import DLE
        import lightgbm  # noqa: F401 - only to fail here, with the message below
    except ImportError:
        import logging
        logging.getLogger(__name__).warning(
            "regression estimates (DLE) need lightgbm: pip install 'otel-ml[processor]'")
        return None
    assert ref.label is not None and ref.prediction is not None
    pred = ref.prediction if ref.prediction.dtype != object else as_numbers(ref.prediction)
    return DLE.fit({k: ref.features[k] for k in kept}, pred, as_numbers(ref.label))
