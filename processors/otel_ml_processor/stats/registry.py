"""The drift-test registry: one declarative record per test, one signature for all.

Each test lives in its own module (:mod:`.ks`, :mod:`.psi`, :mod:`.jensenshannon`,
:mod:`.wasserstein`, :mod:`.chi2`, :mod:`.missing`) and exposes a module-level ``TEST`` record;
:func:`builtin_tests` collects them explicitly (no registration by import side effect). The
shared types live in the leaf module :mod:`.drift_types`, which the test modules import: this
module imports the tests, they never import it, so a new test adds no circle of imports. A
record declares everything the registry and the engine need to know about its test, so that
neither names a test:

- ``prepare(ref, treatment) -> state``: what the test needs from one feature's reference,
  computed once per reference (sorted values, bin edges and counts, category counts, ...);
- ``compute(state, window) -> DriftScore``: the score (and p-value) of one window;
- ``noise_floor(state, n_window, level, threshold) -> float`` (distance tests): the score's
  (1 - level) quantile when reference and window are independent samples of one distribution
  (see :mod:`.noise` and docs/metrics.md), or 0.0 when it cannot reach ``threshold`` (then it
  need not be computed);
- ``auto``: the slots of ``auto`` the test fills, as (treatment, reference size) pairs;
- ``companion``: the test runs on every input feature beside its ``method`` (``missing``); it
  cannot be chosen as a ``method``.

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
    [t.name for t in companion_tests(tests)]               # ["missing"]
"""

from __future__ import annotations

from otel_ml import semconv as sc
from otel_ml_processor.stats import chi2, jensenshannon, ks, missing, psi, wasserstein
# the shared types, re-exported: readers may take them from here or from the leaf module
from otel_ml_processor.stats.drift_types import (
    AUTO_MAX_EXACT_ROWS, AUTO_MIN_DISTINCT, CATEGORICAL, DISTANCE, LARGE, NUMERIC, PVALUE, SMALL,
    DriftConfigError, DriftScore, DriftTest, FeatureReference, FeatureWindow, bin_counts_sorted,
    present_values, union_counts,
)

__all__ = [
    "NUMERIC", "CATEGORICAL", "PVALUE", "DISTANCE", "SMALL", "LARGE", "AUTO_MAX_EXACT_ROWS",
    "AUTO_MIN_DISTINCT", "DriftScore", "DriftTest", "FeatureReference", "FeatureWindow",
    "DriftConfigError", "builtin_tests", "companion_tests", "resolve_method", "present_values",
    "union_counts", "bin_counts_sorted",
]


def builtin_tests() -> dict[str, DriftTest]:
    """The registry of every built-in test, by name (a fresh dict: callers may extend it)."""
    return {t.name: t for t in (ks.TEST, psi.TEST, jensenshannon.TEST, wasserstein.TEST, chi2.TEST, missing.TEST)}


def companion_tests(tests: dict[str, DriftTest]) -> list[DriftTest]:
    """The tests that run on every input feature beside its method (``missing``), in registry order."""
    return [t for t in tests.values() if t.companion]


def resolve_method(method: str, ref: FeatureReference, tests: dict[str, DriftTest],
                   feature: str = "?") -> str:
    """The test actually run for ``method`` on this reference (``auto`` resolved).

    Raises DriftConfigError for an unknown method (listing the known ones) or a numeric-only
    method on a categorical-valued feature.
    """
    if method == sc.METHOD_AUTO:
        slot = (ref.auto_kind, SMALL if ref.rows <= AUTO_MAX_EXACT_ROWS else LARGE)
        for name, candidate in tests.items():
            if slot in candidate.auto and not candidate.companion:
                return name
        raise DriftConfigError(f"no drift test fills auto's slot {slot} for feature {feature!r}")
    test = tests.get(method)
    if test is None or test.companion:
        known = ", ".join(sorted([*(n for n, t in tests.items() if not t.companion), sc.METHOD_AUTO]))
        if test is not None:
            raise DriftConfigError(f"drift method {method!r} for feature {feature!r} runs on every feature "
                                   f"beside its method and cannot be chosen as one; known methods: {known}")
        raise DriftConfigError(f"unknown drift method {method!r} for feature {feature!r}; known: {known}")
    test.check(feature, ref, tests)
    return method
