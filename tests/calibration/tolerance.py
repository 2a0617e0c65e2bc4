"""The calibration test's tolerance: how far above 1 % a stable model's rate may look before the
test says the promise is broken, when the evaluations of one model are correlated.

The independent units are the models (each has its own reference and its own rows). With X_m the
share of model m's evaluations in which a condition was true, the X_m are independent, in
[0, 1], and of mean at most p (= 1 %) when the promise holds. Hoeffding (1963, eq. 2.1):

    P(mean of M such X >= x) <= exp(-M KL(x || p))     for x > p

whatever the dependence between the evaluations of one model (a model whose conditions are all
true or all false is the worst case, and the bound covers it). KL is the divergence between
Bernoulli(x) and Bernoulli(p).

Example::

    hoeffding_tail(0.05, 100)      # 0.016: a 5 % mean over 100 models is unlikely at 1 %, not enough to fail
    detectable_rate(100)           # 0.065: the mean rate at which the bound reaches 0.001
"""

from __future__ import annotations

import math

PROMISE = 0.01          # about 1 % of evaluations (DESIGN.md, "Decisions")
FAIL_BELOW = 0.001      # the chance that a calibrated pipeline fails one alert's check


def kl(x: float, p: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(x) from Bernoulli(p), in nats."""
    out = x * math.log(x / p) if x > 0 else 0.0
    return out + ((1 - x) * math.log((1 - x) / (1 - p)) if x < 1 else 0.0)


def hoeffding_tail(mean: float, units: int, p: float = PROMISE) -> float:
    """Bound on P(mean of ``units`` independent [0, 1] variables of mean p >= ``mean``)."""
    return 1.0 if mean <= p else math.exp(-units * kl(mean, p))


def detectable_rate(units: int, p: float = PROMISE, fail_below: float = FAIL_BELOW) -> float:
    """The smallest mean rate that ``units`` models tell apart from ``p`` (bound = ``fail_below``)."""
    lo, hi = p, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if hoeffding_tail(mid, units, p) <= fail_below else (mid, hi)
    return hi
