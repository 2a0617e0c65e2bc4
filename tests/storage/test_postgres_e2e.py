"""Processor replicas on one PostgreSQL, the PII scan of its dump, and the data CLIs (issue 5)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import math
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import accuracy_score

import otel_ml
from otel_ml import semconv as sc
from tests.support import ProcessorProcess, otel_ml_command, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e


def _send(proc: ProcessorProcess, model: str, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
    predicted = rng.choice(["yes", "no"], n)
    truth = np.where(rng.random(n) < 0.7, predicted, rng.choice(["yes", "no"], n))
    ids = [otel_ml.record_prediction(model, "1", {"x": float(rng.normal())}, label=str(predicted[i]),
                                     logger_provider=provider) for i in range(n)]
    provider.force_flush()
    for pid, t in zip(ids, truth):
        otel_ml.record_label(model, pid, str(t), logger_provider=provider)
    provider.shutdown()
    return accuracy_score(truth, predicted)


def test_two_replicas_share_one_postgresql_each_owning_its_models(postgres, tmp_path):
    url = postgres.create_database("replicas")
    with ProcessorProcess(tmp_path / "a", db_url=url) as a, ProcessorProcess(tmp_path / "b", db_url=url) as b:
        # As the Collector's loadbalancing exporter would: each model always to the same replica.
        expected = {"churn": _send(a, "churn", 200, 1), "fraud": _send(b, "fraud", 150, 2)}
        for proc, model, n in ((a, "churn", 200), (b, "fraud", 150)):
            wait_for(lambda: proc.sample("ml_window_labeled", {"model": model}) == n, what=f"{model} labels joined")
            acc = wait_for(lambda: proc.sample("ml_performance", {"model": model, "metric": "accuracy"}),
                           what=f"{model} accuracy")
            assert math.isclose(acc, expected[model], rel_tol=1e-9)
        assert a.sample("ml_window_predictions", {"model": "fraud"}) is None
        assert b.sample("ml_window_predictions", {"model": "churn"}) is None
    import sqlalchemy

    with sqlalchemy.create_engine(url).connect() as conn:
        counts = dict(conn.execute(sqlalchemy.text("select model, count(*) from predictions group by model")).all())
    assert counts == {"churn": 200, "fraud": 150}
    # A restarted replica rebuilds its windows from the shared database.
    with ProcessorProcess(tmp_path / "a2", db_url=url) as again:
        assert again.sample("ml_window_labeled", {"model": "churn"}) == 200


def test_pii_never_reaches_postgresql(postgres, tmp_path):
    url = postgres.create_database("pii")
    raw_user, raw_mail, raw_phone = "bob.durand-4410", "bob.durand@example.net", "+1 (415) 555-0199"
    with ProcessorProcess(tmp_path, db_url=url) as proc:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        for i in range(10):
            provider.get_logger("t").emit(event_name=sc.EVENT_PREDICTION, attributes={
                sc.ML_MODEL_NAME: "pii", sc.ML_MODEL_VERSION: "1", sc.ML_PREDICTION_ID: f"p{i}", sc.ML_OUTPUT_LABEL: "1",
                sc.ENDUSER_ID: raw_user, sc.feature_key("email"): raw_mail, sc.feature_key("note"): f"call {raw_phone}",
                sc.feature_key("x"): float(i)})
        provider.shutdown()
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "pii", "signal": "prediction"}) == 10,
                 what="predictions stored")
    dump = postgres.dump("pii")
    assert b"p9" in dump   # the dump does hold the rows
    for raw in (raw_user, raw_mail, raw_phone, "test-hash-key"):
        assert raw.encode() not in dump, raw
    assert hmac.new(b"test-hash-key", raw_user.encode(), hashlib.sha256).hexdigest().encode() in dump


def test_db_export_csv_and_parquet(tmp_path):
    with ProcessorProcess(tmp_path) as proc:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        ids = [otel_ml.record_prediction("exp", "2", {"x": float(i), "plan": "pro"}, label="1", score=0.75,
                                         segments={"region": "eu"}, logger_provider=provider) for i in range(30)]
        otel_ml.record_label("exp", ids[0], "0", logger_provider=provider)
        provider.shutdown()
        wait_for(lambda: proc.sample("ml_window_labeled", {"model": "exp"}) == 1, what="rows stored")
    config = tmp_path / "otel-ml.yaml"
    out_csv, out_parquet = tmp_path / "exp.csv", tmp_path / "exp.parquet"
    for fmt, out in (("csv", out_csv), ("parquet", out_parquet)):
        subprocess.run(otel_ml_command() + ["db", "export", "--config", str(config), "--model", "exp", "--since", "1h",
                                            "--format", fmt, "--output", str(out)], check=True, capture_output=True)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 30 and {r["prediction_id"] for r in rows} == set(ids)
    assert {r["feature.plan"] for r in rows} == {"pro"} and {r["segment.region"] for r in rows} == {"eu"}
    assert [r["label"] for r in rows if r["prediction_id"] == ids[0]] == ["0"]
    table = pq.read_table(out_parquet).to_pylist()
    assert sorted(r["feature.x"] for r in table) == [float(i) for i in range(30)]


def test_labels_import_three_and_two_columns(tmp_path):
    with ProcessorProcess(tmp_path) as proc:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        for i in range(10):
            otel_ml.record_prediction("imp", "1", {"x": 1.0}, label="1", prediction_id=f"p{i}", logger_provider=provider)
        provider.shutdown()
        three, two = tmp_path / "three.csv", tmp_path / "two.csv"
        three.write_text("model,prediction_id,value\n" + "".join(f"imp,p{i},1\n" for i in range(5)))
        two.write_text("".join(f"p{i},0\n" for i in range(5, 10)))
        url = f"{proc.http_url}/v1/labels"
        for args in (["labels", "import", str(three), "--url", url],
                     ["labels", "import", str(two), "--model", "imp", "--url", url]):
            result = subprocess.run(otel_ml_command() + args, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert "sent 5 labels, 0 rejected" in result.stdout
        wait_for(lambda: proc.sample("ml_labels_joined_total", {"model": "imp"}) == 10, what="imported labels joined")
        wait_for(lambda: proc.sample("ml_performance", {"model": "imp", "metric": "accuracy"}) == 0.5, what="accuracy")
        assert yaml.safe_load(proc.config_path.read_text())["storage"]["url"].startswith("sqlite")
