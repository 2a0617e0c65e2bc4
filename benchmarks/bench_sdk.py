"""SDK cost: whole-process CPU per prediction, request-path latency, and rows shipped per second.

The model: scikit-learn ``LogisticRegression`` (10 features) ``predict_proba``, one row per call
or 1000 rows per call. Every figure of CPU is a whole process's own accounting (user + system,
all threads, start-up and exit flush included, read from ``wait4``) for a child process that
makes N calls; the cost per call is the slope between a short and a long run, so start-up,
imports and the exit flush cancel out. Three kinds of child, run in turn:

- ``bare``: the model alone;
- ``otel-ml``: the OpenTelemetry SDK configured as ``opentelemetry-instrument`` does (OTLP/gRPC
  exporters for spans, metrics and logs, batch processors) plus ``MLInstrumentor`` with its
  defaults (SQLite buffer, OTLP/gRPC sender): per call one ``ml.predict`` span, the duration,
  count and score metrics, one ``ml.prediction`` record per row;
- ``plain``: the same SDK set-up, and the app makes the same signals itself with the plain SDK:
  a span around the call, one LogRecord per row with the same attributes (through the SDK's
  BatchLogRecordProcessor and OTLP exporter), the same three metric instruments.

Every exporter sends real OTLP/gRPC to a null sink (a separate process that answers OK). The
batch processors' queues are made large enough that nothing is dropped.

    PYTHONPATH=. python benchmarks/bench_sdk.py                 # everything below
    PYTHONPATH=. python benchmarks/bench_sdk.py cpu --runs 5    # CPU per call / per row
    PYTHONPATH=. python benchmarks/bench_sdk.py latency         # request-path p50 / p90
    PYTHONPATH=. python benchmarks/bench_sdk.py throughput      # rows encoded and shipped per second
    PYTHONPATH=.:processors python benchmarks/bench_sdk.py deliver   # every row reaches a real processor
    PYTHONPATH=. python benchmarks/bench_sdk.py threads --tree ../main  # CPU by thread, this tree and others

Prints medians and ranges over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 10


# -- the null OTLP sink ------------------------------------------------------------------------------
def run_sink(port_file: str) -> None:
    """Answer every OTLP/gRPC export (logs, traces, metrics) with an empty OK, reading nothing."""
    from concurrent import futures

    import grpc

    def ok(body: bytes, context) -> bytes:
        return b""

    handlers = [grpc.method_handlers_generic_handler(f"opentelemetry.proto.collector.{s}.v1.{n}Service", {
        "Export": grpc.unary_unary_rpc_method_handler(ok)}) for s, n in (("logs", "Logs"), ("trace", "Trace"),
                                                                           ("metrics", "Metrics"))]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=handlers,
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(port_file).write_text(str(port))
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


class Sink:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="otel-ml-bench-")
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, __file__, "_sink", port_file])
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file) or not Path(port_file).read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the null sink did not start")
            time.sleep(0.05)
        self.port = int(Path(port_file).read_text())

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'processors'}:{os.environ.get('PYTHONPATH', '')}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_SERVICE_NAME": "bench", "OTEL_BSP_MAX_QUEUE_SIZE": "1000000",
                "OTEL_BLRP_MAX_QUEUE_SIZE": "1000000", "OTEL_ML_LOGGING_BRIDGE": "false",
                "OTEL_ML_BUFFER_PATH": os.path.join(self.dir, f"buffer-{time.monotonic_ns()}.db")}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# -- children ------------------------------------------------------------------------------------------
def _model():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, FEATURES))
    y = (X[:, 0] + rng.normal(size=5000) > 0).astype(int)
    return LogisticRegression().fit(X, y), X


def _configure_sdk() -> None:
    """What opentelemetry-instrument does: the distro's defaults, then the SDK from OTEL_* variables."""
    from opentelemetry.distro import OpenTelemetryConfigurator, OpenTelemetryDistro

    OpenTelemetryDistro().configure()
    OpenTelemetryConfigurator().configure()


def _plain_predictor(model):
    """The same signals as otel-ml, made by the app with the plain OpenTelemetry SDK."""
    import itertools

    from opentelemetry import _logs, metrics, trace

    from otel_ml import semconv as sc

    tracer = trace.get_tracer("plain")
    logger = _logs.get_logger_provider().get_logger("plain")
    meter = metrics.get_meter("plain")
    predictions = meter.create_counter(sc.METRIC_CLIENT_PREDICTIONS)
    duration = meter.create_histogram(sc.METRIC_CLIENT_PREDICT_DURATION, unit="s",
                                      explicit_bucket_boundaries_advisory=sc.PREDICT_DURATION_BUCKETS)
    score = meter.create_histogram(sc.METRIC_CLIENT_PREDICTION_SCORE,
                                   explicit_bucket_boundaries_advisory=sc.SCORE_BUCKETS)
    attrs = {sc.ML_MODEL_NAME: "bench", sc.ML_MODEL_VERSION: "1"}
    keys = [sc.feature_key(f"x{j}") for j in range(FEATURES)]
    classes = [str(c) for c in model.classes_]
    prob_keys = [sc.probability_key(c) for c in classes]
    numbers = itertools.count()
    predict = type(model).predict_proba

    def call(X):
        t0 = time.perf_counter_ns()
        start = time.time_ns()
        with tracer.start_as_current_span(sc.SPAN_PREDICT, start_time=start, attributes={
                **attrs, sc.ML_FRAMEWORK: "sklearn", sc.ML_PREDICT_METHOD: "predict_proba",
                sc.ML_MODEL_TASK: sc.TASK_CLASSIFICATION, sc.ML_PREDICT_ROWS: len(X)}):
            P = predict(model, X)
            dur = time.perf_counter_ns() - t0
            idx = P.argmax(axis=1).tolist()
            best = P.max(axis=1).tolist()
            base = f"p-{next(numbers)}-"
            for i, (row, probs) in enumerate(zip(X.tolist(), P.tolist())):
                a = {**attrs, sc.ML_MODEL_TASK: sc.TASK_CLASSIFICATION, sc.ML_PREDICTION_ID: base + str(i)}
                a.update(zip(keys, row))
                a[sc.ML_OUTPUT_LABEL] = classes[idx[i]]
                a[sc.ML_OUTPUT_SCORE] = best[i]
                a.update(zip(prob_keys, probs))
                logger.emit(event_name=sc.EVENT_PREDICTION, attributes=a, timestamp=start)
        duration.record(dur / 1e9, attrs)
        predictions.add(len(X), attrs)
        for s in best:
            score.record(s, attrs)
        return P

    return call


def child(mode: str, calls: int, rows: int) -> None:
    model, X = _model()
    batch = X[:rows].copy()
    if mode == "bare":
        predict = model.predict_proba
    elif mode == "plain":
        _configure_sdk()
        predict = _plain_predictor(model)
    elif mode == "otel-ml":
        _configure_sdk()
        from otel_ml.instrumentation import MLInstrumentor

        MLInstrumentor().instrument(model_name="bench", model_version="1")
        predict = model.predict_proba
    else:
        raise SystemExit(f"unknown mode {mode}")
    # CPU spent so far (imports, training, set-up), all threads: the parent subtracts it from the
    # whole process's total, which lowers the noise of the slope without changing what it counts.
    print(f"setup-cpu {time.process_time()!r}", flush=True)
    for _ in range(calls):
        predict(batch)
    if mode != "bare":
        # Everything made is exported before the exit (whose flush is bounded by timeouts).
        from opentelemetry import _logs, metrics, trace

        if mode == "otel-ml":
            from otel_ml import pipeline

            assert pipeline.active().force_flush(3_600_000) and len(pipeline.active().outbox.buffer) == 0
        for provider in (trace.get_tracer_provider(), _logs.get_logger_provider(), metrics.get_meter_provider()):
            assert provider.force_flush(3_600_000)


def _whole_process_cpu(args: list, env: dict) -> float:
    """User + system CPU of the child process, all threads, from the end of its set-up to its exit
    (exit flush included), as the operating system accounts for it."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=errors)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)        # not proc.wait(): wait4 gives the rusage
        errors.seek(0)
        err = errors.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or b"dropping" in err.lower():
        raise RuntimeError(f"{args[2:]} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    setup = float(out.decode().split("setup-cpu ", 1)[1].split()[0])
    return usage.ru_utime + usage.ru_stime - setup


def _summary(values: list, scale: float = 1.0, unit: str = "µs") -> str:
    v = [x * scale for x in values]
    return f"{statistics.median(v):8.2f} {unit} (range {min(v):.2f}–{max(v):.2f})"


def cmd_cpu(args: argparse.Namespace) -> None:
    sink = Sink()
    try:
        for rows, (short, long) in ((1, args.calls), (1000, args.batch_calls)):
            slopes = {m: [] for m in ("bare", "otel-ml", "plain")}
            for _ in range(args.runs):
                for mode in slopes:            # in turn, so that each mode sees the same machine state
                    cpu = {}
                    for n in (short, long):
                        cpu[n] = _whole_process_cpu([sys.executable, __file__, "_child", mode, str(n), str(rows)],
                                                    sink.env())
                    slopes[mode].append((cpu[long] - cpu[short]) / (long - short) / rows)
            per = "call" if rows == 1 else "row"
            print(f"\n{rows}-row predict_proba, CPU per {per} (slope of {short} -> {long} calls, {args.runs} runs):")
            for mode, values in slopes.items():
                print(f"  {mode:8s} {_summary(values, 1e6)}")
            for mode in ("otel-ml", "plain"):
                added = [a - b for a, b in zip(slopes[mode], slopes["bare"])]
                print(f"  added by {mode:8s} {_summary(added, 1e6)}")
            ratio = [(a - b) / (c - b) for a, b, c in zip(slopes["otel-ml"], slopes["bare"], slopes["plain"])]
            print(f"  otel-ml added / plain added: {_summary(ratio, 1.0, '')}")
    finally:
        sink.stop()


def child_threads(mode: str, calls: int) -> None:
    """CPU per one-row call of each thread of this process (psutil), set-up excluded."""
    import threading

    import psutil

    model, X = _model()
    one = X[:1].copy()
    _configure_sdk()
    if mode == "plain":
        predict = _plain_predictor(model)
    else:
        if mode == "otel-ml":
            from otel_ml.instrumentation import MLInstrumentor

            MLInstrumentor().instrument(model_name="bench", model_version="1")
        predict = model.predict_proba
    process = psutil.Process()

    def by_thread() -> dict:
        names = {t.native_id: t.name for t in threading.enumerate()}
        return {t.id: (names.get(t.id, "(native)"), t.user_time + t.system_time) for t in process.threads()}

    before = by_thread()
    for _ in range(calls):
        predict(one)
    from opentelemetry import _logs, metrics, trace

    if mode == "otel-ml":
        from otel_ml import pipeline

        assert pipeline.active().force_flush(600_000)
    for provider in (trace.get_tracer_provider(), _logs.get_logger_provider(), metrics.get_meter_provider()):
        provider.force_flush(600_000)
    after = by_thread()
    spent = {}
    for tid, (name, cpu) in after.items():
        spent[name] = spent.get(name, 0.0) + (cpu - before.get(tid, (name, 0.0))[1]) / calls * 1e6
    print(json.dumps(spent))


def cmd_threads(args: argparse.Namespace) -> None:
    """Per-thread CPU of a one-row call; ``--tree`` adds otel-ml from another checkout (before/after)."""
    sink = Sink()
    try:
        kinds = [("bare", str(ROOT)), ("otel-ml", str(ROOT)), ("plain", str(ROOT))]
        for tree in args.tree:
            kinds.append(("otel-ml", str(Path(tree).resolve())))
        results: dict = {}
        for _ in range(args.runs):
            for mode, tree in kinds:
                env = {**sink.env(), "PYTHONPATH": f"{tree}:{tree}/processors"}
                out = subprocess.run([sys.executable, __file__, "_threads", mode, str(args.calls[1])], env=env,
                                     capture_output=True, text=True, check=True).stdout
                for name, us in json.loads(out.strip().splitlines()[-1]).items():
                    results.setdefault((mode, tree), {}).setdefault(name, []).append(us)
        print(f"\nCPU per one-row call by thread ({args.calls[1]} calls, {args.runs} runs):")
        for (mode, tree), threads in results.items():
            print(f"  {mode} ({tree})")
            for name, values in sorted(threads.items(), key=lambda kv: -statistics.median(kv[1])):
                if statistics.median(values) >= 0.5:
                    print(f"    {name:32s} {_summary(values)}")
    finally:
        sink.stop()


def child_latency(calls: int) -> None:
    import numpy as np

    _configure_sdk()
    from otel_ml.instrumentation import MLInstrumentor

    model, X = _model()
    one = X[:1].copy()
    inst = MLInstrumentor()
    inst.instrument(model_name="bench", model_version="1")
    bare = type(model).predict_proba.__wrapped__
    perf = time.perf_counter_ns
    for _ in range(300):
        bare(model, one), model.predict_proba(one)
    inst.force_flush(60_000)
    b, i = [], []
    for start in range(0, calls, 50):          # interleaved blocks: both see the same machine state
        for fn, out in ((lambda: bare(model, one), b), (lambda: model.predict_proba(one), i)):
            for _ in range(min(50, calls - start)):
                t0 = perf()
                fn()
                out.append(perf() - t0)
    b50, i50 = np.percentile(b, 50) / 1000, np.percentile(i, 50) / 1000
    b90, i90 = np.percentile(b, 90) / 1000, np.percentile(i, 90) / 1000
    print(json.dumps({"bare_p50": b50, "inst_p50": i50, "bare_p90": b90, "inst_p90": i90}))


def cmd_latency(args: argparse.Namespace) -> None:
    sink = Sink()
    try:
        results = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, __file__, "_latency", str(args.latency_calls)], env=sink.env(),
                                 capture_output=True, text=True, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"\nrequest path, one-row predict_proba ({args.latency_calls} calls each way, {args.runs} runs):")
        for key in ("bare_p50", "inst_p50", "bare_p90", "inst_p90"):
            print(f"  {key:9s} {_summary([r[key] for r in results])}")
        print(f"  added p50 {_summary([r['inst_p50'] - r['bare_p50'] for r in results])}")
    finally:
        sink.stop()


def child_throughput(kind: str, rows: int) -> None:
    """Rows encoded and shipped per second by one process (wall time, the null sink answering)."""
    _configure_sdk()
    import otel_ml
    from otel_ml.instrumentation import MLInstrumentor

    model, X = _model()
    inst = MLInstrumentor()
    inst.instrument(model_name="bench", model_version="1", export_batch_size=2048)
    pipe = inst.pipeline
    if kind == "predict":
        batch = X[:1000].copy()
        t0 = time.perf_counter()
        for _ in range(rows // 1000):
            model.predict_proba(batch)
    elif kind == "record":
        rowsx = X[:1000].tolist()
        keys = [f"x{j}" for j in range(FEATURES)]
        t0 = time.perf_counter()
        for i in range(rows):
            otel_ml.record_prediction("bench", "1", dict(zip(keys, rowsx[i % 1000])), label="1", score=0.7,
                                      prediction_id=f"r{i}")
    elif kind == "ship":
        pipe.outbox._stop.set()                # keep the shipper out of the filling
        batch = X[:1000].copy()
        for _ in range(rows // 1000):
            model.predict_proba(batch)
        pipe.recorder.flush(600)
        pipe.outbox.commit()
        t0 = time.perf_counter()
        assert pipe.outbox.ship(deadline=None)
        elapsed = time.perf_counter() - t0
        print(json.dumps({"rows_per_s": rows / elapsed, "left": len(pipe.outbox.buffer)}))
        return
    assert inst.force_flush(600_000)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"rows_per_s": rows / elapsed, "left": len(pipe.outbox.buffer)}))


def cmd_throughput(args: argparse.Namespace) -> None:
    sink = Sink()
    try:
        for kind, what in (("predict", "1000-row predict_proba calls: encode + buffer + ship"),
                           ("record", "record_prediction calls (10 features): encode + buffer + ship"),
                           ("ship", "shipping alone, from a filled buffer")):
            rates = []
            for _ in range(args.runs):
                out = subprocess.run([sys.executable, __file__, "_throughput", kind, str(args.rows)], env=sink.env(),
                                     capture_output=True, text=True, check=True).stdout
                got = json.loads(out.strip().splitlines()[-1])
                assert got["left"] == 0
                rates.append(got["rows_per_s"])
            print(f"\nrows/s, {what} ({args.rows} rows, {args.runs} runs): {_summary(rates, 1.0, 'rows/s')}")
    finally:
        sink.stop()


def child_deliver(endpoint: str, protocol: str) -> None:
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    _configure_sdk()
    import otel_ml
    from otel_ml.instrumentation import MLInstrumentor

    model, X = _model()
    MLInstrumentor().instrument(model_name="bench", model_version="1")
    for i in range(2000):
        model.predict_proba(X[i:i + 1])
    for _ in range(20):
        model.predict_proba(X[:1000])
    for i in range(3000):
        otel_ml.record_prediction("bench", "1", {"x0": float(i)}, label="1", score=0.5, prediction_id=f"api-{i}")


def cmd_deliver(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import sqlite3

    from tests.support import ProcessorProcess, wait_for

    expected = 2000 + 20 * 1000 + 3000
    for protocol in ("grpc", "http/protobuf"):
        tmp = Path(tempfile.mkdtemp(prefix="otel-ml-deliver-"))
        with ProcessorProcess(tmp, models=[{"name": "bench", "task": "classification"}]) as proc:
            port = proc.grpc_port if protocol == "grpc" else proc.http_port
            env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'processors'}",
                   "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_SERVICE_NAME": "deliver",
                   "OTEL_ML_BUFFER_PATH": str(tmp / "buffer.db"), "OTEL_ML_LOGGING_BRIDGE": "false",
                   "OTEL_ML_SHUTDOWN_TIMEOUT": "120000"}
            subprocess.run([sys.executable, __file__, "_deliver", proc.grpc_endpoint, protocol], env=env, check=True)

            def stored():
                with sqlite3.connect(proc.db_path) as conn:
                    return conn.execute("select count(*), count(distinct prediction_id) from predictions "
                                        "where model = 'bench'").fetchone()

            rows, distinct = wait_for(lambda: (lambda r: r if r[1] >= expected else None)(stored()), timeout=300,
                                      what="every prediction stored")
            print(f"{protocol}: predictions made {expected}, stored {distinct} distinct, {rows} rows")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        what, rest = sys.argv[1], sys.argv[2:]
        if what == "_sink":
            run_sink(rest[0])
        elif what == "_child":
            child(rest[0], int(rest[1]), int(rest[2]))
        elif what == "_threads":
            child_threads(rest[0], int(rest[1]))
        elif what == "_latency":
            child_latency(int(rest[0]))
        elif what == "_throughput":
            child_throughput(rest[0], int(rest[1]))
        elif what == "_deliver":
            child_deliver(rest[0], rest[1])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all",
                    choices=["all", "cpu", "latency", "throughput", "deliver", "threads"])
    ap.add_argument("--tree", action="append", default=[],
                    help="threads: also run otel-ml from this checkout (e.g. the main branch's); repeatable")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--calls", type=lambda s: tuple(int(x) for x in s.split(",")), default=(1000, 6000),
                    help="one-row calls in the short and the long run")
    ap.add_argument("--batch-calls", type=lambda s: tuple(int(x) for x in s.split(",")), default=(10, 60),
                    help="1000-row calls in the short and the long run")
    ap.add_argument("--latency-calls", type=int, default=3000)
    ap.add_argument("--rows", type=int, default=200_000, help="rows per throughput run")
    args = ap.parse_args()
    for name in (["cpu", "latency", "throughput"] if args.what == "all" else [args.what]):
        globals()[f"cmd_{name}"](args)


if __name__ == "__main__":
    main()
