"""WindowBuffer against a plain list model of the same rows."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ml_processor.compute.window import (
    QUALITY_MISSING, QUALITY_NAN, QUALITY_OK, LabeledWindow, WindowBuffer, rows_to_window,
)


def row(i, **over):
    r = dict(prediction_id=f"p{i}", timestamp=float(i), features={"x": float(i)}, output_label="1",
             output_value=None, score=0.5, probabilities={}, segments={}, label=None)
    r.update(over)
    return r


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 60)),
    st.tuples(st.just("label"), st.integers(0, 60)),
    st.tuples(st.just("snapshot"), st.just(0)),
    st.tuples(st.just("remove"), st.integers(0, 60)),
    # the bulk append of the ingest path, ids possibly repeated within one call
    st.tuples(st.just("extend"), st.lists(st.integers(0, 60), max_size=8)),
), max_size=120)


def feature_value(i):
    # numbers, then (for some ids) strings that turn the column to str, and missing values
    if i % 7 == 0:
        return None
    return f"s{i}" if i % 11 == 0 else float(i)


def expected_column(values):
    if all(v is None or isinstance(v, float) for v in values):
        return [math.nan if v is None else v for v in values]
    return [None if v is None else (v if isinstance(v, str) else str(int(v))) for v in values]


def same(a, b):
    return all((x is None and y is None) or x == y or (isinstance(x, float) and isinstance(y, float)
               and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)) and len(a) == len(b)


def check(buf, model):
    w = buf.snapshot()
    model = sorted(model, key=lambda m: m["timestamp"])
    assert len(buf) == len(model) == len(w)
    assert w.prediction_ids.tolist() == [m["prediction_id"] for m in model]
    assert w.label.tolist() == [m["label"] for m in model]
    if model:
        assert w.features["x"].tolist() == [m["features"]["x"] for m in model]
    if "s" in w.features:
        assert same(w.features["s"].tolist(), expected_column([m["features"].get("s") for m in model]))


@settings(max_examples=60, deadline=None)
@given(ops, st.integers(1, 12))
def test_buffer_matches_a_list_model(operations, size):
    buf = WindowBuffer("m", "1", "classification", size=size)
    model: list[dict] = []
    def new_row(i):
        feats = {"x": float(i)}
        if i % 2:
            feats["s"] = feature_value(i)
        return row(i, features=feats)

    for op, i in operations:
        if op in ("append", "extend"):
            rows = [new_row(i)] if op == "append" else [new_row(j) for j in i]
            if op == "append":
                buf.append(dict(rows[0]))
            else:
                buf.extend([dict(r) for r in rows])
            for r in rows:
                if all(m["prediction_id"] != r["prediction_id"] for m in model):
                    model.append(r)
                    model = model[-size:]
        elif op == "remove":
            hit = buf.remove(f"p{i}")
            assert hit == any(m["prediction_id"] == f"p{i}" for m in model)
            model = [m for m in model if m["prediction_id"] != f"p{i}"]
        elif op == "label":
            hit = buf.set_label(f"p{i}", str(i % 2))
            want = any(m["prediction_id"] == f"p{i}" for m in model)
            assert hit == want
            for m in model:
                if m["prediction_id"] == f"p{i}":
                    m["label"] = str(i % 2)
        else:
            check(buf, model)
    check(buf, model)


def test_age_limit_and_time_order():
    buf = WindowBuffer("m", "1", "regression", size=10, max_age=5.0)
    for t in (3.0, 1.0, 8.0, 2.0, 9.0):
        buf.append(row(int(t), timestamp=t, output_value=t))
    assert buf.snapshot().timestamps.tolist() == [1.0, 2.0, 3.0, 8.0, 9.0]
    assert buf.evict_older_than(2.5) == 0  # arrival order: the oldest arrival (t=3) is not too old
    w = buf.snapshot(now=10.0)
    assert w.timestamps.tolist() == [8.0, 9.0]
    assert w.output_value.tolist() == [8.0, 9.0]
    # the snapshot freed the too-old arrivals up to the first young one (t=8); t=2 came after it
    assert len(buf) == 3
    assert buf.snapshot().timestamps.tolist() == [2.0, 8.0, 9.0]


def test_column_typing_and_quality():
    rows = [
        row(0, features={"a": 1, "b": True, "c": 1.5}),
        row(1, features={"a": float("nan"), "b": False, "c": "x"}),
        row(2, features={"a": None, "c": 2}),
        row(3, features={"a": 2.5, "b": None, "c": float("inf")}),
    ]
    w = rows_to_window("m", "1", "classification", rows)
    assert w.features["a"].dtype == float and math.isnan(w.features["a"][1]) and w.features["a"][3] == 2.5
    assert w.features["b"].tolist() == ["True", "False", None, None]          # bool is categorical
    assert w.features["c"].tolist() == ["1.5", "x", "2", None]                 # a string turns the column to str
    assert w.feature_quality["a"].tolist() == [QUALITY_OK, QUALITY_NAN, QUALITY_MISSING, QUALITY_OK]
    assert w.feature_quality["c"].tolist() == [QUALITY_OK, QUALITY_OK, QUALITY_OK, QUALITY_NAN]
    assert w.feature_quality["b"].tolist() == [QUALITY_OK, QUALITY_OK, QUALITY_MISSING, QUALITY_MISSING]


def test_long_run_compaction_keeps_columns_aligned():
    buf = WindowBuffer("m", "1", "classification", size=50)
    rng = np.random.default_rng(0)
    for i in range(1000):
        feats = {"x": float(i)}
        if i > 500:
            feats["late"] = float(-i)
        buf.append(row(i, features=feats, probabilities={"1": i / 1000}, segments={"g": f"g{i % 4}"}))
        if rng.uniform() < 0.3:
            buf.set_label(f"p{int(rng.integers(max(0, i - 60), i + 1))}", "0")
    w = buf.snapshot()
    assert w.prediction_ids.tolist() == [f"p{i}" for i in range(950, 1000)]
    assert w.features["x"].tolist() == [float(i) for i in range(950, 1000)]
    assert w.features["late"].tolist() == [float(-i) for i in range(950, 1000)]
    assert w.probabilities["1"].tolist() == [i / 1000 for i in range(950, 1000)]
    assert w.segments["g"].tolist() == [f"g{i % 4}" for i in range(950, 1000)]


def test_ties_in_record_time_are_ordered_by_seq_and_arrival_order_is_kept_on_demand():
    rows = [row(i, timestamp=t, seq=s) for i, (t, s) in enumerate([(2.0, 30), (1.0, 20), (2.0, 10), (1.0, 40)])]
    assert rows_to_window("m", "1", "classification", rows).prediction_ids.tolist() == ["p1", "p3", "p2", "p0"]
    assert rows_to_window("m", "1", "classification", rows, by_time=False).prediction_ids.tolist() == [
        "p2", "p1", "p0", "p3"]


def test_removed_rows_leave_no_trace_after_compaction():
    buf = WindowBuffer("m", "1", "classification", size=4, evict=False)
    rng = np.random.default_rng(1)
    live: list = []
    for i in range(300):
        buf.append(row(i, features={"x": float(i), **({"s": f"v{i}"} if i % 3 == 0 else {})}))
        live.append(i)
        if len(live) > 4:          # remove any live row: holes in the middle, not only at the start
            gone = live.pop(int(rng.integers(0, len(live))))
            assert buf.remove(f"p{gone}") and not buf.remove(f"p{gone}")
        if i % 7 == 0:
            buf.snapshot()
        w = buf.snapshot() if i % 11 == 0 else None
        if w is not None:
            assert w.prediction_ids.tolist() == [f"p{j}" for j in live]
    w = buf.snapshot()
    assert w.prediction_ids.tolist() == [f"p{j}" for j in live] and len(buf) == 4
    assert w.features["x"].tolist() == [float(j) for j in live]
    assert buf.set_label(f"p{live[0]}", "1") and buf.snapshot().label.tolist()[0] == "1"
    assert buf.capacity == 16   # holes were dropped at each compaction: the capacity did not grow


labeled_ops = st.lists(st.one_of(
    st.tuples(st.just("offer"), st.integers(0, 40), st.integers(0, 10), st.integers(0, 4)),
    st.tuples(st.just("label"), st.integers(0, 40), st.just(0), st.just(0)),
    st.tuples(st.just("expire"), st.integers(0, 12), st.integers(0, 12), st.just(0)),
), max_size=80)


@settings(max_examples=80, deadline=None)
@given(labeled_ops, st.integers(1, 6))
def test_labeled_window_keeps_the_largest_keys_as_a_list_model(operations, size):
    """The rows kept are the ``size`` largest (time, seq) offered that were never evicted or expired;
    their labels the last ones given."""
    lw = LabeledWindow("m", "1", "classification", size=size, max_age=5.0, retention=8.0)
    model: dict = {}      # pid -> [time, seq, received_at, label]
    label_count = 0
    for op, i, a, b in operations:
        pid = f"p{i}"
        if op == "offer":
            label_count += 1
            value = f"v{label_count}"
            r = row(i, timestamp=float(a), seq=1000 * a + i, label=value, received_at=float(b))
            kept = lw.offer(r)
            if pid in model:
                model[pid][3] = value
                assert kept
            else:
                key = (float(a), 1000 * a + i)
                smallest = min(((t, s) for t, s, _r, _l in model.values()), default=None)
                wanted = len(model) < size or key > smallest
                assert kept == wanted
                if wanted:
                    model[pid] = [float(a), 1000 * a + i, float(b), value]
                    if len(model) > size:
                        drop = min(model, key=lambda p: (model[p][0], model[p][1]))
                        del model[drop]
        elif op == "label":
            assert lw.set_label(pid, "new") == (pid in model)
            if pid in model:
                model[pid][3] = "new"
        else:
            now = float(i)
            lw.expire(now)
            model = {p: v for p, v in model.items() if v[0] >= now - 5.0 and v[2] >= now - 8.0}
        assert len(lw) == len(model)
    w = lw.snapshot()
    expected = sorted(model, key=lambda p: (model[p][0], model[p][1]))
    assert w.prediction_ids.tolist() == expected
    assert w.label.tolist() == [model[p][3] for p in expected]
