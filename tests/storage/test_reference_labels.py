"""Database.reference_labels: a first_n reference's joined labels in one query, on SQLite and PostgreSQL."""

from __future__ import annotations

from otel_ml_processor.clean.records import LabelRecord, PredictionRecord
from otel_ml_processor.store.database import Database

T0 = 1_700_000_000.0


def test_reference_labels_are_those_of_the_first_n_predictions_only(db_url):
    db = Database(db_url)
    try:
        db.insert_predictions([PredictionRecord("m", "1", f"p{i}", "regression", T0 + i, {"x": 1.0}, output_value=1.0)
                               for i in range(6)] +
                              [PredictionRecord("m", "2", "q0", "regression", T0, {"x": 1.0}, output_value=1.0)], now=T0)
        # a text label and a number, one of each inside the reference (first 4), others after it or elsewhere
        db.upsert_labels([LabelRecord("m", "p1", "2.5", T0), LabelRecord("m", "p3", 7.25, T0),
                          LabelRecord("m", "p5", 1.0, T0), LabelRecord("m", "q0", 1.0, T0)], now=T0)
        cut = db.reference_cut("m", "1", 4)
        assert cut is not None
        assert db.reference_labels("m", "1", cut) == {"p1": "2.5", "p3": 7.25}
        assert db.reference_labels("m", "1", db.reference_cut("m", "1", 1)) == {}
    finally:
        db.close()
