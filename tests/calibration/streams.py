"""Seeded prediction streams for the end-to-end calibration test: stable ones (every row drawn from
the distribution of the model's reference) and changed ones (one named change after the reference).

A row is a binary classifier's prediction (``positive_label`` "1"):
- inputs of several shapes (``tests/stats/stable.py``): ``income`` normal and ``income_2``
  correlated with it (r = 0.8, so the multivariate score has a correlation to lose), ``amount``
  log-normal, ``visits`` Poisson and ``items`` negative-binomial integer counts (sent as OTLP
  ints), ``plan`` 5 levels and ``region`` 40 Zipf levels (spaces, symbols, non-ASCII), ``member``
  an OTLP bool; with ``high_cardinality``, ``merchant`` of 300 Zipf levels; ``amount`` is missing
  (no attribute; an empty cell in a reference file) in 5 % of rows and ``plan`` in 2 %, in the
  reference as after it (MISSING);
- the prediction is "1" for 30 % of rows in every group of ``segment`` (7 groups, the smallest 3 %
  of rows), whatever the inputs;
- its score (confidence of the predicted class) is 0.5 + 0.5 Beta(4, 1), mean 0.9, and the
  prediction is right with exactly that probability: accuracy about 0.9 and calibrated scores;
- the label is the true class.

Example::

    rows = stable(np.random.default_rng(1), 500)
    rows = changed(np.random.default_rng(2), 500, "out_of_range")
    rows.features["income"][:3], rows.predicted[:3], rows.labels[:3]
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from otel_ml import semconv as sc
from tests.stats.stable import draw

POSITIVE = "1"
SELECTION_RATE = 0.3
GROUPS = np.array([f"g{i}" for i in range(7)], dtype=object)
GROUP_SHARES = np.array([0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03])
SEGMENT = "segment"
#: the changed streams, each named for what it changes (and the alert it must raise)
CHANGES = {
    "numeric_shift": "income +1 sd, amount x2, visits +2 (a few numeric features)",
    "category_mix": "region's 40 levels drawn in the reverse order of frequency",
    "out_of_range": "income 10x its usual value on 40 % of rows",
    "selection_drop": "group g0 selected 5 % of the time instead of 30 %",
    "accuracy_drop": "predictions right 60 % of the time, scores unchanged",
    "prediction_shift": "the positive class predicted 60 % of the time instead of 30 %",
    "correlation_break": "income_2 drawn independently of income (same marginal)",
    "confidence_drop": "scores (and, calibrated, correctness) fall to a mean of 0.6",
    "missing_values": "region missing (no attribute) in 30 % of rows, never in the reference",
    # multi-class (task "multiclass"): the inputs move to where the model is unsure
    "covariate_shift": "multi-class: income and income_2 drawn near the classes' common boundary (sd 0.15 "
                       "instead of 1): accuracy 0.89 -> 0.56, the model's probabilities still calibrated",
}
#: the multi-class model's classes, and the sharpness of its (calibrated) probabilities
CLASSES = ("ant", "bee", "cat")
MULTICLASS_SCALE = 4.0
#: each feature's share of rows without a value, in the reference and in a stable stream alike
MISSING = {"amount": 0.05, "plan": 0.02}
#: the missing_values change: this feature goes this empty
MISSING_CHANGE = ("region", 0.3)


#: region's levels are named in their order of frequency: the mix change swaps the i-th most frequent
#: with the i-th least frequent
_REGION_LEVELS = sorted(set(draw("cat40", np.random.default_rng(0), 100_000)))
_REVERSED_REGION = dict(zip(_REGION_LEVELS, _REGION_LEVELS[::-1]))


@dataclass
class Rows:
    features: dict            # name -> list of Python values (float, int, str, bool)
    predicted: list           # "1" / "0" (a class for multi-class; None for regression)
    scores: list              # confidence of the predicted class (None for regression)
    labels: list              # the true class, "1" / "0" (a class; a float for regression)
    segments: list            # group of each row
    probabilities: dict = field(default_factory=dict)   # multi-class: class -> P(class) per row
    values: list = field(default_factory=list)          # regression: the predicted value per row

    def __len__(self) -> int:
        return len(self.predicted)


def _columns(rng: np.random.Generator, n: int, high_cardinality: bool, change: str) -> dict:
    z = rng.normal(0.0, 1.0, n)
    z2 = rng.normal(0.0, 1.0, n) if change == "correlation_break" else 0.8 * z + 0.6 * rng.normal(0.0, 1.0, n)
    income = 10.0 + 2.0 * z
    cols = {
        "income": income + (2.0 if change == "numeric_shift" else 0.0),
        "income_2": 10.0 + 2.0 * z2,
        "amount": draw("skewed", rng, n) * (2.0 if change == "numeric_shift" else 1.0),
        "visits": draw("counts", rng, n).astype(int) + (2 if change == "numeric_shift" else 0),
        "items": draw("overdispersed", rng, n).astype(int),
        "plan": draw("cat5", rng, n),
        "region": draw("cat40", rng, n),
        "member": rng.random(n) < 0.4,
    }
    if change == "category_mix":
        cols["region"] = np.array([_REVERSED_REGION[v] for v in cols["region"]], dtype=object)
    if change == "out_of_range":
        cols["income"] = np.where(rng.random(n) < 0.4, 10.0 * cols["income"], cols["income"])
    if high_cardinality:
        cols["merchant"] = draw("high_cardinality", rng, n)
    return cols


def generate(rng: np.random.Generator, n: int, high_cardinality: bool = False, change: str = "") -> Rows:
    """``n`` rows of the stable stream, or of the changed one named ``change`` (a key of CHANGES)."""
    if change and change not in CHANGES:
        raise ValueError(f"unknown change {change!r}")
    cols = _columns(rng, n, high_cardinality, change)
    groups = GROUPS[rng.choice(len(GROUPS), n, p=GROUP_SHARES)]
    rate = np.full(n, SELECTION_RATE)
    if change == "selection_drop":
        rate[groups == "g0"] = 0.05
    if change == "prediction_shift":
        rate[:] = 0.6
    predicted = rng.random(n) < rate
    score = 0.5 + 0.5 * rng.beta(4.0, 1.0, n)
    if change == "confidence_drop":
        score = 0.5 + 0.5 * rng.beta(1.0, 4.0, n)
    right = rng.random(n) < (0.6 if change == "accuracy_drop" else score)
    truth = np.where(right, predicted, ~predicted)
    features = {name: values.tolist() for name, values in cols.items()}
    gone = dict(MISSING, **dict([MISSING_CHANGE] if change == "missing_values" else []))
    for name, share in gone.items():
        for i in np.flatnonzero(rng.random(n) < share).tolist():
            features[name][i] = None
    return Rows(features=features, predicted=["1" if p else "0" for p in predicted], scores=score.tolist(),
                labels=["1" if t else "0" for t in truth], segments=groups.tolist())


def _missing(rng: np.random.Generator, features: dict, n: int) -> dict:
    for name, share in MISSING.items():
        if name in features:
            for i in np.flatnonzero(rng.random(n) < share).tolist():
                features[name][i] = None
    return features


def multiclass(rng: np.random.Generator, n: int, change: str = "") -> Rows:
    """A 3-class model on the binary stream's inputs (its missing values included): its
    probabilities are softmax(4 x (z1, z2, -z1 - z2)) of the standardized income and income_2, the
    prediction their argmax and the true class drawn from them (calibrated; accuracy about 0.89).
    ``covariate_shift``: z1, z2 drawn with sd 0.15, where the three classes are nearly as likely."""
    sd = 0.15 if change == "covariate_shift" else 1.0
    z = rng.normal(0.0, sd, (n, 2))
    logits = MULTICLASS_SCALE * np.column_stack([z[:, 0], z[:, 1], -z[:, 0] - z[:, 1]])
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    classes = np.array(CLASSES, dtype=object)
    predicted = classes[probs.argmax(axis=1)]
    truth = classes[(rng.random(n)[:, None] > probs.cumsum(axis=1)).sum(axis=1).clip(0, len(CLASSES) - 1)]
    features = {"income": (10.0 + 2.0 * z[:, 0]).tolist(), "income_2": (10.0 + 2.0 * z[:, 1]).tolist(),
                "amount": draw("skewed", rng, n).tolist(), "plan": draw("cat5", rng, n).tolist()}
    return Rows(features=_missing(rng, features, n), predicted=predicted.tolist(), scores=probs.max(axis=1).tolist(),
                labels=truth.tolist(), segments=GROUPS[rng.choice(len(GROUPS), n, p=GROUP_SHARES)].tolist(),
                probabilities={c: probs[:, k].tolist() for k, c in enumerate(CLASSES)})


def regression(rng: np.random.Generator, n: int) -> Rows:
    """A regression model: income, income_2 (correlated), amount and plan as inputs, its prediction
    3 z + 1 of the standardized income, the truth that plus noise growing with |z| (twice as large
    on plan's most frequent level): what DLE estimates."""
    z = rng.normal(0.0, 1.0, n)
    z2 = 0.8 * z + 0.6 * rng.normal(0.0, 1.0, n)
    plan = draw("cat5", rng, n)
    pred = 3.0 * z + 1.0
    noise = rng.normal(0.0, 1.0, n) * (1.0 + np.abs(z)) * np.where(plan == plan[0], 2.0, 1.0)
    features = {"income": (10.0 + 2.0 * z).tolist(), "income_2": (10.0 + 2.0 * z2).tolist(),
                "amount": draw("skewed", rng, n).tolist(), "plan": plan.tolist()}
    return Rows(features=_missing(rng, features, n), predicted=[None] * n, scores=[None] * n,
                labels=(pred + noise).tolist(), segments=GROUPS[rng.choice(len(GROUPS), n, p=GROUP_SHARES)].tolist(),
                values=pred.tolist())


def stable(rng: np.random.Generator, n: int, high_cardinality: bool = False) -> Rows:
    return generate(rng, n, high_cardinality)


def changed(rng: np.random.Generator, n: int, change: str) -> Rows:
    return generate(rng, n, change=change)


def write_reference(path: Path, rows: Rows) -> Path:
    """A reference CSV: one column per feature (booleans written True / False, counts as integers, a
    missing value as an empty cell) and the reserved columns __prediction__, __score__ and
    __label__ (a regression model's: __prediction__ and __label__), plus a multi-class model's
    __probability_<class>__ columns."""
    names = list(rows.features)
    classes = list(rows.probabilities)
    regression = bool(rows.values)
    reserved = ([sc.REFERENCE_PREDICTION_COLUMN, sc.REFERENCE_LABEL_COLUMN] if regression else
                [sc.REFERENCE_PREDICTION_COLUMN, sc.REFERENCE_SCORE_COLUMN, sc.REFERENCE_LABEL_COLUMN])
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(names + reserved + [sc.reference_probability_column(c) for c in classes])
        for i in range(len(rows)):
            head = [rows.features[k][i] for k in names]
            if regression:
                out.writerow(head + [repr(rows.values[i]), repr(rows.labels[i])])
            else:
                out.writerow(head + [rows.predicted[i], repr(rows.scores[i]), rows.labels[i]]
                             + [repr(rows.probabilities[c][i]) for c in classes])
    return path
