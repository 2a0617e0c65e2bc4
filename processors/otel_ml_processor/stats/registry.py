"""The drift-test registry: one declarative record per test, one function signature for all.

Each test lives in its own module (:mod:`.ks`, :mod:`.psi`, :mod:`.jensenshannon`,
:mod:`.wasserstein`, :mod:`.chi2`) and exposes a module-level ``TEST`` record;
:func:`builtin_tests` collects them explicitly (no registration by import side effect). A test
function takes the prepared reference of one feature, the window's values of that feature and
the treatment (``"numeric"`` or ``"categorical"``) and returns a :class:`DriftScore`.

Feature kinds (DESIGN.md, drift ``auto``):

- *value kind*: ``numeric`` when every present reference value is a number, else ``categorical``;
  a numeric-only test (ks, psi, wasserstein) on a categorical-valued feature is a config error;
- *auto kind*: ``numeric`` when the value kind is numeric and the reference has more than 5
  distinct values, else ``categorical``. ``auto`` resolves to ``ks`` (≤ 1000 reference rows) or
  ``wasserstein`` for an auto-numeric feature, to ``chi2`` (≤ 1000 rows) or ``jensenshannon``
  otherwise.

Example::

    import numpy as np
    from otel_ml_processor.stats.registry import FeatureReference, FeatureWindow, builtin_tests, resolve_method

    tests = builtin_tests()
    ref = FeatureReference.build(np.random.default_rng(0).normal(size=2000))
    method = resolve_method("auto", ref, tests)          # "wasserstein"
    res = tests[method].compute(ref, FeatureWindow(np.zeros(10)), tests[method].treatment(ref))
    tests[method].detected(res, None)                    # uses the default threshold 0.1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats._codes import value_counts

__all__ = [
    "NUMERIC", "CATEGORICAL", "PVALUE", "DISTANCE", "AUTO_MAX_EXACT_ROWS", "AUTO_MIN_DISTINCT",
    "DriftScore", "DriftTest", "FeatureReference", "FeatureWindow", "DriftConfigError",
    "builtin_tests", "resolve_method",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
PVALUE = "pvalue"
DISTANCE = "distance"
#: ``auto`` picks the statistical test (ks / chi2) up to this many reference rows, a distance above.
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
    """What depends only on one feature's reference values, computed once.

    ``values``: float64 with the missing values (NaN) removed when numeric, else an object
    array of str with the missing values (None) removed. Everything else is derived lazily and
    cached: ``sorted`` values, ``std``, PSI ``edges`` and bin counts, the ``categories`` map.
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
        return np.sort(self.values, kind="stable")

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
        return float(np.min(self.values)) if self.n else np.nan

    @cached_property
    def max(self) -> float:
        return float(np.max(self.values)) if self.n else np.nan

    @cached_property
    def std(self) -> float:
        return float(np.std(self.values))

    @cached_property
    def psi_edges(self) -> np.ndarray:
        # exactly DESIGN.md's expression
        if self.n == 0:
            return np.zeros(0)
        return np.unique(np.quantile(self.values, np.linspace(0.1, 0.9, 9)))

    @cached_property
    def psi_counts(self) -> np.ndarray:
        if "sorted" in self.__dict__:
            return bin_counts_sorted(self.sorted, self.psi_edges)
        return np.bincount(np.searchsorted(self.psi_edges, self.values, side="right"),
                           minlength=self.psi_edges.size + 1)

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
        return v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(0, dtype=object)
    present = np.fromiter((x is not None for x in v.tolist()), dtype=bool, count=v.size)
    out = v[present]
    return np.array([x if isinstance(x, str) else str(x) for x in out.tolist()], dtype=object)


def bin_counts_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin ``np.searchsorted(edges, x, side="right")`` from sorted values."""
    # bin i holds edges[i-1] <= x < edges[i]; #x < e is searchsorted(sorted, e, "left")
    below = np.searchsorted(sorted_values, edges, side="left")
    return np.diff(np.concatenate(([0], below, [sorted_values.size])))


@dataclass
class FeatureWindow:
    """The window's present values of one feature (same dtype rules as FeatureReference)."""

    values: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, values: np.ndarray) -> "FeatureWindow":
        return cls(present_values(values))

    @property
    def n(self) -> int:
        return int(self.values.size)

    @cached_property
    def sorted(self) -> np.ndarray:
        return np.sort(self.values)

    def category_counts(self) -> tuple[np.ndarray, np.ndarray]:
        if "cat" not in self._cache:
            self._cache["cat"] = value_counts(self.values)
        return self._cache["cat"]


def union_counts(ref: FeatureReference, cur: FeatureWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories, reference counts, window counts) over the sorted union of categories."""
    rc, rn = ref.categories, ref.category_counts
    wc, wn = cur.category_counts()
    cats = np.union1d(rc, wc)
    r = np.zeros(cats.size, dtype=np.int64)
    w = np.zeros(cats.size, dtype=np.int64)
    r[np.searchsorted(cats, rc)] = rn
    w[np.searchsorted(cats, wc)] = wn
    return cats, r, w


@dataclass(frozen=True)
class DriftTest:
    """Declarative record of one drift test.

    ``kinds``: the treatments it supports; a test whose kinds are only ``{"numeric"}`` cannot run
    on a categorical-valued feature. ``score_kind``: ``"pvalue"`` (detected when p < threshold)
    or ``"distance"`` (detected when score >= threshold).
    """

    name: str
    kinds: frozenset
    score_kind: str
    default_threshold: float
    compute: Callable[[FeatureReference, FeatureWindow, str], DriftScore]
    description: str = ""

    def treatment(self, ref: FeatureReference) -> str:
        """How this test reads the feature: ``numeric`` or ``categorical``."""
        if self.kinds == frozenset({NUMERIC}):
            return NUMERIC
        if self.kinds == frozenset({CATEGORICAL}):
            return CATEGORICAL
        return ref.auto_kind

    def prepare(self, ref: FeatureReference) -> None:
        """Compute now (once per reference) the reference-only parts this test reads."""
        if ref.n == 0:
            return  # no present value: the feature has no drift until the reference has some
        if self.treatment(ref) == CATEGORICAL:
            _ = ref.categories
        elif self.name in (sc.METHOD_KS, sc.METHOD_WASSERSTEIN):
            _ = ref.sorted, ref.std
        else:
            _ = ref.psi_counts

    def check(self, feature: str, ref: FeatureReference) -> None:
        """Raise DriftConfigError when this test cannot run on ``feature``."""
        if NUMERIC in self.kinds and CATEGORICAL not in self.kinds and ref.value_kind != NUMERIC:
            raise DriftConfigError(
                f"drift method {self.name!r} is numeric-only but feature {feature!r} is categorical "
                f"(it has non-numeric values); use one of: {METHODS_FOR_CATEGORICAL}")

    def detected(self, result: DriftScore, threshold: float | None) -> bool:
        t = self.default_threshold if threshold is None else threshold
        if self.score_kind == PVALUE:
            return result.pvalue is not None and result.pvalue < t
        return result.score >= t


METHODS_FOR_CATEGORICAL = f"{sc.METHOD_CHI2}, {sc.METHOD_JENSENSHANNON}, {sc.METHOD_AUTO}"


def builtin_tests() -> dict[str, DriftTest]:
    """The registry of every built-in test, by name (a fresh dict: callers may extend it)."""
    from otel_ml_processor.stats import chi2, jensenshannon, ks, psi, wasserstein  # noqa: PLC0415

    return {t.name: t for t in (ks.TEST, psi.TEST, jensenshannon.TEST, wasserstein.TEST, chi2.TEST)}


def resolve_method(method: str, ref: FeatureReference, tests: dict[str, DriftTest],
                   feature: str = "?") -> str:
    """The test actually run for ``method`` on this reference (``auto`` resolved).

    Raises DriftConfigError for an unknown method (listing the known ones) or a numeric-only
    method on a categorical-valued feature.
    """
    if method == sc.METHOD_AUTO:
        small = ref.rows <= AUTO_MAX_EXACT_ROWS
        if ref.auto_kind == NUMERIC:
            return sc.METHOD_KS if small else sc.METHOD_WASSERSTEIN
        return sc.METHOD_CHI2 if small else sc.METHOD_JENSENSHANNON
    test = tests.get(method)
    if test is None:
        known = ", ".join(sorted([*tests, sc.METHOD_AUTO]))
        raise DriftConfigError(f"unknown drift method {method!r} for feature {feature!r}; known: {known}")
    test.check(feature, ref)
    return method
