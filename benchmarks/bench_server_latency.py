"""Request-path latency that otel-ml adds to a one-row predict on a server of the kind users write.

The server: the standard library's ``ThreadingHTTPServer`` with a scikit-learn
``LogisticRegression`` (10 features); ``POST /predict`` takes ``{"rows": [[...]]}``, calls
``predict_proba`` on the decoded array and answers JSON. Three kinds of server process, started
in turn in every round (A/B in one run, the same machine state for all):

- ``bare``: no OpenTelemetry at all;
- ``otel``: the OpenTelemetry SDK configured as ``opentelemetry-instrument`` does (OTLP/gRPC
  exporters for spans, metrics and logs, to a null sink), no otel-ml: plain OpenTelemetry;
- ``otel-ml``: the same plus ``MLInstrumentor`` with its defaults (SQLite buffer, OTLP/gRPC);
- ``hand-over`` (with ``--hand-over``, a diagnosis): ``otel-ml`` with its background thread
  stopped and its queue emptied every 100 requests, so only the request path's own work
  remains: the difference to ``otel-ml`` is what the background thread costs the requests.

A client sends ``--requests`` requests one after another on one kept-alive connection. Two
figures per server: the p50 of the ``predict_proba`` call as the handler times it
(``perf_counter_ns`` around the call: the request path otel-ml adds to) and the p50 of the
client's round trip. The added latency is otel-ml's p50 minus bare's, per round; medians and
ranges over the rounds are printed.

    PYTHONPATH=. python benchmarks/bench_server_latency.py --rounds 5 --requests 3000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sdk import FEATURES, Sink, _configure_sdk, _model  # the benchmarks folder is not a package

MODES = ("bare", "otel", "otel-ml")
DIAGNOSIS = "hand-over"


def serve(mode: str, port_file: str) -> None:
    """One server process (``_serve MODE PORT_FILE``)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import numpy as np

    if mode != "bare":
        _configure_sdk()
    queue = None
    if mode in ("otel-ml", "hand-over"):
        from otel_ml.instrumentation import MLInstrumentor

        inst = MLInstrumentor()
        inst.instrument(model_name="bench", model_version="1")
        if mode == "hand-over":
            recorder = inst.pipeline.recorder
            recorder._stop.set()
            recorder._thread.join()
            queue = recorder._queue
    model, _ = _model()
    times: list = []
    perf = time.perf_counter_ns

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True          # headers and body go out at once, no delayed ACK

        def log_message(self, *args) -> None:
            pass

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            X = np.asarray(data["rows"], dtype=float)
            t0 = perf()
            proba = model.predict_proba(X)
            times.append(perf() - t0)
            if queue is not None and len(queue) >= 100:
                queue.clear()
            self._answer(json.dumps({"proba": proba.tolist()}).encode())

        def do_GET(self) -> None:
            done = sorted(times)
            times.clear()
            self._answer(json.dumps({"p50_us": done[len(done) // 2] / 1000 if done else None}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def _one_server(mode: str, sink: Sink, requests: int) -> dict:
    port_file = os.path.join(sink.dir, f"port-{mode}-{time.monotonic_ns()}")
    proc = subprocess.Popen([sys.executable, __file__, "_serve", mode, port_file], env=sink.env())
    try:
        deadline = time.monotonic() + 120
        while not (os.path.exists(port_file) and Path(port_file).read_text()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{mode} server did not start")
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", int(Path(port_file).read_text()), timeout=30)
        body = json.dumps({"rows": [[0.1 * j for j in range(FEATURES)]]}).encode()
        headers = {"Content-Type": "application/json"}
        perf = time.perf_counter_ns
        rtt = []
        for i in range(300 + requests):             # the first 300 warm up (imports, first-call caches)
            t0 = perf()
            conn.request("POST", "/predict", body, headers)
            conn.getresponse().read()
            if i >= 300:
                rtt.append(perf() - t0)
            elif i == 299:
                conn.request("GET", "/stats")
                conn.getresponse().read()         # reset the handler's times
        conn.request("GET", "/stats")
        handler_p50 = json.loads(conn.getresponse().read())["p50_us"]
        rtt.sort()
        return {"predict_p50": handler_p50, "rtt_p50": rtt[len(rtt) // 2] / 1000}
    finally:
        proc.terminate()
        proc.wait(30)


def _summary(values: list) -> str:
    return f"{statistics.median(values):8.2f} µs (range {min(values):.2f}–{max(values):.2f})"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_sink":
        from bench_sdk import run_sink

        run_sink(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--hand-over", action="store_true", help="also run otel-ml without its background thread")
    args = ap.parse_args()
    modes = MODES + ((DIAGNOSIS,) if args.hand_over else ())
    sink = Sink()
    try:
        results: dict = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                results[mode].append(_one_server(mode, sink, args.requests))
        print(f"\none-row predict_proba on a ThreadingHTTPServer ({args.requests} requests, {args.rounds} rounds):")
        for mode in modes:
            print(f"  {mode:9s} predict p50 {_summary([r['predict_p50'] for r in results[mode]])}"
                  f"   round trip p50 {_summary([r['rtt_p50'] for r in results[mode]])}")
        pairs = [("otel-ml", "bare"), ("otel-ml", "otel")] + ([(DIAGNOSIS, "bare")] if args.hand_over else [])
        for mine, other in pairs:
            for key in ("predict_p50", "rtt_p50"):
                added = [a[key] - b[key] for a, b in zip(results[mine], results[other])]
                print(f"  {mine} - {other:4s} {key:11s} {_summary(added)}")
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
