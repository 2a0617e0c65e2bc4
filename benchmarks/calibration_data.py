"""The data of the drift calibration (numpy only: the Evidently script imports it in its own
virtual environment). 55 inputs in the shape issue 11 describes: 20 normal, 10 log-normal,
10 Poisson and 10 negative-binomial numeric features, and categorical ones of 5, 10, 20, 40 and
300 (Zipf) levels.

Example::

    import numpy as np
    from calibration_data import columns

    cols = columns(np.random.default_rng(0), 1000, {"normal00": 0.5})   # feature -> values
"""

from __future__ import annotations

import numpy as np

LEVELS = (5, 10, 20, 40, 300)


def columns(rng: np.random.Generator, n: int, shift: dict) -> dict:
    """``n`` rows of every feature; ``shift``: feature -> added to that (normal) feature."""
    out = {}
    for i in range(20):
        out[f"normal{i:02d}"] = rng.normal(0, 1, n) + shift.get(f"normal{i:02d}", 0.0)
    for i in range(10):
        out[f"lognormal{i}"] = rng.lognormal(0, 1, n)
        out[f"poisson{i}"] = rng.poisson(3, n).astype(float)
        out[f"negbin{i}"] = rng.negative_binomial(2, 0.25, n).astype(float)
    for k in LEVELS:
        w = 1.0 / np.arange(1, k + 1) ** (0.8 if k > 100 else 1.1)
        names = np.array([f"c{k}-{j}" for j in range(k)], dtype=object)
        out[f"cat{k}"] = names[rng.choice(k, n, p=w / w.sum())]
    return out


STABLE_CELLS = [(ref, win) for ref in (1000, 5000) for win in (100, 1000, 10000)]
SHIFTED_CELLS = [(ref, win, size, count) for ref in (1000, 5000) for win in (1000, 10000)
                 for size in (0.1, 0.2, 0.5) for count in (1, 2, 5)]
