"""Label-free performance estimate of a multi-class model: CBPE as NannyML 0.13 does it.

Classes = the reference's probability columns (``__probability_<class>__``, live
``ml.output.probability.<class>``), sorted as text. Fit, on the reference rows that have a label
and every class probability:

- per class k, one-vs-rest: :func:`needs_calibration` (NannyML's test: skipped when the class is
  the only one or the AUROC of its probability exceeds 0.999; else 10 stratified shuffle splits,
  test size 0.1, ``random_state=42``, isotonic regression fitted on each training part, and the
  expected calibration error over 10 equal-count bins of the pooled test parts compared before /
  after): calibrate with isotonic regression (``out_of_bounds="clip"``) only when it lowers it.

Estimate, on the window's rows that have every class probability (and, except for roc_auc, a
predicted label): q = the calibrated probabilities renormalised to sum 1 per row (uniform 1/K
when a row sums to 0; NannyML renormalises even when no class was calibrated), ŷ_k = 1[predicted
label = k], and

- accuracy = mean over rows of q[row, predicted class] (0 when the predicted label is not a class);
- per class, TP_k = Σ ŷ_k q_k, FP_k = Σ ŷ_k (1 - q_k), FN_k = Σ (1 - ŷ_k) q_k; precision_k =
  TP / (TP + FP), recall_k = TP / (TP + FN), f1_k = TP / (TP + (FP + FN) / 2), each 0 when its
  denominator is 0 (NannyML's choice); the metric is their mean over classes (macro);
- roc_auc_k: rows sorted by the *uncalibrated* probability of k, descending, with NumPy's default
  sort as NannyML does (ties included, in that order), TPR / FPR from the cumulative sums of q_k
  and 1 - q_k rounded to 5 decimals, trapezoids; roc_auc = their mean.

Valid when P(class | scores) learned on the reference still holds on the window (covariate shift
is fine, concept drift is not) and the probabilities are probabilities. The interval is NannyML's
(:mod:`otel_ml_processor.stats.sampling_error`). Needs scikit-learn (the processor extra has it).

Example::

    from otel_ml_processor.stats.cbpe_multiclass import MulticlassCBPE

    cbpe = MulticlassCBPE.fit(["a", "b", "c"], ref_probs, ref_labels, ref_predictions)   # probs: rows x classes
    cbpe.estimate(window_probs, window_predictions)    # {"accuracy": ..., "precision": ..., ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats import sampling_error
from otel_ml_processor.stats.cbpe import IsotonicCalibrator

__all__ = ["MulticlassCBPE", "needs_calibration"]


def _bin_edges(n: int, bins: int) -> list[tuple[int, int]]:
    if n <= 2 * bins:
        bins = n // 2
        if bins < 2:
            raise ValueError(f"cannot split {n} rows into 2 bins")
    width = n // bins
    edges = np.asarray(range(0, n + 1, width))
    edges[-1] = n
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _ece(y: np.ndarray, p: np.ndarray, edges: list[tuple[int, int]]) -> float:
    order = p.argsort()      # NannyML's sort (ties: the same order on the same array)
    p, y = p[order], y[order]
    return float(np.sum([(r - left) / len(p) * abs(np.mean(p[left:r]) - np.mean(y[left:r])) for left, r in edges]))


def needs_calibration(y_true: np.ndarray, p: np.ndarray, bins: int = 10, splits: int = 10) -> bool:
    """NannyML's ``needs_calibration`` with its isotonic calibrator (see the module doc)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    y = np.asarray(y_true).astype(int)
    p = np.asarray(p, dtype=float)
    if len(np.unique(y)) == 1 or roc_auc_score(y, p) > 0.999:
        return False
    ys, ps, cs = [], [], []
    for train, test in StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=42).split(p, y):
        cal = IsotonicCalibrator.fit(p[train], y[train])
        ys.append(y[test])
        ps.append(p[test])
        cs.append(p[test] if cal is None else cal.transform(p[test]))
    vy, vp, vc = np.concatenate(ys), np.concatenate(ps), np.concatenate(cs)
    edges = _bin_edges(len(vp), bins)
    return _ece(vy, vp, edges) > _ece(vy, vc, edges)


def _ovr_roc_auc(q: np.ndarray, uncalibrated: np.ndarray) -> float:
    order = np.argsort(uncalibrated)[::-1]
    t = q[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        tps = np.asarray(np.round(np.r_[0, np.cumsum(t)], 5), dtype=float)
        fps = np.asarray(np.round(np.r_[0, 1 + np.arange(len(t)) - np.cumsum(t)], 5), dtype=float)
        tpr, fpr = tps / tps[-1], fps / fps[-1]
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else 0.0


@dataclass
class MulticlassCBPE:
    """A fitted multi-class CBPE: the classes, one calibrator per class (None = used as is) and
    the reference's sampling-error coefficients."""

    classes: list
    calibrators: list
    coefficients: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, classes: list, probs: np.ndarray, labels: np.ndarray, predictions: Optional[np.ndarray] = None
            ) -> "MulticlassCBPE":
        """Fit on the reference: ``probs`` rows × ``classes`` (sorted), class-string ``labels``
        (None = unlabeled) and ``predictions``; rows without a label or with a NaN probability
        are left out of the fit. Without labeled rows every class is used as is."""
        classes = list(classes)
        probs = np.asarray(probs, dtype=float).reshape(len(labels), len(classes))
        lab = np.asarray(labels, dtype=object)
        ok = np.array([v is not None for v in lab.tolist()], dtype=bool) & np.all(np.isfinite(probs), axis=1)
        p, y = probs[ok], lab[ok]
        calibrators: list = []
        for k, c in enumerate(classes):
            yk = (y == c).astype(int)
            cal = None
            if yk.size >= 4 and needs_calibration(yk, p[:, k]):
                cal = IsotonicCalibrator.fit(p[:, k], yk)
            calibrators.append(cal)
        coefficients: dict = {}
        if predictions is not None and y.size:
            pred = np.asarray(predictions, dtype=object)[ok]
            has = np.array([v is not None for v in pred.tolist()], dtype=bool)
            coefficients = sampling_error.multiclass_coefficients(y[has], pred[has], classes, p[has])
        return cls(classes, calibrators, coefficients)

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated, renormalised probabilities (rows × classes) of finite ``probs``."""
        out = np.column_stack([probs[:, k] if cal is None else cal.transform(probs[:, k])
                               for k, cal in enumerate(self.calibrators)]) if len(probs) else probs.copy()
        den = np.sum(out, axis=1)[:, np.newaxis]
        uniform = np.full_like(out, 1 / len(self.classes))
        return np.divide(out, den, out=uniform, where=den != 0)

    def estimate(self, probs: np.ndarray, predictions: np.ndarray) -> tuple[dict[str, float], dict[str, int]]:
        """(metric -> estimate, metric -> rows used) on a window: ``probs`` rows × classes (NaN
        = not sent), ``predictions`` the predicted label strings (None = none)."""
        probs = np.asarray(probs, dtype=float)
        pred = np.asarray(predictions, dtype=object)
        full = np.all(np.isfinite(probs), axis=1) if probs.size else np.zeros(len(pred), dtype=bool)
        has_pred = full & np.array([v is not None for v in pred.tolist()], dtype=bool)
        out: dict[str, float] = {}
        rows: dict[str, int] = {}
        if np.any(has_pred):
            q = self.calibrate(probs[has_pred])
            yp = np.column_stack([(pred[has_pred] == c) for c in self.classes]).astype(float)
            tp = np.sum(yp * q, axis=0)
            fp = np.sum(yp * (1 - q), axis=0)
            fn = np.sum((1 - yp) * q, axis=0)
            n = int(np.count_nonzero(has_pred))
            out[sc.PERF_ACCURACY] = float(np.mean(np.max(yp * q, axis=1)))
            out[sc.PERF_PRECISION] = float(np.mean([_ratio(a, a + b) for a, b in zip(tp, fp)]))
            out[sc.PERF_RECALL] = float(np.mean([_ratio(a, a + b) for a, b in zip(tp, fn)]))
            out[sc.PERF_F1] = float(np.mean([_ratio(a, a + 0.5 * (b + c)) for a, b, c in zip(tp, fp, fn)]))
            rows.update(dict.fromkeys(out, n))
        if np.any(full):
            uncal = probs[full]
            q = self.calibrate(uncal)
            auc = float(np.mean([_ovr_roc_auc(q[:, k], uncal[:, k]) for k in range(len(self.classes))]))
            out[sc.PERF_ROC_AUC] = auc
            rows[sc.PERF_ROC_AUC] = int(np.count_nonzero(full))
        keep = {k: v for k, v in out.items() if math.isfinite(v)}
        return keep, {k: rows[k] for k in keep}

    def correct_probability(self, probs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Each estimated row's calibrated probability of its predicted class (accuracy's terms)."""
        probs = np.asarray(probs, dtype=float)
        pred = np.asarray(predictions, dtype=object)
        use = np.all(np.isfinite(probs), axis=1) & np.array([v is not None for v in pred.tolist()], dtype=bool)
        if not np.any(use):
            return np.zeros(0)
        yp = np.column_stack([(pred[use] == c) for c in self.classes]).astype(float)
        return np.max(yp * self.calibrate(probs[use]), axis=1)

    def intervals(self, estimates: dict[str, float], rows: dict[str, int],
                  accuracy_fallback: Optional[float] = None) -> dict[tuple[str, str], float]:
        """(metric, bound) -> value: NannyML's ± 3 sampling errors around each estimate;
        ``accuracy_fallback``: accuracy's coefficient when the reference had no labels."""
        out = {}
        for k, v in estimates.items():
            c = self.coefficients.get(k)
            if c is None and k == sc.PERF_ACCURACY:
                c = accuracy_fallback
            iv = sampling_error.interval(v, c, rows.get(k, 0))
            if iv is not None:
                out[(k, sc.BOUND_LOWER)], out[(k, sc.BOUND_UPPER)] = iv
        return out
