"""Merged empirical CDFs of a pre-sorted reference and a sorted window (shared by ks, wasserstein).

Instead of scipy's concatenate-sort-and-searchsorted per call, the window's sorted values are
placed among the reference's by one ``searchsorted`` (ties: reference first, as a stable merge),
and the counts of each sample at or below every merged position come from one ``cumsum``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Merged:
    values: np.ndarray      # the merged sorted values (n1 + n2)
    ref_le: np.ndarray      # reference values at or before each merged position
    win_le: np.ndarray      # window values at or before each merged position
    n1: int
    n2: int

    def last_of_ties(self) -> np.ndarray:
        """Mask of the last position of every run of equal values (where the counts are the
        ECDFs' ``searchsorted(..., side="right")`` values)."""
        last = np.empty(self.values.size, dtype=bool)
        np.not_equal(self.values[1:], self.values[:-1], out=last[:-1])
        last[-1] = True
        return last


def merge(ref_sorted: np.ndarray, win_sorted: np.ndarray) -> Merged:
    n1, n2 = ref_sorted.size, win_sorted.size
    n = n1 + n2
    win_pos = np.searchsorted(ref_sorted, win_sorted, side="right") + np.arange(n2)
    is_win = np.zeros(n, dtype=bool)
    is_win[win_pos] = True
    values = np.empty(n, dtype=float)
    values[win_pos] = win_sorted
    values[~is_win] = ref_sorted
    win_le = np.cumsum(is_win)
    ref_le = np.arange(1, n + 1) - win_le
    return Merged(values, ref_le, win_le, n1, n2)
