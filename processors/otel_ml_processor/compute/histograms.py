"""Per-feature histograms of the reference and the window, for the model pages.

The pages draw, for each feature, the reference against the window. The web side never
computes (DESIGN.md, "Shape of the code"), so the compute cycle puts these small aggregates into
its snapshot (``ModelMetrics.feature_histograms``); they hold fractions, never a row.

Bins are fixed by the reference alone, so two windows (or two replicas) binned against the
same reference can be added together:

- **numeric** (the feature's drift test reads it as numbers): ``NUMERIC_BINS`` equal-width bins
  between the reference's minimum and maximum widened on each side by ``margin`` × (max − min),
  the bounds of out-of-distribution (DESIGN.md "Out-of-distribution", ``ood.margin``, default
  0.1); a constant reference gets the bounds value ± 0.5. A value's bin is
  ``floor((x − lo) · NUMERIC_BINS / (hi − lo))``, the upper bound in the last bin. Two more bars
  hold the window's values below and above those bounds: exactly its OOD values.
- **categorical**: the reference's ``TOP_CATEGORIES`` most frequent categories (ties by name),
  one bar ``other`` for its remaining categories, one bar ``unseen`` for window values absent
  from the reference (OOD).

Fractions are of the present values (missing, NaN and infinite values are left out, as in drift);
a string sent for a numeric feature is left out too.

Example::

    import numpy as np
    from otel_ml_processor.compute.histograms import numeric_histogram, categorical_histogram

    h = numeric_histogram("age", np.array([20., 30., 40., 50.]), np.array([25., 90.]), margin=0.1)
    h.edges[0], h.edges[-1]      # 17.0, 53.0 (the OOD bounds)
    h.window[-1]                 # 0.5: half the window lies above the reference (OOD)
    c = categorical_histogram("plan", np.array(["a", "a", "b"], dtype=object),
                              np.array(["a", "z"], dtype=object))
    c.categories, c.window       # ('a', 'b'), (0.5, 0.0, 0.0, 0.5): a, b, other, unseen
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.clean.values import number_text
from otel_ml_processor.stats._codes import value_counts

if TYPE_CHECKING:  # pragma: no cover
    from otel_ml_processor.compute.engine import ModelSpec
    from otel_ml_processor.compute.reference import PreparedFeature, PreparedReference
    from otel_ml_processor.compute.window import WindowData

__all__ = ["NUMERIC", "CATEGORICAL", "NUMERIC_BINS", "TOP_CATEGORIES", "DEFAULT_MARGIN", "FeatureHistogram",
           "numeric_histogram", "categorical_histogram", "feature_histograms"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
#: equal-width bins between the OOD bounds of a numeric feature
NUMERIC_BINS = 20
#: categories of the reference drawn one by one (the rest: one ``other`` bar)
TOP_CATEGORIES = 10
#: DESIGN.md's default ``ood.margin`` (used until the model spec carries its own)
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True)
class FeatureHistogram:
    """The reference and the window of one feature over the same bars (fractions of present values).

    ``reference`` and ``window`` have one value per bar:
    numeric ``[below, bin 1 … bin NUMERIC_BINS, above]`` over ``edges`` (NUMERIC_BINS + 1 values,
    from the lower to the upper OOD bound); categorical ``[*categories, other, unseen]``. The
    first and last numeric bars and the ``unseen`` bar are out of distribution.
    """

    feature: str
    kind: str                    # NUMERIC | CATEGORICAL
    n_reference: int             # present reference values
    n_window: int                # present window values
    reference: tuple
    window: tuple
    edges: tuple = ()            # numeric
    categories: tuple = ()       # categorical, most frequent in the reference first

    @property
    def ood_window(self) -> float:
        """Fraction of the window's present values outside the reference."""
        if self.kind == NUMERIC:
            return self.window[0] + self.window[-1] if self.window else 0.0
        return self.window[-1] if self.window else 0.0


def _fractions(counts: np.ndarray, total: int) -> tuple:
    return tuple(float(c) / total for c in counts.tolist()) if total else tuple(0.0 for _ in counts.tolist())


def numeric_bounds(ref_values: np.ndarray, margin: float) -> tuple[float, float]:
    """The OOD bounds of a numeric reference: [min − margin·span, max + margin·span]."""
    lo, hi = float(np.min(ref_values)), float(np.max(ref_values))
    span = hi - lo
    # a span too small to divide into bars (subnormal: bins / span overflows) counts as constant
    if span == 0 or not math.isfinite(span) or not math.isfinite(NUMERIC_BINS / span):
        return lo - 0.5, hi + 0.5
    return lo - margin * span, hi + margin * span


def _numeric_counts(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """[below, bins…, above] counts of the finite ``values``.

    A value's bin is ``floor((x − lo) · bins / (hi − lo))`` (the upper bound ``hi`` in the last
    one); below is ``x < lo`` and above ``x > hi``, exactly. Few whole-array passes, one
    temporary: this runs for every feature in every compute cycle.
    """
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    t = values - lo
    t *= bins / (hi - lo)
    np.maximum(t, -1.0, out=t)          # below lo -> bar 0 after the shift
    np.minimum(t, float(bins), out=t)   # at or above hi -> bar bins + 1 for now
    t += 1.0
    counts = np.bincount(t.astype(np.intp), minlength=bins + 2)
    # the arithmetic rounds next to the bounds: count below and above exactly; a value just below
    # lo can only have landed in the first bin, one at or just around hi in the last bin or above
    below = int(np.count_nonzero(values < lo))
    above = int(np.count_nonzero(values > hi))
    counts[1] -= below - counts[0]
    counts[0] = below
    counts[bins + 1] = above
    counts[bins] = values.size - below - above - counts[1:bins].sum()
    return counts


def numeric_histogram(feature: str, reference: np.ndarray, window: np.ndarray, margin: float = DEFAULT_MARGIN,
                      bins: int = NUMERIC_BINS, _ref: Optional[tuple] = None) -> FeatureHistogram:
    """Histogram of a numeric feature (``reference`` must hold at least one finite value)."""
    if _ref is None:
        _ref = _numeric_reference(np.asarray(reference, dtype=float), margin, bins)
    lo, hi, rc = _ref
    wc = _numeric_counts(np.asarray(window, dtype=float), lo, hi, bins)
    n_ref, n_cur = int(rc.sum()), int(wc.sum())
    return FeatureHistogram(feature, NUMERIC, n_ref, n_cur, _fractions(rc, n_ref), _fractions(wc, n_cur),
                            edges=tuple(np.linspace(lo, hi, bins + 1).tolist()))


def _numeric_reference(values: np.ndarray, margin: float, bins: int) -> tuple:
    """(lower bound, upper bound, bar counts) of a numeric reference."""
    finite = values[np.isfinite(values)]
    lo, hi = numeric_bounds(finite, margin)
    return lo, hi, _numeric_counts(finite, lo, hi, bins)


def _label(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return number_text(float(v))
    return str(v)


def categorical_histogram(feature: str, reference: np.ndarray, window: np.ndarray,
                          top: int = TOP_CATEGORIES, _ref: Optional[tuple] = None) -> FeatureHistogram:
    """Histogram of a categorical feature: top reference categories, ``other``, ``unseen``.

    ``reference`` and ``window`` hold values of one type: str, or numbers (a numeric feature
    with few distinct values, labeled as :func:`number_text` writes them); None / NaN are missing.
    """
    if _ref is None:
        cats, counts = value_counts(_present(reference))
        _ref = _categorical_reference(cats, counts, top)
    index, labels, rc, n_ref = _ref
    k = len(labels)
    wc = np.zeros(k + 2, dtype=np.int64)
    v = np.asarray(window)
    if v.dtype.kind in "fiu":
        v = v.astype(float, copy=False)
        v = v[np.isfinite(v)]
    # Counter counts in C: the fastest pass over 100 000 Python strings; then only the distinct values
    n_cur = 0
    for c, n in Counter(v.tolist()).items():
        if c is None:
            continue
        wc[index.get(c, k + 1)] += n     # absent from the reference: the "unseen" bar (OOD)
        n_cur += n
    return FeatureHistogram(feature, CATEGORICAL, n_ref, n_cur, _fractions(rc, n_ref), _fractions(wc, n_cur),
                            categories=tuple(labels))


def _categorical_reference(cats: np.ndarray, counts: np.ndarray, top: int) -> tuple:
    """(category -> bar index, labels of the top categories, reference bar counts, present values).

    The top categories are the most frequent (ties by label); every other category maps to the
    ``other`` bar, index ``len(labels)``.
    """
    order = sorted(range(len(cats)), key=lambda i: (-int(counts[i]), _label(cats[i])))
    shown = order[:top]
    k = len(shown)
    index = {cats[i]: (j if j < k else k) for j, i in enumerate(order)}
    rc = np.zeros(k + 2, dtype=np.int64)
    for j, i in enumerate(order):
        rc[min(j, k)] += int(counts[i])
    return index, [_label(cats[i]) for i in shown], rc, int(counts.sum())


def _present(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype.kind in "fiu":
        v = v.astype(float, copy=False)
        return v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(0, dtype=object)
    keep = np.fromiter((x is not None for x in v.tolist()), dtype=bool, count=v.size)
    return v[keep]


# --- reference-side cache: bins depend on the reference only ---------------------------------------

class _ReferenceCache:
    """Per prepared feature reference: its bounds and bar counts, computed once (weakly held)."""

    def __init__(self, size: int = 8192):
        self._d: dict = {}
        self._size = size

    def get(self, obj: object, key: tuple, make):
        k = (id(obj), key)
        hit = self._d.get(k)
        if hit is not None and hit[0]() is obj:
            return hit[1]
        value = make()
        if len(self._d) >= self._size:
            self._d.clear()
        try:
            self._d[k] = (weakref.ref(obj), value)
        except TypeError:  # pragma: no cover - an object without weak references: no caching
            pass
        return value


_CACHE = _ReferenceCache()


def _window_column(values: np.ndarray, numeric_ref: bool) -> np.ndarray:
    """The window column in the reference's value type (numbers, or strings as the drift reads them)."""
    if numeric_ref:
        if values.dtype != object:
            return values.astype(float, copy=False)
        out = np.full(len(values), np.nan)
        for i, v in enumerate(values.tolist()):
            if v is None or isinstance(v, bool):
                continue
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                pass   # a string where the reference has numbers: OOD, left out of the chart
        return out
    if values.dtype != object:
        return np.array([number_text(v) if math.isfinite(v) else None for v in values.tolist()], dtype=object)
    return values


def histogram_of(pf: "PreparedFeature", values: np.ndarray, margin: float) -> Optional[FeatureHistogram]:
    """The histogram of one prepared feature against one window column (None: empty reference)."""
    ref = pf.ref
    if ref.n == 0:
        return None
    numeric_values = ref.value_kind == NUMERIC
    col = _window_column(values, numeric_values)
    if pf.treatment == NUMERIC and numeric_values:
        cached = _CACHE.get(ref, (NUMERIC, margin), lambda: _numeric_reference(ref.values, margin, NUMERIC_BINS))
        return numeric_histogram(pf.name, ref.values, col, margin, NUMERIC_BINS, _ref=cached)
    cached = _CACHE.get(ref, (CATEGORICAL, TOP_CATEGORIES), lambda: _categorical_reference(
        ref.categories, ref.category_counts, TOP_CATEGORIES))
    return categorical_histogram(pf.name, ref.values, col, TOP_CATEGORIES, _ref=cached)


def feature_histograms(window: "WindowData", ref: "PreparedReference", spec: "ModelSpec",
                       features: Iterable[str]) -> dict:
    """feature -> :class:`FeatureHistogram` for the reference's ``features`` present in the window,
    plus ``__prediction__`` (the predicted label, or value for regression) when the reference has one."""
    margin = float(getattr(spec, "ood_margin", DEFAULT_MARGIN))
    wanted = set(features)
    out = {}
    for name, pf in ref.features.items():
        if name in wanted and name in window.features:
            h = histogram_of(pf, window.features[name], margin)
            if h is not None:
                out[name] = h
    if ref.prediction is not None:
        task = spec.task or window.task
        col = window.output_value if task == sc.TASK_REGRESSION else window.output_label
        h = histogram_of(ref.prediction, col, margin)
        if h is not None:
            out[sc.FEATURE_PREDICTION] = h
    return out
