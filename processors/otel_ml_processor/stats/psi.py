"""``psi``: population stability index on the reference's decile bins (DESIGN.md, exactly).

edges = ``np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))``; a value's bin is
``np.searchsorted(edges, x, side="right")``; r, c = bin fractions of reference and window, each
0 replaced by 1e-4; PSI = sum((c - r) * ln(c / r)). Edges and reference counts are this test's
prepared state (:class:`Bins`, computed once per reference; jensenshannon reuses it for numeric
features). Score = PSI (no p-value); detected when score >= max(threshold (default 0.2), noise
floor).

Noise floor (:func:`noise_floor`): the (1 - level) quantile of PSI between two independent
multinomial samples (sizes n_ref, n_window) of the reference's bin fractions
(:func:`otel_ml_processor.stats.noise.count_statistic_floor`), and at least the PSI of a window
that left a bin empty, for every bin the window leaves empty with a probability (1 - r)^n above
level / bins (an empty bin counts as 1e-4, a jump the simulation's extrapolation cannot see).
Computed only where it can matter: when 3 x its large-sample value (1/n_ref + 1/n_window) x
chi2.isf(level, bins - 1) or that empty-bin bound reaches the configured threshold (else the
configured threshold stands; docs/metrics.md shows the measured ratios).

Example::

    import numpy as np
    from otel_ml_processor.stats.drift_types import FeatureReference, FeatureWindow
    from otel_ml_processor.stats import psi

    state = psi.prepare(FeatureReference.build(np.arange(100.0)), "numeric")
    psi.compute(state, FeatureWindow.build(np.arange(100.0))).score    # 0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats import noise
from otel_ml_processor.stats.noise import EMPTY_BIN_FRACTION
from otel_ml_processor.stats.drift_types import (
    DISTANCE, NUMERIC, DriftScore, DriftTest, FeatureReference, FeatureWindow, bin_counts_sorted,
)

DEFAULT_THRESHOLD = 0.2
#: The simulation runs only when SKIP_FACTOR x the chi-square value reaches the threshold.
SKIP_FACTOR = 3.0


@dataclass(frozen=True)
class Bins:
    """A reference's decile bins: ``edges`` (DESIGN.md's expression) and its ``counts`` per bin."""

    edges: np.ndarray
    counts: np.ndarray
    n: int

    def window_counts(self, cur: FeatureWindow) -> np.ndarray:
        return np.bincount(np.searchsorted(self.edges, cur.values, side="right"), minlength=self.edges.size + 1)


def bins_of(ref: FeatureReference) -> Bins:
    if ref.n == 0:
        return Bins(np.zeros(0), np.zeros(1, dtype=np.int64), 0)
    edges = np.unique(np.quantile(ref.values, np.linspace(0.1, 0.9, 9)))
    return Bins(edges, bin_counts_sorted(ref.sorted, edges), ref.n)


def fractions(counts: np.ndarray, n: int) -> np.ndarray:
    f = counts / n
    return np.where(f == 0, EMPTY_BIN_FRACTION, f)


def psi_value(ref_counts: np.ndarray, win_counts: np.ndarray) -> float:
    r = fractions(ref_counts, int(ref_counts.sum()))
    c = fractions(win_counts, int(win_counts.sum()))
    return float(np.sum((c - r) * np.log(c / r)))


def prepare(ref: FeatureReference, treatment: str) -> Bins:
    return bins_of(ref)


def compute(bins: Bins, cur: FeatureWindow) -> DriftScore:
    return DriftScore(score=psi_value(bins.counts, bins.window_counts(cur)))


def empty_bin_bound(bins: Bins, n_window: int, level: float) -> float:
    """The PSI a window reaches by leaving empty a bin it leaves empty with probability >
    level / bins (0 when no bin is that likely to be empty)."""
    r = bins.counts[bins.counts > 0] / bins.n
    likely = (1.0 - r) ** n_window > level / max(r.size, 1)
    if not np.any(likely):
        return 0.0
    ri = r[likely]
    return float(np.max((ri - EMPTY_BIN_FRACTION) * np.log(ri / EMPTY_BIN_FRACTION)))


def noise_floor(bins: Bins, n_window: int, level: float, threshold: float) -> float:
    """The (1 - level) quantile of PSI on stable data at these sizes (module doc); 0.0 when it
    cannot reach ``threshold``."""
    if bins.n == 0 or n_window <= 0:
        return 0.0
    k = int(np.count_nonzero(bins.counts))
    jump = empty_bin_bound(bins, n_window, level)
    approx = noise.chi2_approximation(noise.PSI, k, bins.n, n_window, level)
    if SKIP_FACTOR * approx < threshold and jump < threshold:
        return 0.0
    sim = noise.count_statistic_floor(noise.PSI, bins.counts / bins.n, bins.n, n_window, level)
    return max(sim, jump)


TEST = DriftTest(
    name=sc.METHOD_PSI, kinds=frozenset({NUMERIC}), score_kind=DISTANCE, default_threshold=DEFAULT_THRESHOLD,
    prepare=prepare, compute=compute, noise_floor=noise_floor,
    description="population stability index on reference decile bins",
)
