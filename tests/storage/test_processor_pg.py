"""The real processor on PostgreSQL: PII scan of a ``pg_dump``, ``otel-ml labels import`` and
``otel-ml db export`` (CSV and Parquet) as subprocesses (issue 5, items 2, 3 and 4).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

import otel_ml
from otel_ml import semconv as sc
from otel_ml.api import prediction_attributes
from tests.support import ProcessorProcess, otel_ml_command, sdk_logger_provider, wait_for

pytestmark = pytest.mark.e2e

HASH_KEY = "test-hash-key"   # what ProcessorProcess puts in OTEL_ML_HASH_KEY
USERS = [f"user-{i}-7f3a" for i in range(5)]
EMAILS = [f"person{i}.secret@example.org" for i in range(5)]
PHONES = [f"+44 20 7946 {1000 + i}" for i in range(5)]
N_IMPORT, N_EXPORT = 30, 40
FIRST_N = 10     # the imported models' reference: their labels count from the eleventh prediction on


@pytest.fixture(scope="module")
def processor(tmp_path_factory, pg_cluster):
    tmp = tmp_path_factory.mktemp("processor-pg")
    url = pg_cluster.create_database("processor_pg")
    models = [{"name": m, "reference": {"first_n": FIRST_N}} for m in ("imp3", "imp2")]
    with ProcessorProcess(tmp, db_url=url, models=models) as proc:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        logger = provider.get_logger("pii-test")
        for i, user in enumerate(USERS):
            attrs = prediction_attributes("pii", "1", {"email": EMAILS[i], "contact": PHONES[i], "x": float(i)},
                                          prediction_id=f"pii-{i}", label="1", score=0.9)
            attrs[sc.ENDUSER_ID] = user
            logger.emit(event_name=sc.EVENT_PREDICTION, attributes=attrs)
        rng = np.random.default_rng(5)
        sent = {}
        for model, n in (("imp3", N_IMPORT), ("imp2", N_IMPORT), ("exp", N_EXPORT)):
            rows = []
            for i in range(n):
                x, color, predicted = float(rng.normal()), str(rng.choice(["red", "blue"])), str(rng.integers(0, 2))
                pid = otel_ml.record_prediction(model, "3", {"x": x, "color": color}, label=predicted, score=0.6,
                                                prediction_id=f"{model}-{i}", logger_provider=provider)
                rows.append({"prediction_id": pid, "x": x, "color": color, "predicted": predicted,
                             "truth": str(rng.integers(0, 2))})
            sent[model] = rows
        provider.force_flush()
        for r in sent["exp"][: N_EXPORT // 2]:       # half of "exp" labeled
            otel_ml.record_label("exp", r["prediction_id"], r["truth"], logger_provider=provider)
        provider.shutdown()
        total = len(USERS) + 2 * N_IMPORT + N_EXPORT
        wait_for(lambda: sum(proc.sample("ml_records_received_total", {"model": m, "signal": "prediction"}) or 0
                             for m in ("pii", "imp3", "imp2", "exp")) == total, what="all predictions stored")
        wait_for(lambda: proc.sample("ml_labels_joined_total", {"model": "exp"}) == N_EXPORT // 2, what="exp labels")
        yield proc, pg_cluster, sent


def test_pg_dump_holds_no_protected_value_and_no_hash_key(processor):
    proc, cluster, _sent = processor
    dump = cluster.dump("processor_pg")
    assert "pii-4" in dump and "imp3-0" in dump   # the dump does hold the stored rows
    for raw in USERS + EMAILS + PHONES + [HASH_KEY]:
        assert raw not in dump, raw
        assert raw not in proc.log(), raw
    for user in USERS:
        assert hmac.new(HASH_KEY.encode(), user.encode(), hashlib.sha256).hexdigest() in dump


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(otel_ml_command() + list(args), capture_output=True, text=True, timeout=120)


def test_labels_import_three_and_two_column_files(processor, tmp_path):
    proc, _cluster, sent = processor
    three = tmp_path / "labels3.csv"
    with open(three, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "prediction_id", "value"])
        w.writerows(["imp3", r["prediction_id"], r["truth"]] for r in sent["imp3"])
        w.writerow(["imp3", "never-predicted", "1"])       # waits for a prediction that never comes
    two = tmp_path / "labels2.csv"
    two.write_text("".join(f"{r['prediction_id']},{r['truth']}\n" for r in sent["imp2"]))
    url = f"{proc.http_url}/v1/labels"
    result = _run("labels", "import", str(three), "--url", url)
    assert result.returncode == 0, result.stderr
    assert f"sent {N_IMPORT + 1} labels, 0 rejected" in result.stdout
    result = _run("labels", "import", str(two), "--model", "imp2", "--url", url)
    assert result.returncode == 0, result.stderr
    for model in ("imp3", "imp2"):
        wait_for(lambda: proc.sample("ml_labels_joined_total", {"model": model}) == N_IMPORT,
                 what=f"labels of {model} joined")
        # (the labeled window holds the first_n reference's labeled predictions too)
        wait_for(lambda: proc.sample("ml_window_labeled", {"model": model}) == N_IMPORT,
                 what=f"{model} window labeled")
    assert proc.sample("ml_labels_pending") == 1


def _expected(sent_rows: list) -> dict:
    half = {r["prediction_id"] for r in sent_rows[: N_EXPORT // 2]}
    return {r["prediction_id"]: (r["predicted"], r["x"], r["color"], r["truth"] if r["prediction_id"] in half else None)
            for r in sent_rows}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_db_export_gives_the_joined_rows_sent(processor, tmp_path, fmt):
    proc, _cluster, sent = processor
    out = tmp_path / f"exp.{fmt}"
    result = _run("db", "export", "--config", str(proc.config_path), "--model", "exp", "--since", "1h",
                  "--format", fmt, "--output", str(out))
    assert result.returncode == 0, result.stderr
    if fmt == "csv":
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        got = {r["prediction_id"]: (r["output_label"], float(r["feature.x"]), r["feature.color"], r["label"] or None)
               for r in rows}
    else:
        rows = pq.read_table(out).to_pylist()
        got = {r["prediction_id"]: (r["output_label"], r["feature.x"], r["feature.color"], r["label"]) for r in rows}
    assert len(rows) == N_EXPORT
    assert got == _expected(sent["exp"])
    assert {r["model"] for r in rows} == {"exp"} and {r["model_version"] for r in rows} == {"3"}
    # A model the database does not know: one line naming --model and the models it has (a model
    # with rows, none since --since, gives the header alone: test_database.py tests the cut).
    result = _run("db", "export", "--config", str(proc.config_path), "--model", "nobody", "--format", "csv")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ("otel-ml db export: --model 'nobody': no such model in the database "
                                     "(models: exp, imp2, imp3, pii)")
