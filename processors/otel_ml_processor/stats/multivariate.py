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
    components: np.ndarray    # (k, d) principal axes
    reference_mean_error: float

    @classmethod
    def fit(cls, reference: np.ndarray) -> "PCAReconstruction | None":
        """Fit on the reference's rows (n, d); None when fewer than 2 complete rows or d < 2."""
        x = complete_rows(np.asarray(reference, dtype=float))
        if x.shape[0] < 2 or x.shape[1] < 2:
            return None
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale == 0, 1.0, scale)
        z = (x - mean) / scale
        center = z.mean(axis=0)
        c = z - center
        # eigen-decomposition of the covariance (same axes as PCA's SVD; signs do not matter
        # for a reconstruction)
        evals, evecs = np.linalg.eigh(c.T @ c)
        order = np.argsort(evals)[::-1]
        evals = np.clip(evals[order], 0, None)
        total = evals.sum()
        if total <= 0:
            return None
        ratio = np.cumsum(evals / total)
        k = int(np.argmax(ratio >= VARIANCE_TO_KEEP)) + 1
        model = cls(mean, scale, center, evecs[:, order[:k]].T.copy(), 0.0)
        model.reference_mean_error = float(np.mean(model.errors(x)))
        return model

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Reconstruction error of each complete row of ``x``."""
        c = (complete_rows(np.asarray(x, dtype=float)) - self.mean) / self.scale - self.center
        resid = c - (c @ self.components.T) @ self.components
        return np.sqrt(np.einsum("ij,ij->i", resid, resid))

    def score(self, window: np.ndarray) -> float | None:
        e = self.errors(window)
        if e.size == 0 or not self.reference_mean_error > 0:
            return None
        s = float(np.mean(e)) / self.reference_mean_error
        return s if np.isfinite(s) else None
