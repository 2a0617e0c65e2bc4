"""Label-free performance estimate of a regression model: DLE as NannyML 0.13 does it.

Fit on the reference rows with a finite label and prediction: X = the model's features (in the
reference's order) plus the prediction as the last column; a text or boolean feature becomes its
sorted category code + 1 (a missing value is the category ``NML_missing_value``, as NannyML
imputes it; a value unseen in the reference is 0) and is declared categorical to LightGBM; a
missing number stays NaN (LightGBM's own missing-value handling). Two
``lightgbm.LGBMRegressor()`` with their default hyper-parameters are fitted, one on |y - ŷ| and
one on (y - ŷ)². On a window (rows with a finite prediction), each model's predictions are
clipped at 0:

- estimated mae = mean of the predicted |error|;
- estimated rmse = √(mean of the predicted error²).

Deterministic (LightGBM's defaults on the same rows give the same trees). Valid when the error's
relation to the features and prediction learned on the reference still holds (covariate shift is
fine, concept drift is not); the estimate of a window is noisy at the scale of NannyML's sampling
error (:mod:`otel_ml_processor.stats.sampling_error`), which is its interval. LightGBM is imported
here only, when a regression model's reference is prepared.

Example::

    from otel_ml_processor.stats.dle import DLE

    dle = DLE.fit({"age": ages, "plan": plans}, y_pred_ref, y_true_ref)
    dle.estimate({"age": ages_now, "plan": plans_now}, y_pred_now)   # {"mae": ..., "rmse": ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats import sampling_error

__all__ = ["DLE", "MISSING_CATEGORY"]

#: NannyML imputes a missing categorical value with this category before encoding it.
MISSING_CATEGORY = "NML_missing_value"


def _is_text(col: np.ndarray) -> bool:
    return col.dtype == object or col.dtype == bool


def _text(col: np.ndarray) -> np.ndarray:
    return np.array([MISSING_CATEGORY if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                     for v in col.tolist()], dtype=object)


@dataclass
class DLE:
    """Two fitted LightGBM models (|error|, error²), the feature encoding and the reference's
    sampling-error coefficients."""

    features: list
    categories: dict            # text feature -> sorted categories (code = index + 1)
    mae_model: Any
    mse_model: Any
    coefficients: dict = field(default_factory=dict)

    def _matrix(self, features: dict, prediction: np.ndarray) -> np.ndarray:
        cols = []
        for name in self.features:
            col = features.get(name)
            if col is None:
                col = np.full(len(prediction), None if name in self.categories else np.nan, dtype=object)
            if name in self.categories:
                cats = self.categories[name]
                idx = {c: i + 1.0 for i, c in enumerate(cats)}
                cols.append(np.array([idx.get(v, 0.0) for v in _text(col).tolist()], dtype=float))
            else:
                cols.append(np.asarray(col, dtype=float))
        cols.append(np.asarray(prediction, dtype=float))
        return np.column_stack(cols)

    @classmethod
    def fit(cls, features: dict, prediction: np.ndarray, label: np.ndarray) -> "DLE | None":
        """Fit on the reference: ``features`` name -> column (float64 with NaN, or object text
        with None), predictions and labels (float, NaN = unknown). None without labeled rows."""
        from lightgbm import LGBMRegressor

        y = np.asarray(label, dtype=float)
        yp = np.asarray(prediction, dtype=float)
        ok = np.isfinite(y) & np.isfinite(yp)
        if np.count_nonzero(ok) < 2:
            return None
        names = list(features)
        cats = {k: sorted(set(_text(np.asarray(v)[ok]).tolist())) for k, v in features.items()
                if _is_text(np.asarray(v))}
        dle = cls(names, cats, None, None,
                  sampling_error.regression_coefficients(y[ok], yp[ok]))
        x = dle._matrix({k: np.asarray(v)[ok] for k, v in features.items()}, yp[ok])
        categorical = [i for i, k in enumerate(names) if k in cats]
        err = y[ok] - yp[ok]
        # verbose=-1: LightGBM's warnings (e.g. few rows) would go to stdout on every fit
        dle.mae_model = LGBMRegressor(verbose=-1).fit(x, np.abs(err), categorical_feature=categorical)
        dle.mse_model = LGBMRegressor(verbose=-1).fit(x, np.square(err), categorical_feature=categorical)
        return dle

    def estimate(self, features: dict, prediction: np.ndarray) -> tuple[dict[str, float], int]:
        """(metric -> estimate, rows used) on a window; rows without a finite prediction are left out."""
        yp = np.asarray(prediction, dtype=float)
        ok = np.isfinite(yp)
        n = int(np.count_nonzero(ok))
        if n == 0:
            return {}, 0
        x = self._matrix({k: np.asarray(v)[ok] for k, v in features.items()}, yp[ok])
        abs_err = np.maximum(0, self.mae_model.predict(x))
        sq_err = np.maximum(0, self.mse_model.predict(x))
        out = {sc.PERF_MAE: float(np.mean(abs_err)), sc.PERF_RMSE: float(np.sqrt(np.mean(sq_err)))}
        return {k: v for k, v in out.items() if math.isfinite(v)}, n

    def intervals(self, estimates: dict[str, float], n: int) -> dict[tuple[str, str], float]:
        """(metric, bound) -> value: NannyML's ± 3 sampling errors, clipped at 0 (no upper limit)."""
        out = {}
        for k, v in estimates.items():
            iv = sampling_error.interval(v, self.coefficients.get(k), n, upper_limit=None)
            if iv is not None:
                out[(k, sc.BOUND_LOWER)], out[(k, sc.BOUND_UPPER)] = iv
        return out
