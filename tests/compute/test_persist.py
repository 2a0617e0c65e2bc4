"""The snapshot codec (``compute/persist.py``): what it dumps it loads back, and it reads
snapshots written by an older or newer ModelMetrics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ml_processor.compute.engine import DriftResult, ModelMetrics
from otel_ml_processor.compute.persist import dump, load

names = st.text(min_size=0, max_size=8)
numbers = st.one_of(st.floats(allow_nan=False), st.integers(-10**12, 10**12))


def same(a, b) -> bool:
    """Equality that holds NaN equal to NaN and compares arrays by value and dtype."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and all(
            same(x, y) for x, y in zip(a.tolist(), b.tolist()))
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


metrics = st.builds(
    ModelMetrics,
    window_predictions=st.integers(0, 10**6), window_labeled=st.integers(0, 10**6),
    performance=st.dictionaries(names, st.floats()),
    ood_ratio=st.one_of(st.none(), st.floats(0, 1)),
    ood_ratio_floor=st.one_of(st.none(), st.floats(0, 1)),
    drift=st.lists(st.builds(DriftResult, names, names, st.floats(), st.one_of(st.none(), st.floats()), st.booleans()),
                   max_size=4),
    fairness=st.dictionaries(st.tuples(names, names), st.floats(), max_size=4),
    group_performance=st.dictionaries(st.tuples(names, names, names), numbers, max_size=4),
    group_predictions=st.dictionaries(st.tuples(names, names), st.integers(0, 10**9), max_size=4),
    data_quality=st.dictionaries(st.tuples(names, names), st.integers(0, 10**9), max_size=4),
    cardinality_limited=st.dictionaries(names, st.integers(0, 100), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(metrics)
def test_model_metrics_round_trip(m):
    again = load(dump(m))
    assert same(again, m)


@pytest.mark.parametrize("value", [
    {"$tuple": 1, "plain": "keys that look like tags"},
    {1: "a", (2, "b"): [3.5, None, True]},
    np.array([1.5, np.nan, -np.inf]),
    np.array(["a", None], dtype=object),
    np.int64(7), np.float32(0.25), np.bool_(True),
    (float("inf"), float("-inf")),
], ids=["tag-like-keys", "tuple-keys", "float-array", "object-array", "numpy-int", "numpy-float", "numpy-bool",
        "infinities"])
def test_values_json_cannot_say_round_trip(value):
    text = dump(value)
    json.loads(text)     # strict JSON: no NaN or Infinity tokens
    assert "NaN" not in text and "Infinity" not in text
    again = load(text)
    expected = value.item() if isinstance(value, np.generic) else value
    assert same(again, expected)


@dataclasses.dataclass
class Old:
    a: int = 1
    gone: str = "x"


@dataclasses.dataclass
class New:
    required: object
    a: int = 1
    added: list = dataclasses.field(default_factory=list)


def test_snapshots_of_another_version_of_the_code_load():
    text = dump(Old(a=5, gone="y")).replace('"Old"', '"New"')
    new = load(text, types=[New])
    assert new == New(required=None, a=5, added=[])   # gained fields get defaults (or None); lost ones are ignored
    text = dump({"x": Old(a=2)})
    assert load(text) == {"x": {"a": 2, "gone": "x"}}   # an unknown class: its fields, as a dict


def test_dataclasses_of_other_compute_modules_load_without_being_named():
    """Results the engine holds may be defined anywhere in the compute stage (the window, here)."""
    from otel_ml_processor.compute.window import WindowData, rows_to_window

    rows = [dict(prediction_id=f"p{i}", timestamp=float(i), features={"x": float(i), "c": "a" if i else None},
                 output_label="1", output_value=None, score=0.5, probabilities={"1": 0.5}, segments={"g": "f"},
                 label=None if i else "0") for i in range(3)]
    window = rows_to_window("m", "1", "classification", rows)
    again = load(dump(window))
    assert isinstance(again, WindowData) and same(again, window)


def test_other_versions_of_the_codec_are_refused():
    with pytest.raises(ValueError):
        load(json.dumps({"$codec": 99, "value": 1}))
