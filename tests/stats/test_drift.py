"""Drift tests against scipy on the same rows; Benjamini-Hochberg against statsmodels; the
registry's resolution and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance
from statsmodels.stats.multitest import multipletests

from otel_ml import semconv as sc
from otel_ml_processor.stats.decisions import bh_qvalues
from otel_ml_processor.stats.registry import (
    CATEGORICAL, NUMERIC, DriftConfigError, FeatureReference, FeatureWindow, builtin_tests, companion_tests,
    resolve_method,
)
from tests.stats.oracle import assert_close, design_pooled_table, float_arrays, scipy_chi2

SETTINGS = settings(max_examples=50, deadline=None)
TESTS = builtin_tests()


def run(method: str, ref_values, win_values, treatment=None):
    ref = FeatureReference.build(np.asarray(ref_values))
    test = TESTS[method]
    state = test.prepare(ref, treatment or test.treatment(ref))
    return test.compute(state, FeatureWindow.build(np.asarray(win_values)))


@SETTINGS
@given(float_arrays(1, 80), float_arrays(1, 80))
def test_ks_matches_scipy(a, b):
    ours = run(sc.METHOD_KS, a, b)
    want = stats.ks_2samp(a, b)
    assert_close(ours.score, want.statistic, "D")
    assert_close(ours.pvalue, want.pvalue, "p")


@pytest.mark.parametrize("n1,n2,decimals", [(12000, 300, 2), (300, 12001, 1), (20000, 20000, 3), (10000, 9999, 2)])
def test_ks_matches_scipy_asymptotic_and_large_exact(n1, n2, decimals):
    rng = np.random.default_rng(n1 + n2)
    a = np.round(rng.normal(size=n1), decimals)
    b = np.round(rng.normal(0.03, 1, size=n2), decimals)
    ours = run(sc.METHOD_KS, a, b)
    want = stats.ks_2samp(a, b)
    assert_close(ours.score, want.statistic, "D")
    assert_close(ours.pvalue, want.pvalue, "p")


@SETTINGS
@given(float_arrays(1, 80), float_arrays(1, 80))
def test_wasserstein_matches_scipy(a, b):
    ours = run(sc.METHOD_WASSERSTEIN, a, b)
    assert_close(ours.score, stats.wasserstein_distance(a, b) / max(np.std(a), 0.001), "wasserstein")
    assert ours.pvalue is None


def design_bins(ref, cur):
    # DESIGN.md's expressions, verbatim
    edges = np.unique(np.quantile(ref, np.linspace(0.1, 0.9, 9)))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    return r, c


@SETTINGS
@given(float_arrays(1, 80), float_arrays(1, 80))
def test_psi_matches_design_expression(a, b):
    r, c = design_bins(a, b)
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    assert_close(run(sc.METHOD_PSI, a, b).score, np.sum((c - r) * np.log(c / r)), "psi")


@SETTINGS
@given(float_arrays(1, 80), float_arrays(1, 80))
def test_jensenshannon_numeric_matches_scipy(a, b):
    r, c = design_bins(a, b)
    assert_close(run(sc.METHOD_JENSENSHANNON, a, b, NUMERIC).score, distance.jensenshannon(r, c, base=2), "js")


cat_arrays = st.builds(
    lambda seed, n, k: np.array([f"v{i}" for i in np.random.default_rng(seed).integers(0, k, n)], dtype=object),
    st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 6))


def oracle_union(a, b):
    cats = sorted(set(a.tolist()) | set(b.tolist()))
    return (np.array([np.sum(a == x) for x in cats], dtype=float),
            np.array([np.sum(b == x) for x in cats], dtype=float))


@SETTINGS
@given(cat_arrays, cat_arrays)
def test_chi2_and_js_categorical_match_scipy(a, b):
    r, c = oracle_union(a, b)
    ours = run(sc.METHOD_CHI2, a, b)
    stat, p = scipy_chi2(design_pooled_table(r, c))
    assert_close(ours.score, stat, "chi2")
    assert_close(ours.pvalue, p, "chi2 p")
    js = run(sc.METHOD_JENSENSHANNON, a, b, CATEGORICAL)
    assert_close(js.score, distance.jensenshannon(r / r.sum(), c / c.sum(), base=2), "js")


# counts of many sizes and sparsity, to exercise the pooling (hypothesis)
count_tables = st.builds(
    lambda seed, k, n_r, n_w, zipf: tuple(np.random.default_rng(seed).multinomial(
        n, (lambda w: w / w.sum())(1.0 / np.arange(1, k + 1) ** zipf)) for n in (n_r, n_w)),
    st.integers(0, 2**32 - 1), st.integers(2, 40), st.integers(5, 2000), st.integers(5, 400),
    st.sampled_from([0.0, 1.0, 2.0]))


@SETTINGS
@given(count_tables)
def test_chi2_pooling_matches_design_and_scipy(counts):
    r, c = (np.asarray(x, dtype=float) for x in counts)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    cats = np.array([f"c{i:02d}" for i in range(r.size)], dtype=object)
    a, b = np.repeat(cats, r.astype(int)), np.repeat(cats, c.astype(int))
    ours = run(sc.METHOD_CHI2, a, b)
    stat, p = scipy_chi2(design_pooled_table(r, c))
    assert_close(ours.score, stat, "chi2")
    assert_close(ours.pvalue, p, "chi2 p")


def test_chi2_pools_only_two_or_more_sparse_categories():
    from otel_ml_processor.stats.chi2 import pool_sparse
    r, c = np.array([500, 300, 3, 2]), np.array([50, 30, 1, 0])
    assert [x.tolist() for x in pool_sparse(r, c)] == [[500, 300, 5], [50, 30, 1]]
    one_sparse = np.array([500, 300, 3]), np.array([50, 30, 1])
    assert [x.tolist() for x in pool_sparse(*one_sparse)] == [[500, 300, 3], [50, 30, 1]]
    # everything sparse: one column left -> statistic 0, p-value 1
    res = run(sc.METHOD_CHI2, np.array(["a", "b", "c"], dtype=object), np.array(["d"], dtype=object))
    assert (res.score, res.pvalue) == (0.0, 1.0)


@SETTINGS
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=60))
def test_bh_matches_statsmodels(p):
    want = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(bh_qvalues(p), want, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(float_arrays(1, 60), float_arrays(1, 60))
def test_chi2_on_numbers_as_categories(a, b):
    a, b = np.round(a), np.round(b)
    cats = np.union1d(a, b)
    r = np.array([np.sum(a == x) for x in cats])
    c = np.array([np.sum(b == x) for x in cats])
    ours = run(sc.METHOD_CHI2, a, b, CATEGORICAL)
    stat, p = scipy_chi2(design_pooled_table(r, c))
    assert_close(ours.score, stat, "chi2")
    assert_close(ours.pvalue, p, "chi2 p")


def test_missing_values_are_left_out():
    a = np.array([1.0, np.nan, 2.0, 3.0, np.inf])
    b = np.array([np.nan, 2.5, 0.5])
    ours = run(sc.METHOD_KS, a, b)
    want = stats.ks_2samp([1.0, 2.0, 3.0], [2.5, 0.5])
    assert_close(ours.score, want.statistic)
    assert_close(ours.pvalue, want.pvalue)
    ref_cat = np.array(["a", None, "b"] * 20, dtype=object)
    cat = run(sc.METHOD_CHI2, ref_cat, np.array([None, "a", "b", "a"] * 10, dtype=object))
    stat, _, _, _ = stats.chi2_contingency([[20, 20], [20, 10]], correction=False)
    assert_close(cat.score, stat)


@pytest.mark.parametrize("build, expected", [
    pytest.param(lambda rng: FeatureReference.build(rng.normal(size=1000)), "ks",
                 id="numeric-up-to-1000-rows-ks"),
    pytest.param(lambda rng: FeatureReference.build(rng.normal(size=1001)), "wasserstein",
                 id="numeric-over-1000-rows-wasserstein"),
    pytest.param(lambda rng: FeatureReference.build(rng.integers(0, 5, 1000).astype(float)), "chi2",
                 id="5-distinct-numbers-are-categorical-up-to-1000-rows-chi2"),
    pytest.param(lambda rng: FeatureReference.build(rng.integers(0, 5, 5000).astype(float)), "jensenshannon",
                 id="5-distinct-numbers-are-categorical-over-1000-rows-jensenshannon"),
    pytest.param(lambda rng: FeatureReference.build(rng.integers(0, 6, 500).astype(float)), "ks",
                 id="6-distinct-numbers-are-numeric-ks"),
    pytest.param(lambda rng: FeatureReference.build(np.array(["a", "b"] * 600, dtype=object)), "jensenshannon",
                 id="strings-over-1000-rows-jensenshannon"),
    pytest.param(lambda rng: FeatureReference.build(rng.normal(size=900), rows=1500), "wasserstein",
                 id="reference-rows-decide-not-present-values"),
])
def test_auto_resolution(build, expected):
    assert resolve_method("auto", build(np.random.default_rng(0)), TESTS) == expected


def test_unknown_method_lists_the_known_ones():
    ref = FeatureReference.build(np.arange(10.0))
    with pytest.raises(DriftConfigError) as err:
        resolve_method("kolmogorov", ref, TESTS, feature="age")
    msg = str(err.value)
    for name in ("auto", "chi2", "jensenshannon", "ks", "psi", "wasserstein", "kolmogorov", "age"):
        assert name in msg


@pytest.mark.parametrize("method", ["ks", "psi", "wasserstein"])
def test_numeric_only_method_on_categorical_feature_is_an_error(method):
    ref = FeatureReference.build(np.array(["a", "b"], dtype=object))
    with pytest.raises(DriftConfigError, match="numeric-only"):
        resolve_method(method, ref, TESTS, feature="plan")
    assert resolve_method("chi2", ref, TESTS) == "chi2"
    assert resolve_method("jensenshannon", ref, TESTS) == "jensenshannon"


def test_records_are_declarative():
    for name, t in TESTS.items():
        assert t.name == name
        assert t.score_kind in ("pvalue", "distance")
        assert t.kinds <= {NUMERIC, CATEGORICAL}
        # a distance test declares its noise floor; a p-value test takes drift.alpha
        assert (t.noise_floor is not None) == (t.score_kind == "distance")
    assert TESTS["ks"].default_threshold == TESTS["chi2"].default_threshold == 0.01   # drift.alpha's default
    assert TESTS["psi"].default_threshold == 0.2
    assert TESTS["wasserstein"].default_threshold == 0.1 and TESTS["jensenshannon"].default_threshold == 0.1
    # every slot of auto is filled exactly once
    slots = [s for t in TESTS.values() if not t.companion for s in t.auto]
    assert sorted(slots) == sorted({(k, size) for k in (NUMERIC, CATEGORICAL) for size in ("small", "large")})


def test_registry_names_no_test():
    # the registry resolves auto from the records' declarations: a renamed test still fills its slot
    import dataclasses
    renamed = {"my_ks" if n == "ks" else n: dataclasses.replace(t, name="my_ks") if n == "ks" else t
               for n, t in TESTS.items()}
    ref = FeatureReference.build(np.random.default_rng(0).normal(size=500))
    assert resolve_method("auto", ref, renamed) == "my_ks"


def test_psi_edges_belong_to_psi():
    ref = FeatureReference.build(np.arange(100.0))
    assert not hasattr(ref, "psi_edges") and not hasattr(ref, "psi_counts")
    bins = TESTS["psi"].prepare(ref, NUMERIC)
    np.testing.assert_array_equal(bins.edges, np.unique(np.quantile(np.arange(100.0), np.linspace(0.1, 0.9, 9))))


def missing_cells(seed: int, n: int, rate: float, categorical: bool) -> np.ndarray:
    """n values with about ``rate`` of them missing (None / NaN / inf for numbers)."""
    rng = np.random.default_rng(seed)
    gone = rng.uniform(size=n) < rate
    if categorical:
        out = np.array(["a", "b"] * n, dtype=object)[:n]
        out[gone] = None
        return out
    v = rng.normal(size=n)
    v[gone] = rng.choice([np.nan, np.inf, -np.inf], size=int(gone.sum()))
    return v


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.integers(1, 400),
       st.sampled_from([0.0, 0.02, 0.3, 1.0]), st.sampled_from([0.0, 0.02, 0.3, 1.0]), st.booleans())
def test_missing_matches_fisher_exact(seed, n_ref, n_win, ref_rate, win_rate, categorical):
    ref_v = missing_cells(seed, n_ref, ref_rate, categorical)
    win_v = missing_cells(seed + 1, n_win, win_rate, categorical)
    is_missing = (lambda v: v is None) if categorical else (lambda v: not np.isfinite(v))
    a, c = sum(map(is_missing, ref_v)), sum(map(is_missing, win_v))
    ours = run(sc.METHOD_MISSING, ref_v, win_v)
    want = stats.fisher_exact([[a, n_ref - a], [c, n_win - c]])
    assert ours.pvalue == pytest.approx(want.pvalue, rel=1e-9, abs=1e-12)
    assert ours.score == pytest.approx(c / n_win, rel=1e-9, abs=1e-12)


def test_missing_of_a_feature_that_never_arrives_is_one():
    ref = FeatureReference.build(np.array([1.0, np.nan] + [2.0] * 98))
    state = TESTS[sc.METHOD_MISSING].prepare(ref, NUMERIC)
    res = TESTS[sc.METHOD_MISSING].compute(state, FeatureWindow(np.zeros(0), rows=50))
    assert res.score == 1.0
    assert res.pvalue == pytest.approx(stats.fisher_exact([[1, 99], [50, 0]]).pvalue, rel=1e-9)


def test_missing_is_a_companion_never_a_method():
    t = TESTS[sc.METHOD_MISSING]
    assert t.companion and t.score_kind == "pvalue" and not t.auto
    assert [c.name for c in companion_tests(TESTS)] == [sc.METHOD_MISSING]
    with pytest.raises(DriftConfigError, match="every feature"):
        resolve_method(sc.METHOD_MISSING, FeatureReference.build(np.arange(10.0)), TESTS, feature="age")


def test_test_modules_import_only_the_leaf_not_the_registry():
    # the registry imports the tests; a test module importing the registry would close a circle
    import ast
    import pathlib

    import otel_ml_processor.stats as pkg

    root = pathlib.Path(pkg.__file__).parent
    for name in TESTS:
        src = (root / f"{name}.py").read_text()
        imported = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
        assert "otel_ml_processor.stats.registry" not in imported, name
        assert "otel_ml_processor.stats.drift_types" in imported, name
    leaf = ast.parse((root / "drift_types.py").read_text())
    assert not {n.module for n in ast.walk(leaf) if isinstance(n, ast.ImportFrom)
                if n.module and n.module.startswith("otel_ml_processor.stats.") and n.module != "otel_ml_processor.stats._codes"}


@SETTINGS
@given(st.integers(1, 200_000), st.integers(1, 200_000), st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_fisher_two_sided_is_scipys_on_large_tables(n_ref, n_win, p_ref, p_win, equal_margins):
    # equal margins make a mirror point exactly as probable as the table: scipy's 1 + 1e-14
    # tolerance includes it, and so must the log-gamma shortcut
    from otel_ml_processor.stats.missing import fisher_two_sided

    n_win = n_ref if equal_margins else n_win
    a, c = round(n_ref * p_ref), round(n_win * p_win)
    want = stats.fisher_exact([[a, n_ref - a], [c, n_win - c]]).pvalue
    assert fisher_two_sided(a, n_ref - a, c, n_win - c) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("table", [(10, 990, 10, 990), (7, 993, 13, 987), (13, 987, 7, 993), (0, 1000, 1000, 0),
                                   (5000, 95000, 5100, 94900), (50, 950, 600, 9400), (1, 0, 0, 1), (0, 5, 0, 7)])
def test_fisher_two_sided_on_ties_and_edges(table):
    from otel_ml_processor.stats.missing import fisher_two_sided

    a, b, c, d = table
    assert fisher_two_sided(*table) == pytest.approx(stats.fisher_exact([[a, b], [c, d]]).pvalue, rel=1e-9, abs=1e-12)
