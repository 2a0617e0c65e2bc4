"""The drift tests' shared types: a leaf module (it imports no test and not the registry).

Each drift test module (:mod:`.ks`, :mod:`.psi`, :mod:`.jensenshannon`, :mod:`.wasserstein`,
:mod:`.chi2`, :mod:`.missing`) imports only this module (and helpers such as :mod:`.noise`);
:mod:`.registry` imports every test module and collects their ``TEST`` records. So imports run
one way, and a new test is one new module plus one line in :func:`.registry.builtin_tests`.

What lives here: the feature kinds and score kinds, :class:`DriftScore`, :class:`DriftTest` (the
declarative record, see :mod:`.registry` for its callables), :class:`FeatureReference` and
:class:`FeatureWindow` (one feature's present values, and its row count), the
:class:`DriftConfigError`, and the helpers several tests share (:func:`present_values`,
:func:`union_counts`, :func:`bin_counts_sorted`).

Example::

    import numpy as np
    from otel_ml_processor.stats.drift_types import FeatureReference, FeatureWindow

    ref = FeatureReference.build(np.array([1.0, np.nan, 3.0]))
    ref.n, ref.rows, ref.missing          # 2 present values of 3 rows: 1 missing
    FeatureWindow.build(np.array([np.nan, 2.0])).missing   # 1
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
    "DriftConfigError", "present_values", "union_counts", "bin_counts_sorted",
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

    @property
    def missing(self) -> int:
        """Rows without a present value (absent, None, NaN or +-inf)."""
        return max(self.rows - self.n, 0)

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
    """The window's present values of one feature (same dtype rules as FeatureReference).

    ``rows``: the window's rows, present or not (defaults to the present values); a feature that
    no window row sent is ``FeatureWindow(np.zeros(0), rows=n)``. ``unreadable``: rows whose value
    could not be read as the feature's type (a data-quality issue of its own, not missing).
    """

    values: np.ndarray
    rows: int = -1
    unreadable: int = 0

    def __post_init__(self) -> None:
        if self.rows < 0:
            self.rows = int(self.values.size) + self.unreadable

    @classmethod
    def build(cls, values: np.ndarray, unreadable: int = 0) -> "FeatureWindow":
        """``values``: every row's value, missing ones as NaN / None (unreadable ones too)."""
        return cls(present_values(values), len(values), int(unreadable))

    @property
    def n(self) -> int:
        return int(self.values.size)

    @property
    def missing(self) -> int:
        """Rows without a value: absent, None, NaN or +-inf (not the unreadable ones)."""
        return max(self.rows - self.n - self.unreadable, 0)

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
    #: a companion test (``missing``) runs on every input feature beside the feature's distribution
    #: test; it is never a feature's ``method`` nor picked by ``auto``, and it scores a window
    #: with no present value too (its input is the counts: ``ref.missing`` of ``ref.rows``,
    #: ``window.missing`` of ``window.rows``)
    companion: bool = False

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


