"""Label-free performance estimate: NannyML's CBPE (confidence-based performance estimation),
binary classification.

With p_i = the calibrated P(positive) of row i and ŷ_i its 0/1 prediction, the expected
confusion matrix is TP = Σ ŷ p, FP = Σ ŷ (1 - p), FN = Σ (1 - ŷ) p, TN = Σ (1 - ŷ)(1 - p), and

- accuracy = (TP + TN) / n; precision = TP / (TP + FP); recall = TP / (TP + FN);
  f1 = 2 TP / (2 TP + FP + FN) (absent when a denominator is 0);
- roc_auc = the area (trapezoids) under the expected ROC curve: for every distinct p taken as a
  threshold t (rows with p >= t predicted positive), tpr(t) = Σ_{p>=t} p / Σ p and
  fpr(t) = Σ_{p>=t} (1 - p) / Σ (1 - p), joined with (0, 0) and (1, 1).

Calibration (as NannyML): isotonic regression of the reference's labels on its uncalibrated
P(positive), ``out_of_bounds="clip"``; oracle ``sklearn.isotonic.IsotonicRegression``. Without a
labeled reference holding both classes the scores are used as they are.

Valid when the calibrated scores are calibrated on the window too: the relation P(y | score)
learned on the reference still holds (covariate shift is fine, concept drift is not), and the
scores are probabilities (not arbitrary margins).

Example::

    import numpy as np
    from otel_ml_processor.stats.cbpe import IsotonicCalibrator, estimate

    cal = IsotonicCalibrator.fit(np.array([0.1, 0.4, 0.6, 0.9]), np.array([0, 0, 1, 1]))
    p = cal.transform(np.array([0.2, 0.8]))
    estimate(p, np.array([0, 1]))["accuracy"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

from otel_ml import semconv as sc


@dataclass
class IsotonicCalibrator:
    x: np.ndarray   # distinct sorted uncalibrated scores of the reference
    y: np.ndarray   # fitted (non-decreasing) calibrated values at x

    @classmethod
    def fit(cls, scores: np.ndarray, y_true: np.ndarray) -> "IsotonicCalibrator | None":
        """Fit on the reference (P(positive), 0/1 label); None without rows of both classes."""
        s = np.asarray(scores, dtype=float)
        t = np.asarray(y_true, dtype=float)
        ok = np.isfinite(s)
        s, t = s[ok], t[ok]
        if s.size == 0 or t.min() == t.max():
            return None
        # sklearn: equal scores are merged into one point with their mean label and weight = count
        ux, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
        mean_y = np.bincount(inv.reshape(-1), weights=t, minlength=ux.size) / counts
        fitted = isotonic_regression(mean_y, weights=counts.astype(float), increasing=True).x
        return cls(ux, np.asarray(fitted, dtype=float))

    def transform(self, scores: np.ndarray) -> np.ndarray:
        s = np.clip(np.asarray(scores, dtype=float), self.x[0], self.x[-1])
        if self.x.size == 1:
            return np.full(s.shape, self.y[0])
        return np.interp(s, self.x, self.y)


def expected_roc_auc(p: np.ndarray) -> float | None:
    """Area under the expected ROC curve of calibrated probabilities ``p`` (see module doc)."""
    pos_total = float(np.sum(p))
    neg_total = float(np.sum(1 - p))
    if pos_total <= 0 or neg_total <= 0:
        return None
    desc = np.sort(p)[::-1]
    tp = np.cumsum(desc)
    fp = np.cumsum(1 - desc)
    # keep the last row of every run of equal thresholds
    last = np.append(desc[1:] != desc[:-1], True)
    tpr = np.concatenate(([0.0], tp[last] / pos_total, [1.0]))
    fpr = np.concatenate(([0.0], fp[last] / neg_total, [1.0]))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def estimate(p: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Expected accuracy, precision, recall, f1, roc_auc of rows with calibrated P(positive) ``p``
    in [0, 1] and 0/1 predictions ``y_pred``; absent when undefined; {} for no rows."""
    p = np.asarray(p, dtype=float)
    yp = np.asarray(y_pred).astype(bool)
    if p.size == 0:
        return {}
    tp = float(np.sum(p[yp]))
    fp = float(np.sum(1 - p[yp]))
    fn = float(np.sum(p[~yp]))
    tn = float(np.sum(1 - p[~yp]))
    out = {sc.PERF_ACCURACY: (tp + tn) / p.size}
    if tp + fp > 0:
        out[sc.PERF_PRECISION] = tp / (tp + fp)
    if tp + fn > 0:
        out[sc.PERF_RECALL] = tp / (tp + fn)
    if 2 * tp + fp + fn > 0:
        out[sc.PERF_F1] = 2 * tp / (2 * tp + fp + fn)
    auc = expected_roc_auc(p)
    if auc is not None:
        out[sc.PERF_ROC_AUC] = auc
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}
