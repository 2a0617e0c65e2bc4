"""Seeded stable data for the decision-rate tests: reference and windows drawn fresh from one
generating distribution per feature shape, and the binomial bound the tests pass on."""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Levels of the high-cardinality feature (Zipf-like: a long tail the reference partly misses).
HIGH_CARDINALITY = 300
_CAT40 = (lambda w: w / w.sum())(1.0 / np.arange(1, 41) ** 1.1)
_CAT5 = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
_HIGH = (lambda w: w / w.sum())(1.0 / np.arange(1, HIGH_CARDINALITY + 1) ** 0.8)
_CAT5_NAMES = np.array([f"plan {c}" for c in "abcde"], dtype=object)
_CAT40_NAMES = np.array([f"région-{i:02d} ✓" for i in range(40)], dtype=object)   # spaces, symbols, non-ASCII
_HIGH_NAMES = np.array([f"zip{i:05d}" for i in range(HIGH_CARDINALITY)], dtype=object)


def draw(shape: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` values of one feature shape."""
    if shape == "normal":
        return rng.normal(10.0, 2.0, n)
    if shape == "skewed":
        return rng.lognormal(0.0, 1.0, n)
    if shape == "counts":
        return rng.poisson(3.0, n).astype(float)
    if shape == "overdispersed":
        return rng.negative_binomial(2, 0.25, n).astype(float)
    if shape == "cat5":
        return _CAT5_NAMES[rng.choice(5, n, p=_CAT5)]
    if shape == "cat40":
        return _CAT40_NAMES[rng.choice(40, n, p=_CAT40)]
    if shape == "high_cardinality":
        return _HIGH_NAMES[rng.choice(HIGH_CARDINALITY, n, p=_HIGH)]
    raise ValueError(shape)


def lower_bound(hits: int, trials: int, confidence: float = 0.99) -> float:
    """One-sided Clopper-Pearson lower bound of a binomial rate."""
    return 0.0 if hits == 0 else float(stats.beta.ppf(1.0 - confidence, hits, trials - hits + 1))
