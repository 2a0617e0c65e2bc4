"""The noise-floor machinery: its vectorized statistics against scipy, its tail estimate against
brute force, and the closed-form pieces against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from otel_ml_processor.stats import noise
from otel_ml_processor.stats.psi import psi_value
from otel_ml_processor.stats.wasserstein import ecdf_spread
from tests.stats.oracle import assert_close

SETTINGS = settings(max_examples=40, deadline=None)

counts = st.builds(
    lambda seed, k, n_r, n_w: (np.random.default_rng(seed).multinomial(n_r, np.full(k, 1 / k), size=3),
                               np.random.default_rng(seed + 1).multinomial(n_w, np.full(k, 1 / k), size=3)),
    st.integers(0, 2**31), st.integers(2, 30), st.integers(1, 500), st.integers(1, 200))


@SETTINGS
@given(counts)
def test_vectorized_psi_and_jsd_match_the_tests_and_scipy(c):
    rc, wc = c
    n_r, n_w = int(rc[0].sum()), int(wc[0].sum())
    psi = noise.psi_rows(rc, wc, n_r, n_w)
    jsd = noise.jsd_rows(rc / n_r, wc / n_w)
    for i in range(rc.shape[0]):
        assert_close(psi[i], psi_value(rc[i], wc[i]), "psi")
        assert_close(np.sqrt(jsd[i]), distance.jensenshannon(rc[i] / n_r, wc[i] / n_w, base=2), "js")


@pytest.mark.parametrize("nu, level", [(3, 1e-3), (9, 1e-4), (40, 2e-4)])
def test_tail_quantile_extrapolates_a_chi_square(nu, level):
    sample = np.sort(0.01 * stats.chi2.rvs(nu, size=noise.SIMULATIONS, random_state=nu))
    want = 0.01 * stats.chi2.isf(level, nu)
    assert noise.tail_quantile(sample, level) == pytest.approx(want, rel=0.12)
    # inside the sample it is the empirical quantile
    assert noise.tail_quantile(sample, 0.05) == np.quantile(sample, 0.95)


@pytest.mark.parametrize("fractions, n_ref, n_win", [
    (np.full(10, 0.1), 2000, 128),
    ((lambda w: w / w.sum())(1.0 / np.arange(1, 41) ** 1.1), 5000, 256),
])
def test_count_floor_against_brute_force(fractions, n_ref, n_win):
    level = 1e-3
    floor = noise.count_statistic_floor(noise.JSD, fractions, n_ref, n_win, level)
    rng = np.random.default_rng(7)
    draws = 200_000
    rc = rng.multinomial(n_ref, fractions, size=draws)
    wc = rng.multinomial(n_win, fractions, size=draws)
    truth = np.quantile(noise.jsd_rows(rc / n_ref, wc / n_win), 1 - level)
    assert floor == pytest.approx(truth, rel=0.15)
    # deterministic: the same inputs give the same floor
    assert noise.count_statistic_floor(noise.JSD, fractions, n_ref, n_win, level) == floor


def test_unseen_categories_raise_the_floor():
    f = np.full(50, 0.02)
    assert noise.count_statistic_floor(noise.JSD, f, 1000, 128, 1e-3, unseen=0.05) > \
        noise.count_statistic_floor(noise.JSD, f, 1000, 128, 1e-3)


def test_window_bucket_and_single_category():
    assert [noise.window_bucket(n) for n in (0, 1, 2, 3, 100, 128, 129, 10000)] == [1, 1, 2, 2, 64, 128, 128, 8192]
    assert noise.count_statistic_floor(noise.PSI, np.array([1.0]), 100, 10, 1e-3) == 0.0


@SETTINGS
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=200))
def test_ecdf_spread_is_the_integral(values):
    x = np.sort(np.asarray(values))
    n = x.size
    f = np.arange(1, n) / n
    assert_close(ecdf_spread(x), float(np.sum(np.sqrt(f * (1 - f)) * np.diff(x))), "spread")
