"""How drift scores become decisions (DESIGN.md "Statistics", drift "detected").

- p-value tests (ks, chi2): the p-values of a model version's input features are adjusted
  together by Benjamini-Hochberg, :func:`bh_qvalues` = ``scipy.stats.false_discovery_control(p,
  method="bh")``; a feature is detected when q < its threshold (default ``drift.alpha``). The
  prediction is tested on its own (q = p). On stable data (every null true) BH's false-discovery
  rate is the chance of any detection, so that chance stays at most alpha for independent
  features (Benjamini-Hochberg 1995; under positive dependence too, Benjamini-Yekutieli 2001).
- distance tests (psi, jensenshannon, wasserstein) and the multivariate score: detected when
  score >= max(threshold, noise floor), the floor taken at :func:`family_level` = alpha / F for
  the model's F distance-tested input features (Bonferroni: any dependence), at alpha for the
  prediction and the multivariate score (:mod:`.noise`).

Example::

    from otel_ml_processor.stats.decisions import bh_qvalues, family_level

    bh_qvalues([0.01, 0.04, 0.03, 0.5])       # [0.04, 0.0533, 0.0533, 0.5]
    family_level(0.01, 50)                     # 0.0002
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["bh_qvalues", "family_level", "DEFAULT_ALPHA"]

#: ``drift.alpha``'s default: a pager needs a small rate (the alerts' ``for:`` adds persistence).
DEFAULT_ALPHA = 0.01


def bh_qvalues(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p
    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=float)


def family_level(alpha: float, members: int) -> float:
    """The level of each of ``members`` tests whose any-detection chance must stay <= alpha."""
    return alpha / max(int(members), 1)
