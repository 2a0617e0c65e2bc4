"""One type per feature: how values are read (clean/values.py), and the ingest reading live values
as the reference file's types (clean/kinds.py ``declare``)."""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml import semconv as sc
from otel_ml_processor.clean.kinds import FeatureKinds
from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.clean.values import (
    BOOLEAN, NUMBER, TEXT, UNREADABLE, column_type, file_column, read_column, read_value,
)


@pytest.mark.parametrize("kind, value, want", [
    (NUMBER, 19, 19.0), (NUMBER, 19.0, 19.0), (NUMBER, " 19.0 ", 19.0), (NUMBER, True, 1.0),
    (NUMBER, "true", 1.0), (NUMBER, "FALSE", 0.0), (NUMBER, "abc", UNREADABLE), (NUMBER, None, None),
    (BOOLEAN, True, "true"), (BOOLEAN, "True", "true"), (BOOLEAN, " TRUE ", "true"), (BOOLEAN, "false", "false"),
    (BOOLEAN, 1, "true"), (BOOLEAN, 0.0, "false"), (BOOLEAN, "1", "true"), (BOOLEAN, 2, UNREADABLE),
    (BOOLEAN, "maybe", UNREADABLE),
    (TEXT, "  New York ", "  New York "), (TEXT, "Zürich €/½", "Zürich €/½"), (TEXT, 19, "19"), (TEXT, 19.0, "19"),
    (TEXT, 19.5, "19.5"), (TEXT, False, "false"),
])
def test_read_value(kind, value, want):
    got = read_value(kind, value)
    assert got is want if want is UNREADABLE or want is None else (got == want and type(got) is type(want))


def test_file_columns_and_their_types():
    assert file_column(["True", "False", "", "TRUE"], from_text=True).tolist() == ["true", "false", None, "true"]
    assert file_column(["1", "0", "True"], from_text=True).tolist() == ["true", "false", "true"]
    assert file_column(["19", "19.0", ""], from_text=True).dtype == float
    assert file_column([True, None, False], from_text=False).tolist() == ["true", None, "false"]
    assert file_column([19, 20], from_text=False).tolist() == [19.0, 20.0]
    assert column_type(np.array([1.0, 0.0])) == NUMBER
    assert column_type(np.array(["true", None, "false"], dtype=object)) == BOOLEAN
    assert column_type(np.array(["true", "maybe"], dtype=object)) == TEXT


def test_read_column_reads_each_distinct_value_once():
    values, bad = read_column(BOOLEAN, np.array(["true", "True", "1", "maybe", None], dtype=object))
    assert values.tolist() == ["true", "true", "true", None, None] and bad.tolist() == [False, False, False, True, False]
    values, bad = read_column(NUMBER, np.array(["19", "x", None, "false"], dtype=object))
    assert np.array_equal(values, [19.0, np.nan, np.nan, 0.0], equal_nan=True) and bad.tolist() == [False, True, False, False]


def record(features: dict) -> PredictionRecord:
    return PredictionRecord(model="m", model_version="1", prediction_id="p", task="classification", time=0.0,
                            features=dict(features), output_label="1", output_value=None, score=None,
                            probabilities={}, segments={}, extra={})


def test_declared_types_read_live_values_and_count_mismatches():
    issues = []
    kinds = FeatureKinds(lambda model, feature, issue: issues.append((feature, issue)))
    kinds.declare("m", {"age": NUMBER, "vip": BOOLEAN, "zip": TEXT})
    # an OTLP bool reaches cleaning as "true"; a number for a text feature; a string for a number
    r = record({"age": "19", "vip": "true", "zip": 1234.0})
    kinds.check(r)
    assert r.features == {"age": 19.0, "vip": "true", "zip": "1234"} and issues == []
    r = record({"age": "forty", "vip": "maybe", "zip": "01234"})
    kinds.check(r)
    assert r.features == {"age": None, "vip": None, "zip": "01234"}
    assert issues == [("age", sc.ISSUE_TYPE_MISMATCH), ("vip", sc.ISSUE_TYPE_MISMATCH)]
    # the first live value no longer decides: numbers keep arriving after a bad first value
    r = record({"age": 30.0, "vip": 1.0, "zip": "x"})
    kinds.check(r)
    assert r.features == {"age": 30.0, "vip": "true", "zip": "x"}
    # a batch with a boolean feature is checked value by value; one without can pass at once
    assert not kinds.accept("m", ("age", "vip", "zip"), (float, str, str))
    kinds.declare("n", {"age": NUMBER, "zip": TEXT})
    assert kinds.accept("n", ("age", "zip"), (float, str))
    assert not kinds.accept("n", ("age", "zip"), (str, str))


def test_undeclared_models_keep_the_first_kind_rule():
    issues = []
    kinds = FeatureKinds(lambda model, feature, issue: issues.append((feature, issue)))
    kinds.check(record({"x": 1.0}))
    r = record({"x": "a"})
    kinds.check(r)
    assert r.features == {"x": None} and issues == [("x", sc.ISSUE_TYPE_CHANGED)]
