"""Distinct values and counts of a column, fast for object (str) arrays.

``np.unique`` on an object array sorts Python strings (slow for 100 000 rows); a dict pass
assigns codes in one linear step and only the few distinct values are sorted.
"""

from __future__ import annotations

import numpy as np


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, code of each value) — like ``np.unique(values, return_inverse=True)``."""
    v = np.asarray(values)
    if v.dtype != object:
        uniq, inv = np.unique(v, return_inverse=True)
        return uniq, inv.reshape(-1)
    items = v.tolist()
    # distinct values in order of appearance, then each item's code by a C-level lookup
    keys = list(dict.fromkeys(items))
    table = {k: i for i, k in enumerate(keys)}
    first = np.fromiter(map(table.__getitem__, items), dtype=np.intp, count=v.size)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    uniq = np.empty(len(keys), dtype=object)
    uniq[:] = [keys[i] for i in order]
    remap = np.empty(len(keys), dtype=np.intp)
    remap[order] = np.arange(len(keys))
    return uniq, remap[first] if v.size else first


def value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, their counts) — like ``np.unique(values, return_counts=True)``."""
    v = np.asarray(values)
    if v.dtype != object:
        return np.unique(v, return_counts=True)
    uniq, codes = factorize(v)
    return uniq, np.bincount(codes, minlength=uniq.size)
