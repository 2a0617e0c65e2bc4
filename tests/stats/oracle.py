"""Shared helpers of the statistics tests: tolerance and hypothesis strategies."""

from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import strategies as st
from scipy import stats

REL, ABS = 1e-9, 1e-12


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


def assert_close(a: float, b: float, what: str = "") -> None:
    assert close(float(a), float(b)), f"{what}: {a!r} != oracle {b!r}"


def oracle(fn, *args, **kwargs):
    """The oracle's value, or None when it raises or returns a non-finite number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = fn(*args, **kwargs)
        except ValueError:
            return None
    v = float(v)
    return v if math.isfinite(v) else None


def assert_matches(ours: dict, key: str, expected) -> None:
    if expected is None:
        assert key not in ours, f"{key} should be absent, got {ours.get(key)!r}"
    else:
        assert key in ours, f"{key} missing, oracle gives {expected!r}"
        assert_close(ours[key], expected, key)
    for v in ours.values():
        assert math.isfinite(v)


# float samples with many ties (rounded) and a range of sizes, including tiny ones
def float_arrays(min_size: int = 0, max_size: int = 60) -> st.SearchStrategy:
    return st.builds(
        lambda seed, n, decimals, shift: np.round(np.random.default_rng(seed).normal(shift, 1.0, n), decimals),
        st.integers(0, 2**32 - 1), st.integers(min_size, max_size), st.sampled_from([0, 1, 3, 12]),
        st.sampled_from([0.0, 0.3, 2.0]),
    )


def design_pooled_table(r, c):
    """DESIGN.md's pooling, written out: categories whose smaller expected count is below 5 are
    summed into one last column when at least two are."""
    n_r, n_w = r.sum(), c.sum()
    sparse = [i for i in range(r.size) if (r[i] + c[i]) * min(n_r, n_w) / (n_r + n_w) < 5]
    if len(sparse) < 2:
        return [list(r), list(c)]
    dense = [i for i in range(r.size) if i not in sparse]
    return [[r[i] for i in dense] + [sum(r[i] for i in sparse)], [c[i] for i in dense] + [sum(c[i] for i in sparse)]]


def scipy_chi2(table):
    if len(table[0]) == 1:
        return 0.0, 1.0     # DESIGN: a table left with one column
    stat, p, _, _ = stats.chi2_contingency(table, correction=False)
    return stat, p
