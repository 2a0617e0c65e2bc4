"""``jensenshannon``: ``scipy.spatial.distance.jensenshannon(r, c, base=2)``.

Numeric features: r, c = raw fractions of reference and window in the PSI bins (no 1e-4
replacement; the bins are psi's prepared state). Categorical features: fractions over the sorted
union of categories (a category unseen in the reference has r = 0). Score = the distance in
[0, 1] (no p-value); detected when score >= max(threshold (default 0.1), noise floor). scipy is
called on the few-bin vectors (cheap).

Noise floor (:func:`noise_floor`): the square root of the (1 - level) quantile of the
Jensen-Shannon divergence between two independent multinomial samples (sizes n_ref, n_window) of
the reference's fractions (:func:`otel_ml_processor.stats.noise.count_statistic_floor`). For a
categorical feature the population also holds categories the reference never showed: their
mass is the Good-Turing estimate (categories seen once in the reference) / n_ref, and each value
drawn from it is a category of its own. Computed only where it can matter: when 3 x the
divergence's large-sample value (1/n_ref + 1/n_window) chi2.isf(level, k - 1) / (8 ln 2) plus
that unseen mass reaches threshold² (else the configured threshold stands).

Example::

    import numpy as np
    from otel_ml_processor.stats.drift_types import FeatureReference, FeatureWindow
    from otel_ml_processor.stats import jensenshannon as js

    ref = FeatureReference.build(np.array(["a", "b"], dtype=object))
    state = js.prepare(ref, "categorical")
    js.compute(state, FeatureWindow.build(np.array(["a", "a"], dtype=object))).score
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import distance

from otel_ml import semconv as sc
from otel_ml_processor.stats import noise
from otel_ml_processor.stats.psi import Bins, bins_of
from otel_ml_processor.stats.drift_types import (
    CATEGORICAL, DISTANCE, LARGE, NUMERIC, DriftScore, DriftTest, FeatureReference, FeatureWindow, union_counts,
)

DEFAULT_THRESHOLD = 0.1
SKIP_FACTOR = 3.0


@dataclass(frozen=True)
class Categories:
    """A categorical reference: the feature's reference and the Good-Turing unseen mass."""

    ref: FeatureReference
    unseen: float

    @property
    def fractions(self) -> np.ndarray:
        return self.ref.category_counts / self.ref.n


def prepare(ref: FeatureReference, treatment: str) -> Bins | Categories:
    if treatment == NUMERIC:
        return bins_of(ref)
    counts = ref.category_counts
    singletons = int(np.count_nonzero(counts == 1))
    return Categories(ref, singletons / ref.n if ref.n else 0.0)


def compute(state: Bins | Categories, cur: FeatureWindow) -> DriftScore:
    if isinstance(state, Bins):
        r, c = state.counts, state.window_counts(cur)
    else:
        _, r, c = union_counts(state.ref, cur)
    return DriftScore(score=float(distance.jensenshannon(r / r.sum(), c / c.sum(), base=2)))


def noise_floor(state: Bins | Categories, n_window: int, level: float, threshold: float) -> float:
    """The (1 - level) quantile of the distance on stable data at these sizes (module doc); 0.0
    when it cannot reach ``threshold``."""
    if isinstance(state, Bins):
        n, frac, unseen = state.n, state.counts / max(state.n, 1), 0.0
    else:
        n, frac, unseen = state.ref.n, state.fractions, state.unseen
    if n == 0 or n_window <= 0:
        return 0.0
    k = int(np.count_nonzero(frac))
    approx = noise.chi2_approximation(noise.JSD, k, n, n_window, level)
    if SKIP_FACTOR * approx + unseen < threshold * threshold:
        return 0.0
    return float(np.sqrt(noise.count_statistic_floor(noise.JSD, frac, n, n_window, level, unseen)))


TEST = DriftTest(
    name=sc.METHOD_JENSENSHANNON, kinds=frozenset({NUMERIC, CATEGORICAL}), score_kind=DISTANCE,
    default_threshold=DEFAULT_THRESHOLD, prepare=prepare, compute=compute, noise_floor=noise_floor,
    auto=frozenset({(CATEGORICAL, LARGE)}),
    description="Jensen-Shannon distance, base 2 (scipy.spatial.distance.jensenshannon)",
)
