"""``psi``: population stability index on the reference's decile bins (DESIGN.md, exactly).

edges = ``np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))``; a value's bin is
``np.searchsorted(edges, x, side="right")``; r, c = bin fractions of reference and window, each
0 replaced by 1e-4; PSI = sum((c - r) * ln(c / r)). Edges and reference fractions are computed
once per reference. Score = PSI (no p-value); detected when score >= threshold (default 0.2).

Example::

    import numpy as np
    from otel_ml_processor.stats.registry import FeatureReference, FeatureWindow
    from otel_ml_processor.stats.psi import compute

    compute(FeatureReference.build(np.arange(100.0)), FeatureWindow.build(np.arange(100.0)), "numeric").score  # 0.0
"""

from __future__ import annotations

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats.registry import (
    DISTANCE, NUMERIC, DriftScore, DriftTest, FeatureReference, FeatureWindow, bin_counts_sorted,
)

#: What an empty bin's fraction is replaced by (DESIGN.md).
EMPTY_BIN_FRACTION = 1e-4


def fractions(counts: np.ndarray, n: int) -> np.ndarray:
    f = counts / n
    return np.where(f == 0, EMPTY_BIN_FRACTION, f)


def window_bin_counts(ref: FeatureReference, cur: FeatureWindow) -> np.ndarray:
    if "sorted" in cur.__dict__:  # already sorted for another test: cheap counts
        return bin_counts_sorted(cur.sorted, ref.psi_edges)
    return np.bincount(np.searchsorted(ref.psi_edges, cur.values, side="right"),
                       minlength=ref.psi_edges.size + 1)


def psi_value(ref_counts: np.ndarray, win_counts: np.ndarray) -> float:
    r = fractions(ref_counts, int(ref_counts.sum()))
    c = fractions(win_counts, int(win_counts.sum()))
    return float(np.sum((c - r) * np.log(c / r)))


def compute(ref: FeatureReference, cur: FeatureWindow, treatment: str) -> DriftScore:
    return DriftScore(score=psi_value(ref.psi_counts, window_bin_counts(ref, cur)))


TEST = DriftTest(
    name=sc.METHOD_PSI, kinds=frozenset({NUMERIC}), score_kind=DISTANCE, default_threshold=0.2,
    compute=compute, description="population stability index on reference decile bins",
)
