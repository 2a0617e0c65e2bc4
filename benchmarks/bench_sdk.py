"""SDK overhead: a scikit-learn LogisticRegression predict, bare vs instrumented, in one run.

Bare = the original (unwrapped) method; instrumented = the same call through MLInstrumentor
with the span, the metrics and the ml.prediction events all on (real SDK providers: batch span
processor, periodic metric reader, the durable SQLite buffer; the exporters are no-ops so the
network is not measured). The two are interleaved in blocks so both see the same machine state.

    PYTHONPATH=. python benchmarks/bench_sdk.py [--calls 3000] [--batch-calls 100]

Prints p50/p90 per call for a one-row predict and per row for a 1000-row predict, the added
time and the ratio, and how fast the background thread turns calls into signals.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sklearn.linear_model import LogisticRegression


class NullLogExporter(LogRecordExporter):
    def export(self, batch):
        return LogRecordExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


class NullSpanExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def pct(values, q):
    return float(np.percentile(np.asarray(values), q))


def measure(fn_bare, fn_inst, calls: int, block: int = 50):
    bare, inst = [], []
    perf = time.perf_counter_ns
    for start in range(0, calls, block):
        for fn, out in ((fn_bare, bare), (fn_inst, inst)):
            for _ in range(min(block, calls - start)):
                t0 = perf()
                fn()
                out.append(perf() - t0)
    return bare, inst


def report(title, bare, inst, per=1):
    b50, i50 = pct(bare, 50) / per / 1000, pct(inst, 50) / per / 1000
    b90, i90 = pct(bare, 90) / per / 1000, pct(inst, 90) / per / 1000
    unit = "µs/row" if per > 1 else "µs/call"
    print(f"{title}: bare p50 {b50:.2f} {unit} (p90 {b90:.2f}), instrumented p50 {i50:.2f} (p90 {i90:.2f}); "
          f"added p50 {i50 - b50:.2f} {unit}, ratio {i50 / b50:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--batch-calls", type=int, default=100)
    args = ap.parse_args()

    from otel_ml.instrumentation import MLInstrumentor  # noqa: PLC0415

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 10))
    y = (X[:, 0] + rng.normal(size=5000) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    one, batch = X[:1].copy(), X[:1000].copy()

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tmp = tempfile.mkdtemp()
    inst = MLInstrumentor()
    inst.instrument(tracer_provider=tp, meter_provider=mp, log_exporter=NullLogExporter(),
                    buffer_path=f"{tmp}/buf.db", model_name="bench", model_version="1", logging_bridge=False)
    try:
        bare_predict = type(model).predict_proba.__wrapped__
        assert bare_predict is not type(model).predict_proba
        recorder = inst.pipeline.recorder
        for _ in range(200):                                  # warm-up
            bare_predict(model, one), model.predict_proba(one)
        recorder.flush(60)

        t0 = time.perf_counter()
        bare, instr = measure(lambda: bare_predict(model, one), lambda: model.predict_proba(one), args.calls)
        loop_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        recorder.flush(600)
        drain_s = time.perf_counter() - t1
        report("one-row predict_proba", bare, instr)
        print(f"  background: {args.calls} calls turned into span+metrics+event within the run "
              f"({loop_s:.2f} s) plus {drain_s:.2f} s to drain the queue")

        bare, instr = measure(lambda: bare_predict(model, batch), lambda: model.predict_proba(batch),
                              args.batch_calls, block=10)
        t1 = time.perf_counter()
        recorder.flush(600)
        drain_s = time.perf_counter() - t1
        report("1000-row predict_proba", bare, instr, per=1000)
        print(f"  background drain after the batch run: {drain_s:.2f} s "
              f"({args.batch_calls * 1000} events)")
    finally:
        inst.uninstrument()
        tp.shutdown()
        mp.shutdown()


if __name__ == "__main__":
    main()
