"""The pages' database source on a real SQLite file: two replicas' snapshots in one database,
read by one of them (its own versions from its compute snapshot), decoded once per computed_at;
and the stale mark of the pages."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.compute.engine import ModelMetrics, ModelSpec, compute_model_metrics
from otel_ml_processor.compute.manager import Snapshot
from otel_ml_processor.compute.persist import dump
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData
from otel_ml_processor.export.http import page_source
from otel_ml_processor.export.pages.database_source import INDEX_FIELDS, DatabaseSource
from otel_ml_processor.export.pages.render import PageOptions, render_index, render_model
from otel_ml_processor.export.pages.source import ComputerSource
from otel_ml_processor.store.database import Database, SnapshotRow

T0 = 1_700_000_000.0


def _pred(model: str, version: str, pid: str) -> PredictionRecord:
    return PredictionRecord(model=model, model_version=version, prediction_id=pid, task="classification", time=T0,
                            features={"x": 1.0}, output_label="1")


def _metrics(shift: float) -> ModelMetrics:
    """Real engine output (drift, histograms, OOD) on a window moved by ``shift``."""
    rng = np.random.default_rng(int(shift * 10))
    n = 200
    ref = ReferenceData(features={"x": rng.normal(size=n), "plan": rng.choice(np.array(["a", "b"], dtype=object), n)},
                        task="classification")
    window = WindowData(
        model="m", model_version="1", task="classification", prediction_ids=np.array([str(i) for i in range(n)], dtype=object),
        timestamps=np.arange(n, dtype=float), features={"x": rng.normal(shift, 1, n), "plan": ref.features["plan"]},
        output_label=np.full(n, "1", dtype=object), output_value=np.full(n, np.nan), score=np.full(n, 0.9),
        probabilities={}, segments={}, label=np.full(n, None, dtype=object))
    spec = ModelSpec()
    return compute_model_metrics(window, prepare_reference(ref, spec), spec)


def test_every_replicas_versions_from_the_database_and_its_own_from_its_snapshot(tmp_path):
    url = f"sqlite:///{tmp_path / 'otel-ml.db'}"
    a, b = Database(url, replica="a"), Database(url, replica="b")
    a.insert_predictions([_pred("alpha", "1", "p1"), _pred("alpha", "2", "p2")], now=T0)
    b.insert_predictions([_pred("beta", "1", "p3")], now=T0)
    m1, m2, m3, mb = _metrics(0.5), _metrics(1.0), _metrics(2.0), _metrics(3.0)
    assert a.save_snapshots([SnapshotRow("alpha", "1", "a", T0 + 1, 0.1, dump(m1)),
                             SnapshotRow("alpha", "2", "a", T0 + 2, 0.2, dump(m2))]) == 2
    # b's own version: in the database as b stored it a cycle ago, and newer in b's compute snapshot
    assert b.save_snapshots([SnapshotRow("beta", "1", "b", T0 + 3, 0.3, dump(ModelMetrics()))]) == 1
    assert b.snapshot_stamps() == {("alpha", "1"): ("a", T0 + 1, 0.1), ("alpha", "2"): ("a", T0 + 2, 0.2),
                                   ("beta", "1"): ("b", T0 + 3, 0.3)}
    local = Snapshot(models={("beta", "1"): mb}, computed_at={("beta", "1"): T0 + 4}, durations={("beta", "1"): 0.4})
    source = DatabaseSource(b, ComputerSource(lambda: local, owner="b"))

    listed = source.models()
    assert [(s.model, s.version, s.owner, s.computed_at, s.compute_seconds) for s in listed] == [
        ("alpha", "2", "a", T0 + 2, 0.2), ("alpha", "1", "a", T0 + 1, 0.1), ("beta", "1", "b", T0 + 4, 0.4)]
    assert listed[2].metrics is mb                     # the local snapshot, not the database's older copy
    # for /, what it shows only: window counts, OOD and drift, exactly as the owner computed them
    for snap, m in ((listed[0], m2), (listed[1], m1)):
        assert {f: getattr(snap.metrics, f) for f in INDEX_FIELDS} == {f: getattr(m, f) for f in INDEX_FIELDS}
        assert snap.metrics.feature_histograms == {} != m.feature_histograms
    assert m1.drift != m2.drift
    opts = PageOptions(now=T0 + 10, stale_after=45.0)     # / of the partial ones is / of the whole ones
    assert render_index(listed, opts) == render_index(
        [replace(listed[0], metrics=m2), replace(listed[1], metrics=m1), listed[2]], opts)
    assert source.keys() == [("alpha", "2"), ("alpha", "1"), ("beta", "1")]
    assert source.decoded == 2

    # A page decodes the whole snapshot, once: repeated loads decode nothing while the owner
    # stored nothing newer, and / then shows the whole one.
    again = source.models()
    assert again[0] is listed[0] and again[1] is listed[1] and again[2].metrics is mb and source.decoded == 2
    whole = source.latest("alpha")
    assert (whole.version, whole.owner, whole.computed_at, whole.metrics == m2, source.decoded) == ("2", "a", T0 + 2, True, 3)
    assert source.latest("alpha", "1").metrics == m1 and source.decoded == 4
    assert source.latest("alpha") is whole and source.latest("alpha", "2") is whole and source.models()[0] is whole
    assert source.latest("beta").metrics is mb and source.latest("beta", "1").metrics is mb
    assert source.latest("nope") is None and source.latest("alpha", "7") is None and source.latest("nope", "1") is None
    assert source.decoded == 4

    # The owner's next cycle: decoded once more, then cached again.
    assert a.save_snapshots([SnapshotRow("alpha", "2", "a", T0 + 5, 0.5, dump(m3))]) == 1
    newer = source.latest("alpha")
    assert (newer.computed_at, newer.metrics == m3, source.decoded) == (T0 + 5, True, 5)
    assert source.latest("alpha", "2") is newer and source.models()[0] is newer and source.decoded == 5

    # A newer version stored by another replica is the model's latest, wherever the older one is computed.
    a.insert_predictions([_pred("beta", "2", "p4")], now=T0 + 6)
    a.save_snapshots([SnapshotRow("beta", "2", "a", T0 + 6, 0.6, dump(m1))])
    assert (source.latest("beta").version, source.latest("beta").owner) == ("2", "a")
    assert source.latest("beta", "1").metrics is mb

    # A snapshot this otel-ml cannot read is left out (logged), not an error of the whole page.
    a.insert_predictions([_pred("gamma", "1", "p5")], now=T0)
    a.save_snapshots([SnapshotRow("gamma", "1", "a", T0, 0.1, '{"$codec": 99, "value": {}}')])
    assert source.latest("gamma") is None and "gamma" not in {s.model for s in source.models()}

    # Retention removed every stored version: only what this replica computes is left.
    assert a.apply_retention(T0 + 1000, retention=10) > 0
    assert [(s.model, s.version) for s in source.models()] == [("beta", "1")] and source.latest("alpha") is None
    a.close()
    b.close()


def test_one_processor_on_sqlite_keeps_its_own_snapshot_as_the_source(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'otel-ml.db'}", replica="solo")
    assert type(page_source(Snapshot, db)) is ComputerSource and type(page_source(Snapshot)) is ComputerSource
    db.close()


def test_a_stale_snapshot_is_marked_with_its_owner_and_age():
    s = ComputerSource(lambda: Snapshot(models={("m", "1"): _metrics(1.0)}, computed_at={("m", "1"): T0},
                                        durations={("m", "1"): 0.1}), owner="replica-a").latest("m")
    fresh = PageOptions(stale_after=45.0, now=T0 + 44)
    old = PageOptions(stale_after=45.0, now=T0 + 600)
    assert 'id="stale"' not in render_model(s, options=fresh)
    page = render_model(s, options=old)
    assert 'id="stale"' in page and "computed 10 min ago" in page and "replica-a, may be down" in page
    assert 'data-owner="replica-a"' in page
    assert 'id="stale"' not in render_model(s, options=PageOptions(now=T0 + 10 ** 6))   # offline: never
    assert 'data-owner="replica-a" data-stale="0"' in render_index([s], fresh)
    index = render_index([s], old)
    assert 'data-owner="replica-a" data-stale="1"' in index and "<th>computed by</th>" in index
    assert "<td>replica-a</td>" in index and '<span class="flag">stale</span>' in index
