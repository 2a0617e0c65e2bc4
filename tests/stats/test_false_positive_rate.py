"""The decision rules on stable data: the chance that a model's drift is detected in one
evaluation stays at most ``drift.alpha`` (DESIGN.md "Decisions").

Each test draws >= 2 000 stable windows fresh from the generating distribution of every feature,
against references that are themselves fresh draws (the reference's own sampling error is part
of the rate), at window sizes from ~100 rows to a full window, and counts the evaluations in
which anything of the family was detected. It passes when the binomial 99 %
lower bound of that rate is <= alpha; the rate itself is printed (run with ``-s``) and reported
in BENCHMARKS.md. A companion test shows the same rules do detect a shift, so the rates cannot
pass by detecting nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from otel_ml_processor.compute.engine import ModelSpec
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.stats.decisions import bh_qvalues
from otel_ml_processor.stats.multivariate import PCAReconstruction
from otel_ml_processor.stats.registry import FeatureWindow
from tests.stats.stable import draw, lower_bound

ALPHA = 0.01
EVALUATIONS = 2016


@pytest.fixture(autouse=True)
def one_blas_thread():
    # thousands of small matrix products: BLAS threads only contend on a busy 2-core machine
    with threadpool_limits(1):
        yield


def family_rate(shapes: dict, ref_rows, window_sizes, seed: int, spec: ModelSpec, shift: dict | None = None,
                windows_per_reference: int = 1, evaluations: int = EVALUATIONS):
    """(evaluations with any detection, evaluations, per-feature detections) of one family.

    ``shapes``: feature -> shape; each reference gets one window size (cycled) and
    ``windows_per_reference`` windows; ``shift``: feature -> added to the window's values.

    Windows of one reference are not independent evaluations (a reference that happens to be
    unusual makes its windows detect together, most of all when the window is larger than the
    reference), so the binomial bound is only right with one window per reference; where the
    references' floors are costly to compute, a few windows share one, and the rates stay far
    below alpha.
    """
    rng = np.random.default_rng(seed)
    hits, per_feature, total = 0, dict.fromkeys(shapes, 0), 0
    for r in range(evaluations // windows_per_reference):
        n_ref = ref_rows[r % len(ref_rows)]
        n_win = window_sizes[r % len(window_sizes)]
        data = ReferenceData(features={f: draw(s, rng, n_ref) for f, s in shapes.items()})
        prepared = prepare_reference(data, spec)
        features = list(prepared.features.values())
        for _ in range(windows_per_reference):
            pvals, detected = [], []
            for pf in features:
                values = draw(shapes[pf.name], rng, n_win)
                if shift and pf.name in shift:
                    values = values + shift[pf.name]
                res = pf.test.compute(pf.state, FeatureWindow.build(values))
                if pf.is_pvalue:
                    pvals.append((pf, res.pvalue))
                elif res.score >= pf.effective_threshold(n_win):
                    detected.append(pf.name)
            if pvals:
                q = bh_qvalues([p for _, p in pvals])
                detected += [pf.name for (pf, _), qi in zip(pvals, q) if qi < pf.threshold]
            hits += bool(detected)
            total += 1
            for f in detected:
                per_feature[f] += 1
    return hits, total, per_feature


def check_rate(hits: int, total: int, per_feature: dict, what: str) -> None:
    print(f"\n{what}: any-detection rate {hits}/{total} = {hits / total:.4f}; per feature {per_feature}")
    assert total >= 2000
    assert lower_bound(hits, total) <= ALPHA, (what, hits, total, per_feature)


PVALUE_FAMILY = {"n1": "normal", "n2": "normal", "s1": "skewed", "s2": "skewed", "c1": "counts",
                 "c2": "overdispersed", "k5": "cat5", "k40": "cat40", "hc": "high_cardinality",
                 "n3": "normal"}
DISTANCE_FAMILY = {"n1": "normal", "n2": "normal", "s1": "skewed", "c1": "counts", "c2": "overdispersed",
                   "k5": "cat5", "k40": "cat40", "hc": "high_cardinality"}


def test_pvalue_features_with_bh():
    # references of <= 1000 rows: auto picks ks (numeric) and chi2 (categorical, sparse cells pooled)
    spec = ModelSpec(drift_alpha=ALPHA)
    hits, total, per = family_rate(PVALUE_FAMILY, [1000, 500], [100, 250, 100, 1000, 250, 3000], 11, spec)
    check_rate(hits, total, per, "p-value family (ks, chi2) with BH")


def test_distance_features_with_floors():
    # references of > 1000 rows: auto picks wasserstein (numeric) and jensenshannon (categorical)
    spec = ModelSpec(drift_alpha=ALPHA)
    hits, total, per = family_rate(DISTANCE_FAMILY, [1500, 5000], [100, 300, 100, 1000, 300, 10000], 12, spec,
                                   windows_per_reference=21)
    check_rate(hits, total, per, "distance family (wasserstein, jensenshannon) with floors")


@pytest.mark.parametrize("method", ["psi", "jensenshannon"])
def test_binned_numeric_features_with_floors(method):
    # psi and jensenshannon on the reference's decile bins
    spec = ModelSpec(drift_alpha=ALPHA, drift_default_method=method)
    shapes = {"n1": "normal", "n2": "normal", "s1": "skewed", "c1": "counts", "c2": "overdispersed"}
    hits, total, per = family_rate(shapes, [1500, 5000], [100, 300, 1000, 10000], 13, spec, windows_per_reference=6)
    check_rate(hits, total, per, f"{method} family (numeric, decile bins) with floors")


def test_multivariate_score_with_floor():
    rng = np.random.default_rng(14)
    d = 20
    loadings = rng.normal(0, 1, (3, d))          # three latent factors: correlated features

    def rows(n):
        x = rng.normal(size=(n, 3)) @ loadings + rng.normal(0, 1, (n, d))
        x[:, :4] = np.exp(x[:, :4] / 3)           # some skewed columns
        return x

    hits, total, per_reference = 0, 0, 4
    for r in range(EVALUATIONS // per_reference):
        model = PCAReconstruction.fit(rows((1000, 5000)[r % 2]))
        n_win = (100, 300, 1000, 5000)[r % 4]
        threshold = max(1.1, model.noise_floor(n_win, ALPHA))
        # the windows of this reference at once: errors of all rows, then each window's mean
        errors = model.errors(rows(n_win * per_reference)).reshape(per_reference, n_win)
        scores = errors.mean(axis=1) / model.baseline_mean_error
        hits += int(np.count_nonzero(scores >= threshold))
        total += per_reference
    check_rate(hits, total, {}, "multivariate PCA score with floor")


@pytest.mark.parametrize("family, ref_rows, windows, spec", [
    (PVALUE_FAMILY, [1000], [1000], ModelSpec(drift_alpha=ALPHA)),
    (DISTANCE_FAMILY, [5000], [1000], ModelSpec(drift_alpha=ALPHA)),
], ids=["pvalue", "distance"])
def test_the_same_rules_detect_a_shift(family, ref_rows, windows, spec):
    # half a standard deviation (the normal shape's sd is 2) on two features: detected every time
    hits, total, per = family_rate(family, ref_rows, windows, 15, spec, shift={"n1": 1.0, "n2": 1.0},
                                   windows_per_reference=5, evaluations=20)
    assert hits == total and per["n1"] == per["n2"] == total
