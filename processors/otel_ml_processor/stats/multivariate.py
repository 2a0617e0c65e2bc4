"""Multivariate drift by PCA reconstruction error (after NannyML's DataReconstructionDriftCalculator).

Definition (DESIGN.md): numeric features standardized with the reference's mean and std
(ddof 0; a constant feature's std is taken as 1, as sklearn's StandardScaler); PCA fitted on
the standardized reference keeping the fewest components whose explained-variance ratios sum to
>= 0.65; a row's error = Euclidean distance between its standardized values and their PCA
reconstruction; score = mean error of the window / mean error of the reference; detected when
score >= threshold (default 1.1). Rows with a missing numeric value are left out (of both).
Oracle: ``sklearn.preprocessing.StandardScaler`` + ``sklearn.decomposition.PCA``
(``inverse_transform(transform(x))``). The score is absent when the reference's mean error is 0
(the components explain everything) or there are no complete rows.

Example::

    import numpy as np
    from otel_ml_processor.stats.multivariate import PCAReconstruction

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1000, 3))
    model = PCAReconstruction.fit(ref)
    model.score(rng.normal(size=(500, 3)))   # about 1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Fewest components explaining at least this share of the variance (NannyML's default).
VARIANCE_TO_KEEP = 0.65
DEFAULT_THRESHOLD = 1.1


def complete_rows(x: np.ndarray) -> np.ndarray:
    return x[np.all(np.isfinite(x), axis=1)]


@dataclass
class PCAReconstruction:
    mean: np.ndarray          # reference mean per feature
    scale: np.ndarray         # reference std per feature (0 -> 1)
    center: np.ndarray        # mean of the standardized reference (PCA's mean_)
    components: np.ndarray    # (k, d) principal axes kept
    discarded: np.ndarray     # (d - k, d) the other axes: a row's error is the norm of its part on them
    reference_mean_error: float

    @classmethod
    def fit(cls, reference: np.ndarray) -> "PCAReconstruction | None":
        """Fit on the reference's rows (n, d); None when fewer than 2 complete rows or d < 2."""
        return cls.fit_columns(np.asarray(reference, dtype=float).T)

    @classmethod
    def fit_columns(cls, columns: np.ndarray) -> "PCAReconstruction | None":
        """Fit on the reference given feature-major, shape (d, n) (no transposed copy needed)."""
        xt = _complete_columns(np.asarray(columns, dtype=float))
        if xt.shape[1] < 2 or xt.shape[0] < 2:
            return None
        mean = xt.mean(axis=1)
        scale = xt.std(axis=1)
        scale = np.where(scale == 0, 1.0, scale)
        zt = (xt - mean[:, None]) / scale[:, None]
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
        axes = evecs[:, order].T
        model = cls(mean, scale, center, axes[:k].copy(), axes[k:].copy(), 0.0)
        model.reference_mean_error = float(np.mean(model._errors_centered(zt)))
        return model

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def _errors_centered(self, zt: np.ndarray) -> np.ndarray:
        # x - reconstruction(x) is x's projection on the discarded axes (an orthonormal basis
        # completes the kept one), so its norm needs one (d - k) x d product
        if self.discarded.shape[0] == 0:
            return np.zeros(zt.shape[1])
        part = self.discarded @ zt
        return np.sqrt(np.einsum("ij,ij->j", part, part))

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Reconstruction error of each complete row of ``x`` (n, d)."""
        return self.errors_columns(np.asarray(x, dtype=float).T)

    def errors_columns(self, columns: np.ndarray) -> np.ndarray:
        """Same as :meth:`errors` for data given feature-major, shape (d, n)."""
        xt = _complete_columns(np.asarray(columns, dtype=float))
        a = 1.0 / self.scale
        zt = xt * a[:, None] - (self.mean * a + self.center)[:, None]
        return self._errors_centered(zt)

    def score(self, window: np.ndarray) -> float | None:
        """Mean error of the window's rows (n, d) / the reference's; None when undefined."""
        return self._score(self.errors(window))

    def score_columns(self, columns: np.ndarray) -> float | None:
        """Same as :meth:`score` for data given feature-major, shape (d, n)."""
        return self._score(self.errors_columns(columns))

    def _score(self, e: np.ndarray) -> float | None:
        if e.size == 0 or not self.reference_mean_error > 0:
            return None
        s = float(np.mean(e)) / self.reference_mean_error
        return s if np.isfinite(s) else None


def _complete_columns(xt: np.ndarray) -> np.ndarray:
    ok = np.isfinite(xt).all(axis=0)
    return xt if ok.all() else xt[:, ok]
