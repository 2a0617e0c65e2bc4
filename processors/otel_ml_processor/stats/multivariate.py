"""Multivariate drift by PCA reconstruction error (after NannyML's DataReconstructionDriftCalculator).

Definition (DESIGN.md): the reference's complete rows (a row with a missing numeric value is
left out, here and in the window), in their order, are split by position: rows 0, 2, 4, ... fit
the model, rows 1, 3, 5, ... are the baseline. Numeric features are standardized with the fit
rows' mean and std (ddof 0; a constant feature's std is taken as 1, as sklearn's
StandardScaler); PCA fitted on the standardized fit rows keeps the fewest components whose
cumulative explained-variance ratio is >= 0.65; a row's error = Euclidean distance between its
standardized values and their PCA reconstruction; score = mean error of the window / mean error
of the baseline rows. The score is absent when every component is kept (nothing is left to
measure), when the baseline's mean error is 0, or without complete rows. Oracle:
``sklearn.preprocessing.StandardScaler`` + ``sklearn.decomposition.PCA`` fitted on the fit rows
(``inverse_transform(transform(x))``).

Why a held-out baseline: an error measured on the rows the PCA was fitted on is optimistic (the
components were chosen to fit those rows): 100 features on a 1000-row reference scored 1.17 on
stable data against in-sample errors. The baseline rows are independent of the fit, so on stable
data the window's and the baseline's errors have the same distribution.

Noise floor (:meth:`PCAReconstruction.noise_floor`): with m, s, g the baseline errors' mean,
standard deviation and skewness, n_b baseline rows and n window rows, the score f at which the
window's mean error exceeds f times the baseline's with probability ``level`` (Fieller: both
means are independent and close to normal)::

    m (f - 1) = z s sqrt(1/n + f^2/n_b),   z = Phi^-1(1 - level) + (z0^2 - 1) g / (6 sqrt(n))

(the second term is the Cornish-Fisher correction for the skewness of a mean of n errors), the
larger root of that quadratic; detected when score >= max(threshold (default 1.1), floor).

Example::

    import numpy as np
    from otel_ml_processor.stats.multivariate import PCAReconstruction

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1))
    ref = np.hstack([x, x + rng.normal(0, 0.3, (2000, 1)), rng.normal(size=(2000, 1))])
    model = PCAReconstruction.fit(ref)
    model.score(ref[:500] + rng.normal(0, 0.01, (500, 3)))    # about 1.0
    model.noise_floor(500, 0.01)                              # about 1.09
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PCAReconstruction", "VARIANCE_TO_KEEP", "DEFAULT_THRESHOLD"]

#: Fewest components explaining at least this share of the variance (NannyML's default).
VARIANCE_TO_KEEP = 0.65
DEFAULT_THRESHOLD = 1.1


@dataclass
class PCAReconstruction:
    mean: np.ndarray          # fit rows' mean per feature
    scale: np.ndarray         # fit rows' std per feature (0 -> 1)
    center: np.ndarray        # mean of the standardized fit rows (PCA's mean_)
    components: np.ndarray    # (k, d) principal axes kept
    discarded: np.ndarray     # (d - k, d) the other axes: a row's error is the norm of its part on them
    baseline_mean_error: float
    baseline_std_error: float = 0.0
    baseline_skewness: float = 0.0
    n_baseline: int = 0

    @classmethod
    def fit(cls, reference: np.ndarray) -> "PCAReconstruction | None":
        """Fit on the reference's rows (n, d), in order; None when the score would be undefined."""
        return cls.fit_columns(np.asarray(reference, dtype=float).T)

    @classmethod
    def fit_columns(cls, columns: np.ndarray) -> "PCAReconstruction | None":
        """Fit on the reference given feature-major, shape (d, n) (no transposed copy needed)."""
        xt = _complete_columns(np.asarray(columns, dtype=float))
        d, n = xt.shape
        if d < 2 or n < 3:
            return None
        fit, base = np.ascontiguousarray(xt[:, 0::2]), xt[:, 1::2]
        mean = fit.mean(axis=1)
        scale = fit.std(axis=1)
        scale = np.where(scale == 0, 1.0, scale)
        zt = fit
        zt -= mean[:, None]
        zt /= scale[:, None]
        center = zt.mean(axis=1)
        zt -= center[:, None]
        # eigen-decomposition of the covariance: the same axes as PCA's SVD (signs do not
        # matter for a reconstruction)
        evals, evecs = np.linalg.eigh(zt @ zt.T)
        order = np.argsort(evals)[::-1]
        evals = np.clip(evals[order], 0, None)
        total = evals.sum()
        if total <= 0:
            return None
        ratio = np.cumsum(evals / total)
        k = int(np.argmax(ratio >= VARIANCE_TO_KEEP)) + 1
        if k >= d:
            return None  # every component kept: the reconstruction is exact
        axes = evecs[:, order].T
        model = cls(mean, scale, center, axes[:k].copy(), axes[k:].copy(), 0.0)
        e = model.errors_columns(base)
        m = float(np.mean(e))
        if not m > 0:
            return None
        model.baseline_mean_error = m
        model.baseline_std_error = float(np.std(e))
        sd = float(np.std(e))
        # Fisher-Pearson skewness (scipy.stats.skew's default)
        model.baseline_skewness = float(np.mean((e - m) ** 3)) / sd ** 3 if e.size > 2 and sd > 0 else 0.0
        model.n_baseline = int(e.size)
        return model

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def _errors_centered(self, zt: np.ndarray) -> np.ndarray:
        # x - reconstruction(x) is x's projection on the discarded axes (an orthonormal basis
        # completes the kept one), so its norm needs one (d - k) x d product
        part = self.discarded @ zt
        return np.sqrt(np.einsum("ij,ij->j", part, part))

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Reconstruction error of each complete row of ``x`` (n, d)."""
        return self.errors_columns(np.asarray(x, dtype=float).T)

    def errors_columns(self, columns: np.ndarray) -> np.ndarray:
        """Same as :meth:`errors` for data given feature-major, shape (d, n).

        The standardization is folded into the projection: with D the discarded axes,
        D ((x - mean) / scale - center) = (D / scale) x - ((D / scale) mean + D center), so the
        (d, n) data are read once by one matrix product and never copied.
        """
        xt = _complete_columns(np.asarray(columns, dtype=float))
        proj = self.discarded / self.scale[None, :]
        part = proj @ xt
        part -= (proj @ self.mean + self.discarded @ self.center)[:, None]
        return np.sqrt(np.einsum("ij,ij->j", part, part))

    def score(self, window: np.ndarray) -> float | None:
        """Mean error of the window's rows (n, d) / the baseline's; None when undefined."""
        return self._score(self.errors(window))

    def score_columns(self, columns: np.ndarray) -> float | None:
        """Same as :meth:`score` for data given feature-major, shape (d, n); also returns None
        without complete rows."""
        return self._score(self.errors_columns(columns))

    def score_and_rows(self, columns: np.ndarray) -> tuple[float | None, int]:
        """(score, complete rows of the window) for data given feature-major."""
        e = self.errors_columns(columns)
        return self._score(e), int(e.size)

    def _score(self, e: np.ndarray) -> float | None:
        if e.size == 0:
            return None
        s = float(np.mean(e)) / self.baseline_mean_error
        return s if np.isfinite(s) else None

    def noise_floor(self, n_window: int, level: float) -> float:
        """The score's (1 - level) quantile on stable data for ``n_window`` complete rows (module doc)."""
        m, s, nb = self.baseline_mean_error, self.baseline_std_error, self.n_baseline
        if n_window <= 0 or nb <= 0 or not s > 0:
            return 1.0
        z0 = float(stats.norm.isf(level))
        z = z0 + (z0 * z0 - 1.0) * self.baseline_skewness / (6.0 * math.sqrt(n_window))
        c2 = (z * s / m) ** 2
        a = 1.0 - c2 / nb
        if a <= 0:
            return math.inf  # the baseline is too small to tell any score from noise
        disc = 1.0 - a * (1.0 - c2 / n_window)
        return (1.0 + math.sqrt(max(disc, 0.0))) / a


def _complete_columns(xt: np.ndarray) -> np.ndarray:
    ok = np.isfinite(xt).all(axis=0)
    return xt if ok.all() else xt[:, ok]
