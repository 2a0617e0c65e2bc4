"""Keyed lookups must use the (model, prediction_id) indexes on SQLite, whatever the table size.

A row-value ``(model, prediction_id) IN (...)`` made SQLite scan the whole table: label joins
slowed down as the database grew (found by the soak benchmark). The plan, not a timing, is checked.
"""

from sqlalchemy import select

from otel_ml_processor.store import schema
from otel_ml_processor.store.database import Database


def test_keyed_lookups_search_the_index(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    keys = [("churn", f"p{i}") for i in range(700)] + [("fraud", "q1")]
    for table in (schema.predictions, schema.labels):
        for where in db.keys_in(table, keys):
            stmt = select(table.c.model, table.c.prediction_id).where(where)
            sql = str(stmt.compile(db.engine, compile_kwargs={"literal_binds": True}))
            with db.engine.connect() as conn:
                plan = " ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "SEARCH" in plan and f"SCAN {table.name}" not in plan, plan


def test_the_waiting_labels_probe_seeks_the_pending_index(tmp_path):
    from otel_ml_processor.store.database import LABELS_WAITING_PROBE

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    sql = str(LABELS_WAITING_PROBE.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_labels_pending" in plan and "SEARCH" in plan, plan


def test_label_changes_read_a_range_of_the_changed_index_then_keyed_lookups(tmp_path):
    """Each compute cycle reads the labels other replicas changed since the last one: a range of
    the (changed_at, changed_by) index, keyed lookups, never a scan of either table."""
    from otel_ml_processor.store.database import LABEL_CHANGES

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    sql = str(LABEL_CHANGES.compile(db.engine))
    with db.engine.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, (0.0, "me"))]
    assert not any(step.startswith("SCAN") for step in plan), plan
    assert any("labels USING INDEX ix_labels_changed" in step for step in plan), plan
    assert any("predictions USING INDEX" in step and "prediction_id=?" in step for step in plan), plan
