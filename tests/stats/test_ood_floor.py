"""The OOD floor (``ml_ood_ratio_floor``, docs/metrics.md "OOD floor"): its parts against
independent computations, and the decision ``ml_ood_ratio > ml_ood_ratio_floor`` on stable data.

The statistical test draws >= 2 000 stable windows fresh from one generating distribution (a
300-level Zipf feature, a 40-level and a 5-level categorical, normal, log-normal and integer-count
numeric features), each against its own fresh 1 000-row reference (the reference's sampling error
is part of the rate), at window sizes from 100 to 10 000 rows, and passes when the binomial 99 %
lower bound of the rate of ``ratio > floor`` is <= ``drift.alpha`` (as tests/stats does for the
drift decisions). The floor comes from the processor's functions; the OOD ratio from a plain
numpy rule written here. A companion test shows the same rule catches a modest real change.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from otel_ml_processor.stats.ood import (
    categorical_unseen,
    numeric_ood,
    numeric_unseen,
    ood_ratio_floor,
    stable_ood_bound,
)
from tests.stats.oracle import assert_close
from tests.stats.stable import _CAT5, _CAT40, _HIGH, draw, lower_bound

ALPHA = 0.01
EVALUATIONS = 2000
SETTINGS = settings(max_examples=40, deadline=None)


# -- the parts, against independent computations -------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(0, 30), min_size=0, max_size=200))
def test_categorical_unseen_is_good_turing_with_estys_variance(values):
    counts = Counter(values)
    n = len(values)
    p, var = categorical_unseen(np.array(list(counts.values()), dtype=np.int64))
    if n == 0:
        assert (p, var) == (0.0, 0.0)
        return
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    assert_close(p, n1 / n, "N1 / n")
    assert_close(var, max(n1 + 2 * n2 - n1 ** 2 / n, 0.0) / n ** 2, "Esty's variance")


def _leave_one_value_out(values: list[float], margin: float) -> int:
    """Reference values that are OOD against the reference without their value (a plain loop
    over the distinct values, with the processor's OOD rule on what is left)."""
    count = 0
    for x in set(values):
        rest = [v for v in values if v != x]
        if not rest:
            return len(values)
        if numeric_ood(np.array([x]), min(rest), max(rest), margin)[0]:
            count += values.count(x)
    return count


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 80), st.sampled_from([0.0, 0.1, 0.5]),
       st.sampled_from(["normal", "integers", "constant"]))
def test_numeric_unseen_is_the_capped_leave_one_value_out_count(seed, n, margin, shape):
    rng = np.random.default_rng(seed)
    v = {"normal": np.round(rng.standard_cauchy(n), 2), "integers": rng.poisson(2.0, n).astype(float),
         "constant": np.full(n, 3.0)}[shape]
    p, var = numeric_unseen(np.sort(v), margin)
    cap = 2.0 / (n + 1)
    expected = cap if margin == 0 else min(_leave_one_value_out(v.tolist(), margin) / n, cap)
    assert_close(p, expected, "p")
    assert_close(var, expected / n, "variance")


@SETTINGS
@given(st.lists(st.tuples(st.floats(0, 0.2), st.floats(0, 1e-3)), max_size=8), st.sampled_from([0.01, 0.05, 0.2]))
def test_stable_ood_bound_is_the_sum_plus_z_standard_errors(parts, alpha):
    expected = min(1.0, sum(p for p, _ in parts) + stats.norm.ppf(1 - alpha / 2) * np.sqrt(sum(v for _, v in parts)))
    assert_close(stable_ood_bound(parts, alpha), expected, "p+")


@SETTINGS
@given(st.integers(1, 20000), st.floats(0, 1), st.sampled_from([0.01, 0.05, 0.001]))
def test_floor_is_the_binomial_quantile(n, p, alpha):
    floor = ood_ratio_floor(n, p, alpha)
    assert_close(floor, stats.binom.ppf(1 - alpha / 2, n, p) / n, "binom.ppf / n")
    # the smallest k with P(Binomial(n, p) <= k) >= 1 - alpha/2, by the cdf
    k = round(floor * n)
    assert stats.binom.cdf(k, n, p) >= 1 - alpha / 2 - 1e-12
    assert k == 0 or stats.binom.cdf(k - 1, n, p) < 1 - alpha / 2 + 1e-12


def test_worked_example():
    # reference: categories a x5, b, c (seen once), d x2 -> N1 = 2, N2 = 1, n = 9
    p, var = categorical_unseen(np.array([5, 1, 1, 2]))
    assert (p, var) == (2 / 9, (2 + 2 - 4 / 9) / 81)
    # 0..99 with margin 0.1: 0 is inside [1, 99] widened by 9.8, 99 inside [0, 98] widened: no value is OOD
    assert numeric_unseen(np.arange(100.0), 0.1) == (0.0, 0.0)
    p_up = p + stats.norm.ppf(0.995) * np.sqrt(var)
    assert_close(stable_ood_bound([(p, var), (0.0, 0.0)], ALPHA), p_up)
    assert ood_ratio_floor(400, p_up, ALPHA) == stats.binom.ppf(0.995, 400, p_up) / 400


# -- the decision on stable data ---------------------------------------------------------------------
#: feature -> category probabilities (categorical) or a numeric shape
CATEGORICAL = {"merchant": _HIGH, "region": _CAT40, "plan": _CAT5}
NUMERIC = {"income": "normal", "amount": "skewed", "visits": "counts", "items": "overdispersed"}
WINDOWS = (100, 300, 1000, 3000, 10000)
REFERENCE = 1000


def _codes(p: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(p), rng.random(n), side="right"), p.size - 1)


def floor_crossings(seed: int, margin: float, evaluations: int = EVALUATIONS,
                    out_of_range: float = 0.0) -> tuple[int, int, dict]:
    """(windows with ratio > floor, windows, mean ratio and floor per window size). One fresh
    reference per window (independent evaluations). ``out_of_range``: the share of window rows
    whose ``income`` is 10x its usual value (a real change)."""
    rng = np.random.default_rng(seed)
    hits, seen = 0, {n: [0.0, 0.0, 0] for n in WINDOWS}
    for e in range(evaluations):
        n = WINDOWS[e % len(WINDOWS)]
        parts, ood = [], np.zeros(n, dtype=bool)
        for p in CATEGORICAL.values():
            counts = np.bincount(_codes(p, rng, REFERENCE), minlength=p.size)
            parts.append(categorical_unseen(counts[counts > 0]))
            ood |= counts[_codes(p, rng, n)] == 0           # a level the reference never had
        for name, shape in NUMERIC.items():
            ref = np.sort(draw(shape, rng, REFERENCE))
            parts.append(numeric_unseen(ref, margin))
            win = draw(shape, rng, n)
            if name == "income" and out_of_range:
                win[: int(out_of_range * n)] *= 10.0
            w = margin * (ref[-1] - ref[0])
            ood |= (win < ref[0] - w) | (win > ref[-1] + w)
        ratio = np.count_nonzero(ood) / n
        floor = ood_ratio_floor(n, stable_ood_bound(parts, ALPHA), ALPHA)
        hits += ratio > floor
        s = seen[n]
        s[0], s[1], s[2] = s[0] + ratio, s[1] + floor, s[2] + 1
    return hits, evaluations, {n: (round(float(r) / k, 4), round(float(f) / k, 4)) for n, (r, f, k) in seen.items()}


@pytest.mark.parametrize("margin", [0.1, 0.0], ids=["margin0.1", "margin0"])
def test_stable_windows_stay_under_the_floor(margin):
    hits, total, by_size = floor_crossings(21 if margin else 22, margin)
    print(f"\nOOD floor, ood.margin {margin}: ratio > floor in {hits}/{total} = {hits / total:.4f}; "
          f"(mean ratio, mean floor) by window size {by_size}")
    assert total >= 2000
    assert lower_bound(hits, total) <= ALPHA, (hits, total, by_size)
    # the stable ratio is close to the shipped 10 % threshold at every size (a 100-row window is
    # above it about a quarter of the time): the test is about the floor, not a trivially low ratio
    assert all(ratio > 0.06 for ratio, _ in by_size.values()), by_size


def test_the_floor_lets_a_real_change_through():
    # 15 % of rows with income 10x: caught in nearly every window of 1 000 rows and more
    # (the stable share is ~9 %, its floor ~12-16 %); at 100 rows the floor is higher (~26 %)
    hits, total, by_size = floor_crossings(23, 0.1, evaluations=200, out_of_range=0.15)
    caught = {n: r > f for n, (r, f) in by_size.items()}
    assert caught[1000] and caught[3000] and caught[10000], by_size
    assert hits >= 0.5 * total, (hits, total, by_size)
