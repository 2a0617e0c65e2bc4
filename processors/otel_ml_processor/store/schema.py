"""The production ML database schema (SQLAlchemy Core; the same for SQLite and PostgreSQL).

Tables:
- ``predictions``: one row per accepted ``ml.prediction`` event, unique by
  ``(model, prediction_id)``. On PostgreSQL the table is partitioned by day of record time and
  made by migration 3 from ``store/partitions.py``'s DDL (unique by ``(model, prediction_id,
  time)``, no primary key); this definition is SQLite's, and the columns of both. ``time`` is the record time (seconds since the epoch),
  ``received_at`` when the processor stored it. ``features``, ``segments``,
  ``probabilities`` and ``attributes`` are JSON objects (already anonymized).
- ``labels``: the latest true label per ``(model, prediction_id)``; ``joined_at`` is null
  while the label waits for its prediction; ``changed_at`` is the database's clock when the
  label was last written or joined, ``changed_by`` the replica that did it (each replica reads
  the labels others joined since its last look, so a label reaches the owner of its model
  wherever it entered).
- ``audit``: ``ml.audit`` events.
- ``model_versions``: one row per stored (model, model_version): its task, its ``owner`` (the
  replica that stored its latest prediction, ``docs/scaling.md``), when that was
  (``stored_at``), how many times the owner changed (``takeovers``), and where its ``first_n``
  reference ends (``reference_cut``: the id of its ``reference_first_n``-th prediction).
- ``model_snapshots``: each model version's last computed metrics (``metrics``: JSON of
  ``compute.persist``), with the replica that computed them and when.
- ``compute_leases`` (PostgreSQL, several replicas): one row per model version, the replica that
  holds its compute (``holder``) until ``expires_at`` (the database's clock), renewed every
  compute interval; ``takeovers`` counts the changes of holder (``compute/leases.py``).
- ``replicas``: each replica's last heartbeat (``seen_at``, the database's clock): the live ones
  share the leases.
- ``schema_version``: the migration level (see ``store/migrations.py``).

Example (reading stored predictions with plain sqlite3)::

    sqlite3 otel-ml.db "select model, prediction_id, features, trace_id from predictions"
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint,
)

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("model", String(255), nullable=False),
    Column("model_version", String(255), nullable=False),
    Column("prediction_id", String(255), nullable=False),
    Column("task", String(32), nullable=False),
    Column("time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("features", Text, nullable=False),
    Column("segments", Text, nullable=False),
    Column("output_label", Text),
    Column("output_value", Float),
    Column("score", Float),
    Column("probabilities", Text, nullable=False),
    Column("attributes", Text, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    UniqueConstraint("model", "prediction_id", name="uq_predictions_model_pid"),
    Index("ix_predictions_window", "model", "model_version", "time"),
    Index("ix_predictions_received", "received_at"),
)

labels = Table(
    "labels", metadata,
    Column("model", String(255), primary_key=True),
    Column("prediction_id", String(255), primary_key=True),
    Column("value_text", Text),
    Column("value_num", Float),
    Column("received_at", Float, nullable=False),
    Column("joined_at", Float),
    Column("changed_at", Float),
    Column("changed_by", String(255)),
    Index("ix_labels_pending", "joined_at", "received_at"),
    Index("ix_labels_changed", "changed_at", "changed_by"),
)

model_versions = Table(
    "model_versions", metadata,
    Column("model", String(255), primary_key=True),
    Column("model_version", String(255), primary_key=True),
    Column("task", String(32), nullable=False),
    Column("owner", String(255)),
    Column("stored_at", Float, nullable=False),
    Column("takeovers", Integer, nullable=False),
    Column("reference_first_n", Integer),
    Column("reference_cut", BigInteger),
)

model_snapshots = Table(
    "model_snapshots", metadata,
    Column("model", String(255), primary_key=True),
    Column("model_version", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("computed_at", Float, nullable=False),
    Column("duration", Float, nullable=False),
    Column("metrics", Text, nullable=False),
)

audit = Table(
    "audit", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("model", String(255), nullable=False),
    Column("model_version", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("actor", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("time", Float, nullable=False),
    Column("audit_id", String(64), nullable=True),   # ml.audit.id; null from older SDKs
    Index("ux_audit_audit_id", "audit_id", unique=True),
)

compute_leases = Table(
    "compute_leases", metadata,
    Column("model", String(255), primary_key=True),
    Column("model_version", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("takeovers", Integer, nullable=False),
)

replicas = Table(
    "replicas", metadata,
    Column("replica", String(255), primary_key=True),
    Column("seen_at", Float, nullable=False),
)

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)
