"""The drift-test registry: one declarative record per test, one signature for all.

Each test lives in its own module (:mod:`.ks`, :mod:`.psi`, :mod:`.jensenshannon`,
:mod:`.wasserstein`, :mod:`.chi2`) and exposes a module-level ``TEST`` record;
:func:`builtin_tests` collects them explicitly (no registration by import side effect). A record
declares everything the registry and the engine need to know about its test, so that neither
names a test:

- ``prepare(ref, treatment) -> state``: what the test needs from one feature's reference,
  computed once per reference (sorted values, bin edges and counts, category counts, ...);
- ``compute(state, window) -> DriftScore``: the score (and p-value) of one window;
- ``noise_floor(state, n_window, level, threshold) -> float`` (distance tests): the score's
  (1 - level) quantile when reference and window are independent samples of one distribution
  (see :mod:`.noise` and docs/metrics.md), or 0.0 when it cannot reach ``threshold`` (then it
  need not be computed);
- ``auto``: the slots of ``auto`` the test fills, as (treatment, reference size) pairs.

Feature kinds (DESIGN.md, drift ``auto``):

- *value kind*: ``numeric`` when every present reference value is a number, else ``categorical``;
  a numeric-only test (ks, psi, wasserstein) on a categorical-valued feature is a config error;
- *auto kind*: ``numeric`` when the value kind is numeric and the reference has more than 5
  distinct values, else ``categorical``. ``auto`` picks the test whose ``auto`` slots hold
  (auto kind, ``small`` when the reference has <= 1000 rows else ``large``): ks / wasserstein
  for numeric features, chi2 / jensenshannon for the others.

Example::

    import numpy as np
    from otel_ml_processor.stats.registry import FeatureReference, FeatureWindow, builtin_tests, resolve_method

    tests = builtin_tests()
    ref = FeatureReference.build(np.random.default_rng(0).normal(size=2000))
    test = tests[resolve_method("auto", ref, tests)]      # wasserstein
    state = test.prepare(ref, test.treatment(ref))
    score = test.compute(state, FeatureWindow.build(np.zeros(10)))
    floor = test.noise_floor(state, 10, 0.01, 0.1)        # what 10 stable values could reach
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Optional

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats._codes import value_counts

__all__ = [
    "NUMERIC", "CATEGORICAL", "PVALUE", "DISTANCE", "SMALL", "LARGE", "AUTO_MAX_EXACT_ROWS",
    "AUTO_MIN_DISTINCT", "DriftScore", "DriftTest", "FeatureReference", "FeatureWindow",
    "DriftConfigError", "builtin_tests", "resolve_method", "present_values", "union_counts",
    "bin_counts_sorted",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
PVALUE = "pvalue"
DISTANCE = "distance"
#: ``auto``'s reference sizes: at most ``AUTO_MAX_EXACT_ROWS`` rows (a statistical test) or more.
SMALL, LARGE = "small", "large"
AUTO_MAX_EXACT_ROWS = 1000
#: ``auto`` treats a numeric feature as categorical unless it has more than this many distinct values.
AUTO_MIN_DISTINCT = 5


class DriftConfigError(ValueError):
    """An unknown drift method, or a method that cannot run on a feature's kind."""


@dataclass(frozen=True)
class DriftScore:
    score: float
    pvalue: float | None = None


@dataclass
class FeatureReference:
    """One feature's present reference values, and what any test may read from them.

    ``values``: float64 with the missing values (NaN) removed when numeric, else an object array
    of str with the missing values (None) removed. Derived values are computed on first use and
    kept: ``sorted``, ``std``, ``min``/``max``, the categories and their counts. What only one
    test needs belongs to that test's prepared state, not here.
    """

    values: np.ndarray
    value_kind: str
    #: rows of the whole reference (``auto`` looks at it); defaults to the present values
    rows: int = -1

    def __post_init__(self) -> None:
        if self.rows < 0:
            self.rows = int(self.values.size)

    @classmethod
    def build(cls, values: np.ndarray, rows: int | None = None) -> "FeatureReference":
        v = present_values(values)
        kind = NUMERIC if v.dtype.kind == "f" else CATEGORICAL
        return cls(values=v, value_kind=kind, rows=len(values) if rows is None else rows)

    @property
    def n(self) -> int:
        return int(self.values.size)

    @cached_property
    def sorted(self) -> np.ndarray:
        # (numpy's default sort: vectorized, and the order of equal values does not matter here)
        return np.sort(self.values)

    @cached_property
    def n_distinct(self) -> int:
        if self.value_kind == NUMERIC:
            s = self.sorted
            return int(np.count_nonzero(s[1:] != s[:-1]) + 1) if s.size else 0
        return int(self.categories.size)

    @cached_property
    def auto_kind(self) -> str:
        if self.value_kind == NUMERIC and self.n_distinct > AUTO_MIN_DISTINCT:
            return NUMERIC
        return CATEGORICAL

    @cached_property
    def min(self) -> float:
        return float(self.sorted[0]) if self.n else np.nan

    @cached_property
    def max(self) -> float:
        return float(self.sorted[-1]) if self.n else np.nan

    @cached_property
    def std(self) -> float:
        return float(np.std(self.values))

    @cached_property
    def _categories(self) -> tuple[np.ndarray, np.ndarray]:
        return value_counts(self.values)

    @property
    def categories(self) -> np.ndarray:
        """Sorted distinct values (str, or float for a numeric-valued feature)."""
        return self._categories[0]

    @property
    def category_counts(self) -> np.ndarray:
        return self._categories[1]

    @cached_property
    def category_set(self) -> frozenset:
        return frozenset(self.categories.tolist())


def present_values(values: np.ndarray) -> np.ndarray:
    """Finite float64 values of a numeric column, or the non-None values of an object column as str.

    NaN and +-inf are left out (counted as data-quality issues by the engine).
    """
    v = np.asarray(values)
    if v.dtype.kind in "fiu":
        v = v.astype(float, copy=False)
        finite = np.isfinite(v)
        return v if finite.all() else v[finite]
    if v.size == 0:
        return np.zeros(0, dtype=object)
    items = [x for x in v.tolist() if x is not None]
    if not set(map(type, items)) <= {str}:
        items = [x if isinstance(x, str) else str(x) for x in items]
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def bin_counts_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin ``np.searchsorted(edges, x, side="right")`` from sorted values."""
    # bin i holds edges[i-1] <= x < edges[i]; #x < e is searchsorted(sorted, e, "left")
    below = np.searchsorted(sorted_values, edges, side="left")
    return np.diff(np.concatenate(([0], below, [sorted_values.size])))


@dataclass
class FeatureWindow:
    """The window's present values of one feature (same dtype rules as FeatureReference)."""

    values: np.ndarray

    @classmethod
    def build(cls, values: np.ndarray) -> "FeatureWindow":
        return cls(present_values(values))

    @property
    def n(self) -> int:
        return int(self.values.size)

    @cached_property
    def sorted(self) -> np.ndarray:
        return np.sort(self.values)

    @cached_property
    def category_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct values, their counts)."""
        return value_counts(self.values)


def union_counts(ref: FeatureReference, cur: FeatureWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories, reference counts, window counts) over the sorted union of categories."""
    rc, rn = ref.categories, ref.category_counts
    wc, wn = cur.category_counts
    cats = np.union1d(rc, wc)
    r = np.zeros(cats.size, dtype=np.int64)
    w = np.zeros(cats.size, dtype=np.int64)
    r[np.searchsorted(cats, rc)] = rn
    w[np.searchsorted(cats, wc)] = wn
    return cats, r, w


@dataclass(frozen=True)
class DriftTest:
    """Declarative record of one drift test (see the module doc for the callables).

    ``kinds``: the treatments it supports; a test whose kinds are only ``{"numeric"}`` cannot run
    on a categorical-valued feature. ``score_kind``: ``"pvalue"`` (decided on the
    Benjamini-Hochberg q-value) or ``"distance"`` (decided on the score against max(threshold,
    noise floor)). ``default_threshold``: for a p-value test, the default ``drift.alpha`` (a
    model's own ``drift.alpha`` replaces it).
    """

    name: str
    kinds: frozenset
    score_kind: str
    default_threshold: float
    prepare: Callable[[FeatureReference, str], Any]
    compute: Callable[[Any, FeatureWindow], DriftScore]
    noise_floor: Optional[Callable[[Any, int, float, float], float]] = None
    auto: frozenset = frozenset()
    description: str = ""

    def treatment(self, ref: FeatureReference) -> str:
        """How this test reads the feature: ``numeric`` or ``categorical``."""
        if self.kinds == frozenset({NUMERIC}):
            return NUMERIC
        if self.kinds == frozenset({CATEGORICAL}):
            return CATEGORICAL
        return ref.auto_kind

    def check(self, feature: str, ref: FeatureReference, tests: dict) -> None:
        """Raise DriftConfigError when this test cannot run on ``feature``."""
        if CATEGORICAL not in self.kinds and ref.value_kind != NUMERIC:
            usable = ", ".join(sorted([*(n for n, t in tests.items() if CATEGORICAL in t.kinds), sc.METHOD_AUTO]))
            raise DriftConfigError(
                f"drift method {self.name!r} is numeric-only but feature {feature!r} is categorical "
                f"(it has non-numeric values); use one of: {usable}")


def builtin_tests() -> dict[str, DriftTest]:
    """The registry of every built-in test, by name (a fresh dict: callers may extend it)."""
    from otel_ml_processor.stats import chi2, jensenshannon, ks, psi, wasserstein

    return {t.name: t for t in (ks.TEST, psi.TEST, jensenshannon.TEST, wasserstein.TEST, chi2.TEST)}


def resolve_method(method: str, ref: FeatureReference, tests: dict[str, DriftTest],
                   feature: str = "?") -> str:
    """The test actually run for ``method`` on this reference (``auto`` resolved).

    Raises DriftConfigError for an unknown method (listing the known ones) or a numeric-only
    method on a categorical-valued feature.
    """
    if method == sc.METHOD_AUTO:
        slot = (ref.auto_kind, SMALL if ref.rows <= AUTO_MAX_EXACT_ROWS else LARGE)
        for name, candidate in tests.items():
            if slot in candidate.auto:
                return name
        raise DriftConfigError(f"no drift test fills auto's slot {slot} for feature {feature!r}")
    test = tests.get(method)
    if test is None:
        known = ", ".join(sorted([*tests, sc.METHOD_AUTO]))
        raise DriftConfigError(f"unknown drift method {method!r} for feature {feature!r}; known: {known}")
    test.check(feature, ref, tests)
    return method
