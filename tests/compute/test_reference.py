"""Reference files (CSV, Parquet), the first-N reference and prepare_reference's config errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otel_ml_processor.compute.engine import ModelSpec
from otel_ml_processor.compute.reference import (
    ReferenceData, ReferenceError, load_reference_file, prepare_reference, reference_from_window,
)
from otel_ml_processor.compute.window import rows_to_window
from otel_ml_processor.stats.registry import DriftConfigError


def write_csv(path, text):
    path.write_text(text)
    return str(path)


def test_csv_typing_and_reserved_columns(tmp_path):
    p = write_csv(tmp_path / "ref.csv", "age,plan,flag,__prediction__,__score__,__label__\n"
                  "40,gold,True,1,0.9,1\n,silver,FALSE,0,0.8,0\n35.5,,true,1,0.6,\n")
    ref = load_reference_file(p, features=["age", "plan", "flag"])
    assert ref.features["age"].dtype == float and np.isnan(ref.features["age"][1])
    assert ref.features["plan"].tolist() == ["gold", "silver", None]
    # booleans in any case are the words the ingest writes for an OTLP bool
    assert ref.features["flag"].tolist() == ["true", "false", "true"]
    assert ref.score.tolist() == [0.9, 0.8, 0.6]
    assert ref.n_rows == 3


def test_column_mismatch_names_the_columns(tmp_path):
    p = write_csv(tmp_path / "ref.csv", "age,zip\n1,2\n")
    with pytest.raises(ReferenceError) as err:
        load_reference_file(p, features=["age", "plan"])
    assert "plan" in str(err.value) and "zip" in str(err.value)
    with pytest.raises(ReferenceError, match="does not exist"):
        load_reference_file(str(tmp_path / "nope.csv"))
    with pytest.raises(ReferenceError, match="no rows"):
        load_reference_file(write_csv(tmp_path / "empty.csv", "age\n"))


def test_parquet(tmp_path):
    path = str(tmp_path / "ref.parquet")
    pq.write_table(pa.table({"age": [1.0, 2.0, None], "plan": ["a", None, "b"], "__label__": ["1", "0", "1"]}), path)
    ref = load_reference_file(path, features=["age", "plan"])
    assert ref.features["age"].dtype == float and np.isnan(ref.features["age"][2])
    assert ref.features["plan"].tolist() == ["a", None, "b"]
    assert ref.label.tolist() == ["1", "0", "1"]


def rows(n):
    rng = np.random.default_rng(0)
    return [dict(prediction_id=str(i), timestamp=float(i), features={"x": float(rng.normal()), "c": f"v{i % 3}"},
                 output_label="1" if i % 2 else "0", output_value=None, score=0.7, probabilities={},
                 segments={}, label="1" if i % 3 else "0") for i in range(n)]


def test_first_n_reference_and_prepared_methods():
    w = rows_to_window("m", "1", "classification", rows(50))
    ref = reference_from_window(w, 20)
    assert ref.n_rows == 20 and ref.prediction.tolist() == w.output_label[:20].tolist()
    prepared = prepare_reference(ref, ModelSpec(positive_label="1", drift_features={"x": ("psi", 0.3)}))
    # a p-value test's threshold is drift.alpha (0.01) unless set
    assert prepared.methods == {"x": ("psi", 0.3), "c": ("chi2", 0.01), "__prediction__": ("chi2", 0.01)}
    assert prepared.calibrator is not None
    alpha = prepare_reference(ref, ModelSpec(drift_alpha=0.05))
    assert alpha.methods["c"] == ("chi2", 0.05)


def test_config_errors_at_prepare():
    ref = reference_from_window(rows_to_window("m", "1", "classification", rows(20)), 20)
    with pytest.raises(DriftConfigError, match="numeric-only"):
        prepare_reference(ref, ModelSpec(drift_features={"c": ("ks", None)}))
    with pytest.raises(DriftConfigError, match="known"):
        prepare_reference(ref, ModelSpec(drift_default_method="nope"))
    with pytest.raises(DriftConfigError, match="multivariate"):
        prepare_reference(ref, ModelSpec(drift_features={"__multivariate__": ("ks", None)}))


def test_feature_cap():
    ref = reference_from_window(rows_to_window("m", "1", "classification", rows(20)), 20)
    prepared = prepare_reference(ref, ModelSpec(max_features=1))
    # the reference's column order decides (here the window's: new columns in sorted order)
    assert list(prepared.features) == ["c"] and prepared.dropped_features == ("x",)


def test_numeric_only_default_falls_back_to_auto_for_categorical_features():
    ref = reference_from_window(rows_to_window("m", "1", "classification", rows(20)), 20)
    prepared = prepare_reference(ref, ModelSpec(drift_default_method="psi", drift_default_threshold=0.3))
    assert prepared.methods == {"x": ("psi", 0.3), "c": ("chi2", 0.01), "__prediction__": ("chi2", 0.01)}


def test_one_type_per_feature_in_files(tmp_path):
    # CSV: True/False words, 19 vs 19.0, text with spaces, symbols and non-ASCII kept as is
    p = write_csv(tmp_path / "ref.csv", "smoker,age,city,flag01,__prediction__\n"
                  "True,19,  New York ,1,True\nFalse,19.0,Zürich €,0,False\nTRUE,20,São Paulo,1,True\n")
    ref = load_reference_file(p)
    assert ref.features["smoker"].tolist() == ["true", "false", "true"]
    assert ref.features["age"].tolist() == [19.0, 19.0, 20.0]
    assert ref.features["city"].tolist() == ["  New York ", "Zürich €", "São Paulo"]
    assert ref.features["flag01"].tolist() == [1.0, 0.0, 1.0]       # 0/1 stays a number
    assert ref.prediction.tolist() == ["true", "false", "true"]
    # Parquet: the same values as typed columns read the same way
    path = str(tmp_path / "ref.parquet")
    pq.write_table(pa.table({"smoker": [True, False, True], "age": [19, 19, 20], "city": ["  New York ", "Zürich €", "São Paulo"],
                             "flag01": [1, 0, 1], "__prediction__": [True, False, True]}), path)
    pref = load_reference_file(path)
    for name in ("smoker", "age", "city", "flag01"):
        assert pref.features[name].tolist() == ref.features[name].tolist(), name
    assert pref.prediction.tolist() == ref.prediction.tolist()


def test_prepared_state_and_cached_floors():
    rng = np.random.default_rng(2)
    data = ReferenceData(features={"x": rng.normal(size=3000), "y": rng.normal(size=3000),
                                   "c": np.array(["a", "b", "c"] * 1000, dtype=object)})
    prepared = prepare_reference(data, ModelSpec())
    x = prepared.features["x"]
    assert x.method == "wasserstein" and x.state.values is x.ref.sorted
    # Bonferroni: the three distance-tested features share drift.alpha
    assert all(abs(f.level - 0.01 / 3) < 1e-15 for f in prepared.features.values())
    t100 = x.effective_threshold(100)
    assert t100 > 0.1 and x.effective_threshold(127) == t100 and list(x.floors) == [64]
    assert x.effective_threshold(100_000) == 0.1           # the configured threshold dominates
    assert prepared.features["c"].method == "jensenshannon"
