"""Noise floors of the distance scores: what a score reaches by chance on stable data.

A distance score (psi, jensenshannon, wasserstein, the multivariate PCA score) compares two
samples, the reference (``n_ref`` values) and the window (``n_win`` values). When both come from
the same distribution, the score is still above 0, and on small samples it is often above the
configured threshold. The *noise floor at level a* is the score's (1 - a) quantile under that
null hypothesis; the engine compares a score with max(threshold, floor). The floors of a model's
``F`` distance-tested input features are taken at level ``drift.alpha / F`` (Bonferroni: the
chance that any of them is crossed on stable data is at most ``drift.alpha``, whatever the
dependence between features); the prediction's and the multivariate score's at ``drift.alpha``.
docs/metrics.md has the derivations and the simulations that check them.

This module holds what the count-based scores share (psi and jensenshannon depend only on bin or
category counts):

- :func:`window_bucket`: the window size a floor is computed at, ``n`` rounded down to a power
  of two (a smaller window has a larger floor: rounding down errs on the safe side, and a model
  version needs at most ~17 floors per feature over its life);
- :func:`count_statistic_floor`: the null distribution simulated as two independent multinomial
  samples drawn from the reference's fractions (the reference's own sampling error included),
  ``SIMULATIONS`` draws with a fixed seed (deterministic), and its (1 - a) quantile: read directly
  when a >= ``32 / draws``, else extrapolated from that quantile along the scaled chi-square
  whose mean and variance match the simulated ones.

Example::

    import numpy as np
    from otel_ml_processor.stats.noise import count_statistic_floor, window_bucket

    window_bucket(100)                                   # 64
    count_statistic_floor("psi", np.full(10, 0.1), 1000, 64, 1e-4)   # about 1.24
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats

__all__ = ["window_bucket", "count_statistic_floor", "simulate_null", "tail_quantile",
           "SIMULATIONS", "SEED", "EMPTY_BIN_FRACTION", "PSI", "JSD"]

#: Simulated draws per floor (a quarter of it above 100 categories: the cost grows with them).
SIMULATIONS = 4096
#: Seed of every simulation: a floor is a deterministic function of its inputs.
SEED = 20261126
#: Quantiles at levels below ``ANCHOR_EXCEEDANCES / draws`` are extrapolated (see module doc).
ANCHOR_EXCEEDANCES = 32
#: What psi replaces an empty bin's fraction by (DESIGN.md).
EMPTY_BIN_FRACTION = 1e-4
#: The statistics :func:`count_statistic_floor` knows: psi itself, and the Jensen-Shannon
#: *divergence* (base 2; the distance is its square root).
PSI, JSD = "psi", "jsd"
#: Category counts above which fewer draws are made (the null distribution is then close to
#: normal, so the extrapolation is short and accurate: see docs/metrics.md).
MANY_CATEGORIES = 100


def window_bucket(n: int) -> int:
    """``n`` rounded down to a power of two (1 for n <= 1)."""
    return 1 << (max(int(n), 1).bit_length() - 1)


def psi_rows(ref_counts: np.ndarray, win_counts: np.ndarray, n_ref: int, n_win: int) -> np.ndarray:
    """PSI of each row of two count matrices (the psi module's definition, vectorized)."""
    r = ref_counts / n_ref
    c = win_counts / n_win
    r = np.where(r == 0, EMPTY_BIN_FRACTION, r)
    c = np.where(c == 0, EMPTY_BIN_FRACTION, c)
    return np.sum((c - r) * np.log(c / r), axis=-1)


def jsd_rows(ref_frac: np.ndarray, win_frac: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (base 2) of each row pair of fraction matrices."""
    m = (ref_frac + win_frac) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(ref_frac > 0, ref_frac * np.log2(ref_frac / m), 0.0)
        b = np.where(win_frac > 0, win_frac * np.log2(win_frac / m), 0.0)
    return np.maximum(0.5 * np.sum(a + b, axis=-1), 0.0)


#: Largest draws x n drawn value by value (memory: 8 bytes each).
_INDEX_SAMPLING_CELLS = 1 << 22


def _multinomial(rng: np.random.Generator, n: int, p: np.ndarray, draws: int) -> np.ndarray:
    """``draws`` multinomial count vectors of ``n`` values; a small sample is drawn value by
    value (one uniform each, placed by the cumulative fractions), which is cheaper than numpy's
    category-by-category binomials when n is small against the number of categories."""
    k = p.size
    if n <= 2 * k and draws * n <= _INDEX_SAMPLING_CELLS:
        cdf = np.cumsum(p)
        idx = np.minimum(np.searchsorted(cdf, rng.random((draws, n)), side="right"), k - 1)
        idx += (np.arange(draws) * k)[:, None]
        return np.bincount(idx.ravel(), minlength=draws * k).reshape(draws, k)
    return rng.multinomial(n, p, size=draws)


@lru_cache(maxsize=512)
def simulate_null(statistic: str, fractions: tuple, n_ref: int, n_win: int, unseen: float = 0.0) -> np.ndarray:
    """Sorted simulated values of ``statistic`` for two independent samples of the distribution
    ``fractions`` (sizes ``n_ref`` and ``n_win``).

    ``unseen`` (jsd only): the probability mass of categories the reference never showed (its
    Good-Turing estimate, singletons / n_ref). Each value drawn from it is a category of its own,
    absent from the other sample, so it adds half its fraction to the divergence whichever way
    it is split (the two halves of the Jensen-Shannon sum): ``0.5 * (new_ref / n_ref + new_win /
    n_win)`` bits.
    """
    p = np.asarray(fractions, dtype=float)
    if unseen > 0:
        p = np.append(p * (1.0 - unseen), unseen)
    p = p / p.sum()
    draws = SIMULATIONS if p.size <= MANY_CATEGORIES else SIMULATIONS // 4
    rng = np.random.default_rng(SEED)
    rc = _multinomial(rng, n_ref, p, draws)
    wc = _multinomial(rng, n_win, p, draws)
    if statistic == PSI:
        values = psi_rows(rc, wc, n_ref, n_win)
    elif unseen > 0:
        seen = jsd_rows(rc[:, :-1] / n_ref, wc[:, :-1] / n_win)
        values = seen + 0.5 * (rc[:, -1] / n_ref + wc[:, -1] / n_win)
    else:
        values = jsd_rows(rc / n_ref, wc / n_win)
    values = np.sort(values)
    values.setflags(write=False)
    return values


def tail_quantile(sample: np.ndarray, level: float) -> float:
    """The (1 - level) quantile of the distribution ``sample`` (sorted) was drawn from.

    Read from the sample when at least ``ANCHOR_EXCEEDANCES`` draws lie beyond it; further out,
    the quantile at ``a0 = ANCHOR_EXCEEDANCES / draws`` is carried along the scaled chi-square
    c * chi2(nu) whose mean and variance are the sample's: q(level) = q(a0) * chi2.isf(level, nu)
    / chi2.isf(a0, nu). (Anchoring on an empirical quantile keeps the scale right where the
    moments alone misjudge the shape; the chi-square carries the tail's decay.)
    """
    draws = sample.size
    a0 = ANCHOR_EXCEEDANCES / draws
    if level >= a0:
        return float(np.quantile(sample, 1.0 - level))
    q0 = float(np.quantile(sample, 1.0 - a0))
    mean, var = float(np.mean(sample)), float(np.var(sample))
    if not (mean > 0 and var > 0):
        return q0
    nu = 2.0 * mean * mean / var
    return q0 * float(stats.chi2.isf(level, nu) / stats.chi2.isf(a0, nu))


def count_statistic_floor(statistic: str, fractions: np.ndarray, n_ref: int, n_win: int, level: float,
                          unseen: float = 0.0) -> float:
    """(1 - level) quantile of ``statistic`` (``psi`` or ``jsd``) for two independent samples of
    sizes ``n_ref`` and ``n_win`` drawn from ``fractions``.

    The fractions are sorted first (both statistics ignore the order of bins), so features of the
    same shape share one simulation.
    """
    f = np.sort(np.asarray(fractions, dtype=float))[::-1]
    f = f[f > 0]
    if f.size <= 1 and unseen <= 0:
        return 0.0  # one value: both samples are identical, the score is 0
    key = tuple(float(x) for x in f)
    sample = simulate_null(statistic, key, int(n_ref), int(n_win), float(round(unseen, 12)))
    return tail_quantile(sample, level)


def chi2_approximation(statistic: str, k: int, n_ref: int, n_win: int, level: float) -> float:
    """The large-sample value of the floor: PSI ~ (1/n_ref + 1/n_win) chi2(k - 1), and the
    Jensen-Shannon divergence ~ that / (8 ln 2) (both are quadratic in the fraction differences
    near 0). Used to skip the simulation where even 3 times this stays below the threshold."""
    if k <= 1:
        return 0.0
    q = (1.0 / n_ref + 1.0 / n_win) * float(stats.chi2.isf(level, k - 1))
    return q if statistic == PSI else q / (8.0 * math.log(2.0))
