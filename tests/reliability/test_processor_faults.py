"""Faults the processor must survive with nothing lost (issue 8), against real processes."""

from __future__ import annotations

import gzip
import random
import signal
import sqlite3
import threading
import time

import grpc
import psutil
import pytest
import requests

from otel_ml import semconv as sc
from tests.support import (
    ProcessorProcess, grpc_export, label, otlp_logs_request, prediction, wait_for,
)

pytestmark = pytest.mark.e2e
RETRYABLE_GRPC = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _stored(db_path) -> tuple:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("select count(*), count(distinct prediction_id) from predictions").fetchone()


def test_sigkill_mid_stream_loses_no_acknowledged_batch_and_stores_nothing_twice(tmp_path):
    proc = ProcessorProcess(tmp_path).start()
    batches = [otlp_logs_request([prediction("crash", f"b{b}-r{r}") for r in range(200)]) for b in range(60)]
    acked: list = []
    lock = threading.Lock()
    todo = list(range(len(batches)))

    def sender():
        while True:
            with lock:
                if not todo:
                    return
                b = todo.pop(0)
            while True:  # an OTLP client retries retryable failures (and a broken connection)
                try:
                    grpc_export(proc.grpc_endpoint, batches[b], timeout=10)
                    with lock:
                        acked.append(b)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() in RETRYABLE_GRPC + (grpc.StatusCode.DEADLINE_EXCEEDED,), exc
                    time.sleep(0.2)

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 15, what="15 acknowledged batches")
    children = psutil.Process(proc.proc.pid).children(recursive=True)
    assert children, "expected ingest worker processes"
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(timeout=30)
    # The ingest workers notice their processor is gone and exit (no orphans left behind).
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
             timeout=30, what="ingest workers exiting after SIGKILL")
    with lock:
        acked_at_kill = set(acked)
    ids_at_kill = {f"b{b}-r{r}" for b in acked_at_kill for r in range(200)}
    with sqlite3.connect(proc.db_path) as conn:
        stored_at_kill = {r[0] for r in conn.execute("select prediction_id from predictions")}
    assert ids_at_kill <= stored_at_kill, "an acknowledged batch is missing after SIGKILL"
    time.sleep(1)
    proc.start()
    for t in threads:
        t.join(timeout=120)
    assert len(acked) == len(batches)
    rows, distinct = _stored(proc.db_path)
    assert rows == distinct == 60 * 200
    assert proc.stop() == 0


def test_backpressure_answers_retryable_busy_when_storage_is_slow(tmp_path):
    max_inflight = 2 * 1024 * 1024
    with ProcessorProcess(tmp_path, extra={"receiver": {"max_inflight_bytes": max_inflight}}) as proc:
        body = otlp_logs_request([prediction("slow", f"warm-{i}") for i in range(10)])
        grpc_export(proc.grpc_endpoint, body)
        rss_before = psutil.Process(proc.proc.pid).memory_info().rss
        # Storage slower than ingest: another writer holds the SQLite write lock.
        blocker = sqlite3.connect(proc.db_path, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        big = [otlp_logs_request([prediction("slow", f"c{c}-{i}", {f"f{j}": float(j) for j in range(20)})
                                  for i in range(1500)]) for c in range(12)]
        codes, answers = [], []

        def post(b):
            r = requests.post(f"{proc.http_url}/v1/logs", data=b, headers={"Content-Type": "application/x-protobuf"}, timeout=60)
            answers.append(r)
            codes.append(r.status_code)

        threads = [threading.Thread(target=post, args=(b,)) for b in big]
        for t in threads:
            t.start()
        wait_for(lambda: codes.count(503) >= 1, timeout=30, what="a 503 busy answer")
        busy = [r for r in answers if r.status_code == 503]
        assert all(r.headers.get("Retry-After") for r in busy)
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(proc.grpc_endpoint, big[0], timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        rss_during = psutil.Process(proc.proc.pid).memory_info().rss
        blocker.rollback()
        blocker.close()
        for t in threads:
            t.join(timeout=60)
        assert set(codes) <= {200, 503}
        # Held bytes stay bounded: growth far below the 12 requests' decoded size.
        assert rss_during - rss_before < 200 * 1024 * 1024
        assert proc.sample("ml_records_rejected_total", {"reason": "busy"}) >= 2
        accepted = codes.count(200) * 1500 + 10
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "slow", "signal": "prediction"}) == accepted,
                 what="the accepted requests stored")


def _fuzz_bodies(rng: random.Random) -> list:
    valid = otlp_logs_request([prediction("fuzz", f"v{i}") for i in range(20)])
    bodies = []
    for i in range(1500):
        kind = i % 6
        if kind == 0:
            bodies.append(("application/x-protobuf", None, rng.randbytes(rng.randint(1, 2000))))
        elif kind == 1:
            cut = valid[: rng.randint(1, len(valid) - 1)]
            bodies.append(("application/x-protobuf", None, cut))
        elif kind == 2:
            junk = rng.choice([b"{", b"[]", b'{"resourceLogs": 7}', b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "x"}]}]}]}',
                               b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', rng.randbytes(50)])
            bodies.append(("application/json", None, junk))
        elif kind == 3:
            bodies.append(("application/x-protobuf", "gzip", gzip.compress(b"\0" * rng.randint(70_000, 300_000))))
        elif kind == 4:
            bodies.append(("application/x-protobuf", "gzip", rng.randbytes(300)))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randint(1, 20)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            bodies.append(("application/x-protobuf", None, bytes(mutated)))
    return bodies


def test_fuzzed_requests_get_client_errors_and_the_process_stays_bounded(tmp_path):
    rng = random.Random(1234)
    with ProcessorProcess(tmp_path, extra={"receiver": {"max_request_bytes": 65536}}) as proc:
        ps = psutil.Process(proc.proc.pid)
        rss_start = ps.memory_info().rss
        session = requests.Session()
        seen = set()
        for ctype, encoding, body in _fuzz_bodies(rng):
            headers = {"Content-Type": ctype, **({"Content-Encoding": encoding} if encoding else {})}
            r = session.post(f"{proc.http_url}/v1/logs", data=body, headers=headers, timeout=30)
            seen.add(r.status_code)
            assert r.status_code in (200, 400, 413), (r.status_code, r.text[:200])
        assert 400 in seen and 413 in seen
        with grpc.insecure_channel(proc.grpc_endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            for _ in range(300):
                try:
                    export(rng.randbytes(rng.randint(1, 500)), timeout=10)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                export(b"\x0a" + b"\xff" * 70_000, timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert proc.proc.poll() is None
        assert ps.memory_info().rss - rss_start < 150 * 1024 * 1024
        grpc_export(proc.grpc_endpoint, otlp_logs_request([prediction("after-fuzz", "ok")]))
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "after-fuzz", "signal": "prediction"}) == 1,
                 what="a valid request after the fuzz run")


def test_cardinality_flood_is_capped_and_counted(tmp_path):
    limits = {"max_models": 20, "max_features_per_model": 30, "max_groups_per_attribute": 10}
    with ProcessorProcess(tmp_path, extra={"limits": limits}) as proc:
        ps = psutil.Process(proc.proc.pid)
        rss_start = ps.memory_info().rss
        sent = 0
        # 1 000 000 distinct names: 10 000 models x 100 distinct feature names each, plus segment values.
        for b in range(100):
            records = [prediction(f"model-{b}-{i}", "p", {f"feat-{b}-{i}-{j}": float(j) for j in range(100)},
                                  **{sc.segment_key("user"): f"user-{b}-{i}"}) for i in range(100)]
            grpc_export(proc.grpc_endpoint, otlp_logs_request(records), timeout=60)
            sent += len(records)
        # One admitted model receives 1 000 distinct feature names.
        records = [prediction("model-0-0", f"q{i}", {f"wide-{i}-{j}": float(j) for j in range(100)}) for i in range(10)]
        grpc_export(proc.grpc_endpoint, otlp_logs_request(records), timeout=60)
        wait_for(lambda: proc.sample("ml_cardinality_limited_total", {"kind": "model"}) > 0, what="model folding")
        time.sleep(1.5)  # one compute cycle
        from prometheus_client.parser import text_string_to_metric_families

        families = list(text_string_to_metric_families(proc.metrics_text()))
        models = {s.labels["model"] for f in families for s in f.samples if "model" in s.labels}
        features = {s.labels["feature"] for f in families for s in f.samples if "feature" in s.labels}
        series = sum(len(f.samples) for f in families)
        assert len(models - {"", sc.OVERFLOW_LABEL_VALUE}) <= limits["max_models"]
        assert sc.OVERFLOW_LABEL_VALUE in models
        assert len(features) <= limits["max_models"] * (limits["max_features_per_model"] + 1)
        assert series < 5000
        assert proc.sample("ml_records_received_total", {"model": sc.OVERFLOW_LABEL_VALUE, "signal": "prediction"}) == sent - 20
        assert proc.sample("ml_cardinality_limited_total", {"kind": "feature"}) > 0
        assert ps.memory_info().rss - rss_start < 400 * 1024 * 1024


def test_label_flood_keeps_a_bounded_waiting_set_oldest_expired_first(tmp_path):
    with ProcessorProcess(tmp_path, extra={"labels": {"pending_max": 1000}}) as proc:
        total = 0
        for b in range(20):
            batch = [{"model": "flood", "prediction_id": f"u{b:02d}-{i:05d}", "value": "1"} for i in range(5000)]
            r = requests.post(f"{proc.http_url}/v1/labels", json=batch, timeout=60)
            assert r.status_code == 200 and r.json()["accepted"] == 5000
            total += 5000
        # Each compute cycle trims the waiting set to pending_max (between cycles it can exceed it by
        # what arrives in one compute.interval).
        wait_for(lambda: proc.sample("ml_labels_expired_total") == total - 1000, what="99 000 labels expired")
        wait_for(lambda: proc.sample("ml_labels_pending") == 1000, what="pending labels capped at 1000")
        with sqlite3.connect(proc.db_path) as conn:
            left = sorted(r[0] for r in conn.execute("select prediction_id from labels"))
        assert left[0].startswith("u19-") and len(left) == 1000   # the newest survive
        # A waiting label still joins when its prediction comes.
        grpc_export(proc.grpc_endpoint, otlp_logs_request([prediction("flood", "u19-04999")]))
        wait_for(lambda: proc.sample("ml_labels_joined_total", {"model": "flood"}) == 1, what="late join")


def test_restart_rebuilds_windows_and_exports_the_same_values(tmp_path):
    """Both windows come back the same: the window (the last 100 after the 50-row reference) and
    the labeled window (the last 100 labeled predictions, most of them out of the window)."""
    models = [{"name": "rs", "reference": {"first_n": 50}, "window": {"size": 100},
               "drift": {"default": {"method": "ks"}}}]
    proc = ProcessorProcess(tmp_path, models=models).start()
    rng = random.Random(5)
    records = [prediction("rs", f"p{i}", {"x": rng.gauss(0 if i < 150 else 1, 1)}, label=str(i % 2)) for i in range(300)]
    records += [label("rs", f"p{i}", str((i // 3) % 2)) for i in range(0, 300, 2)]
    grpc_export(proc.grpc_endpoint, otlp_logs_request(records))
    names = [("ml_performance", {"model": "rs", "metric": "accuracy"}),
             ("ml_drift_score", {"model": "rs", "feature": "x", "method": "ks"}),
             ("ml_drift_pvalue", {"model": "rs", "feature": "x", "method": "ks"}),
             ("ml_window_predictions", {"model": "rs"}), ("ml_window_labeled", {"model": "rs"})]
    wait_for(lambda: proc.sample("ml_window_labeled", {"model": "rs"}) == 100 and proc.sample(*names[1]) is not None,
             what="labels in the labeled window, and drift")
    before = {n: proc.sample(n, lab) for n, lab in names}
    assert before["ml_window_predictions"] == 100
    assert proc.stop() == 0
    proc.start()
    after = {n: proc.sample(n, lab) for n, lab in names}
    assert None not in before.values() and after == before
    assert proc.stop() == 0


def _post(proc, body):
    return requests.post(f"{proc.http_url}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"},
                         timeout=60)


def test_a_killed_ingest_worker_gets_a_retryable_answer_and_the_workers_restart(tmp_path):
    with ProcessorProcess(tmp_path) as proc:
        workers = [c for c in psutil.Process(proc.proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert workers
        workers[0].kill()
        workers[0].wait(timeout=10)
        # The pool notices the dead worker at its next wake-up: requests until then may still be
        # served by the live one. Send until a 503 has come and a later request succeeded.
        codes, retry = [], []
        for i in range(300):
            r = _post(proc, otlp_logs_request([prediction("wk", f"p{i}")]))
            codes.append(r.status_code)
            if r.status_code == 503:
                assert r.headers.get("Retry-After")
                retry.append(i)
            if retry and r.status_code == 200 and i > retry[-1]:
                break
        assert set(codes) <= {200, 503} and retry and codes[-1] == 200, codes
        for i in retry:   # the client's retries are accepted by the restarted workers
            wait_for(lambda: _post(proc, otlp_logs_request([prediction("wk", f"p{i}")])).status_code == 200,
                     what="a retry accepted")
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "wk", "signal": "prediction"}) == len(codes),
                 what="every prediction stored once")
        # The broken pool's surviving worker is ended too: the processor stops cleanly, leaving no process.
        family = [proc.proc.pid] + [c.pid for c in psutil.Process(proc.proc.pid).children(recursive=True)]
        assert proc.stop() == 0
        wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                 for p in family), what="every processor process gone")


def test_storage_locked_past_the_busy_timeout_gets_a_retryable_answer(tmp_path):
    with ProcessorProcess(tmp_path) as proc:
        blocker = sqlite3.connect(proc.db_path, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")     # held past the processor's 10 s busy timeout
        r = _post(proc, otlp_logs_request([prediction("locked", "p1")]))
        blocker.rollback()
        blocker.close()
        assert r.status_code == 503 and r.headers.get("Retry-After")
        assert _post(proc, otlp_logs_request([prediction("locked", "p1")])).status_code == 200
        assert proc.sample("ml_records_received_total", {"model": "locked", "signal": "prediction"}) == 1
