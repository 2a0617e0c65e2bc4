"""The model servers users run, as real processes under ``opentelemetry-instrument``.

Each server runs from its own virtual environment (``scripts/install-server-venvs``: MLServer,
BentoML, FastAPI with uvicorn and gunicorn), with only the documented variables set: the OTLP
endpoint of a real otel-ml processor for otel-ml's events, and the app's traces sent over
OTLP/HTTP to :class:`TraceSink`, so a test can read every span the app exported. Its default
buffer path is used (``$XDG_STATE_HOME/otel-ml/<service>.db``, one for all of a server's
workers, as a user would have it), in a folder of the test's own.

Example::

    with ProcessorProcess(tmp / "proc") as proc, TraceSink() as sink:
        server = ServerProcess(tmp, "fastapi", ["uvicorn", "app:app", "--port", "{port}"], proc, sink,
                               health="/health").start()
        ...
        server.terminate()                       # SIGTERM, wait for the exit
        stored_predictions(proc.db_path)
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ml import semconv as sc
from tests.support import ProcessorProcess, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
VENV_ROOT = Path(os.environ.get("OTEL_ML_CACHE_DIR", Path.home() / ".cache" / "otel-ml")) / "venvs"


def venv_bin(venv: str, exe: str) -> str:
    """A program of one of the server venvs; fails (never skips) when the venv is missing."""
    path = VENV_ROOT / venv / "bin" / exe
    assert path.exists(), f"{path} missing: run scripts/install-server-venvs (scripts/install-test-deps does)"
    return str(path)


def run_in_venv(venv: str, args: Sequence[str], cwd: Path, env: Optional[dict] = None) -> str:
    """Run ``python args...`` in ``venv`` (e.g. to train and save its models); returns stdout."""
    done = subprocess.run([venv_bin(venv, "python"), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert done.returncode == 0, f"{args} failed: {done.stderr[-3000:]}"
    return done.stdout


class TraceSink:
    """An OTLP/HTTP receiver of traces (``POST /v1/traces``, protobuf) that keeps every span."""

    def __init__(self) -> None:
        self.spans: List[dict] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                got = []
                for rs in request.resource_spans:
                    service = next((kv.value.string_value for kv in rs.resource.attributes
                                    if kv.key == "service.name"), "")
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            attrs = {kv.key: kv.value.WhichOneof("value") and getattr(kv.value, kv.value.WhichOneof("value"))
                                     for kv in span.attributes}
                            got.append({"name": span.name, "scope": ss.scope.name, "service": service,
                                        "attributes": attrs})
                with sink._lock:
                    sink.spans.extend(got)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def snapshot(self) -> List[dict]:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> "TraceSink":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def otel_ml_spans(spans: List[dict]) -> List[dict]:
    """otel-ml's own plumbing in the app's traces: its OTLP shipments and its buffer's SQLite."""
    return [s for s in spans if "LogsService/Export" in s["name"] or "/v1/logs" in s["name"]
            or s["attributes"].get("db.system") == "sqlite" or s["attributes"].get("db.system.name") == "sqlite"
            or "sqlite" in s["scope"]]


class ServerProcess:
    """``opentelemetry-instrument <server command>`` from ``venv``, as a real process group."""

    def __init__(self, tmp: Path, venv: str, command: Sequence[str], proc: ProcessorProcess,
                 sink: Optional[TraceSink], health: str, service: str = "model-server",
                 env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None, port: Optional[int] = None,
                 instrument: bool = True) -> None:
        """``sink`` None: the traces go to the processor too; ``instrument`` False: no
        ``opentelemetry-instrument`` (the bare server, for the benchmark)."""
        self.port = port or free_port()
        self.health = health
        self.log_path = tmp / f"{service}.log"
        self.cwd = cwd or tmp
        program = venv_bin(venv, command[0])
        self.args = ([venv_bin(venv, "opentelemetry-instrument")] if instrument else []) + [
            program, *[a.format(port=self.port) for a in command[1:]]]
        self.env = {
            **os.environ,
            "PATH": f"{VENV_ROOT / venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{APPS}",   # this checkout's otel_ml, the test apps
            "XDG_STATE_HOME": str(tmp / "state"),       # the default buffer path, inside the test's folder
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{proc.grpc_endpoint}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # Ships every 3 s: what the last requests made is still in the buffer at SIGTERM.
            sc.ENV_EXPORT_INTERVAL: "3000",
            sc.ENV_SHUTDOWN_TIMEOUT: "20000",
            **(env or {}),
        }
        if sink is not None:
            self.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = sink.url
            self.env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
        for name in (sc.ENV_MODEL_NAME, sc.ENV_MODEL_VERSION, sc.ENV_BUFFER_PATH):
            if name not in (env or {}):
                self.env.pop(name, None)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log()[-4000:]}")
            return requests.get(self.url + self.health, timeout=2).status_code == 200

        wait_for(healthy, timeout=timeout, interval=0.5, what=f"{self.args} healthy (log {self.log_path})")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _family(self) -> List[psutil.Process]:
        """The server's processes: its main one and every descendant (BentoML's workers start
        sessions of their own, so a process group does not hold them all)."""
        assert self.proc is not None
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def terminate(self, timeout: float = 90) -> int:
        """SIGTERM to the server's main process (as Kubernetes does), then wait for it and every
        worker it had to exit."""
        assert self.proc is not None
        family = self._family()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        gone, alive = psutil.wait_procs(family, timeout=timeout)
        assert not alive, f"server processes still running after its exit: {[p.pid for p in alive]}"
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL whatever is left of the server (after a failure)."""
        if self.proc is None:
            return
        for p in self._family():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)


def stored_predictions(db: Path) -> List[dict]:
    """Every prediction row of the processor's database."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(
            "SELECT prediction_id, model, model_version, task, features, output_label, score, probabilities"
            " FROM predictions")]
    for r in rows:
        r["features"] = json.loads(r["features"])
        r["probabilities"] = json.loads(r["probabilities"]) if r["probabilities"] else None
    return rows


def feature_key(features: dict) -> str:
    """A row's features as one hashable key (rows of a test are distinct)."""
    return json.dumps(features, sort_keys=True)


def check_stored(proc: ProcessorProcess, expected: Dict[str, dict], timeout: float = 30) -> List[dict]:
    """Wait until the processor holds as many predictions as ``expected`` (keyed by
    :func:`feature_key`), then check each: exact features, label, score, probabilities, model
    name and version; no row twice, none missing, no duplicate delivery counted."""
    def enough():
        rows = stored_predictions(proc.db_path)
        return rows if len(rows) >= len(expected) else None

    try:
        rows = wait_for(enough, timeout=timeout, what=f"{len(expected)} predictions stored")
    except AssertionError:
        rows = stored_predictions(proc.db_path)
        raise AssertionError(f"{len(rows)} predictions stored for {len(expected)} rows predicted") from None
    by_key: Dict[str, List[dict]] = {}
    for r in rows:
        by_key.setdefault(feature_key(r["features"]), []).append(r)
    twice = {k: len(v) for k, v in by_key.items() if len(v) > 1}
    assert not twice, f"{len(rows)} stored for {len(expected)} rows; rows stored more than once: {list(twice.items())[:3]}"
    assert set(by_key) == set(expected), (
        f"missing {len(set(expected) - set(by_key))}, unexpected {len(set(by_key) - set(expected))}")
    for key, want in expected.items():
        (got,) = by_key[key]
        assert (got["model"], got["model_version"]) == (want["model"], want["version"]), key
        assert got["task"] == sc.TASK_CLASSIFICATION
        assert got["output_label"] == want["label"], key
        assert got["score"] == want["score"], key
        assert got["probabilities"] == want["probabilities"], key
    duplicates = proc.sample(sc.M_RECORDS_REJECTED + "_total", {"reason": sc.REASON_DUPLICATE})
    assert not duplicates, f"{duplicates} duplicate deliveries"
    return rows


def random_rows(rng, n: int, width: int) -> List[List[float]]:
    """``n`` rows of ``width`` numbers with 3 decimals (distinct in practice, exact in JSON)."""
    return [[round(float(v), 3) for v in rng.normal(size=width)] for _ in range(n)]


def expected_rows(rows: Sequence[Sequence[float]], names: Sequence[str], labels: Sequence[str],
                  probabilities: Sequence[Sequence[float]], classes: Sequence[str], model: str,
                  version: str) -> Dict[str, dict]:
    """What the processor must hold for rows a server answered, keyed by :func:`feature_key`."""
    out = {}
    for row, label, proba in zip(rows, labels, probabilities):
        out[feature_key(dict(zip(names, row)))] = {
            "model": model, "version": version, "label": str(label), "score": max(proba),
            "probabilities": dict(zip(classes, proba))}
    return out


def run_and_terminate(proc: ProcessorProcess, sink: TraceSink, server: ServerProcess, send,
                      before: Sequence[int], after: Sequence[int], until=None) -> Dict[str, dict]:
    """The scenario of every server test.

    ``send(n)`` makes one request of ``n`` rows and returns its :func:`expected_rows`. Requests
    of ``before`` sizes, then every row stored, checked, with no duplicate; requests of
    ``after`` sizes, SIGTERM right after the last answer (the buffer ships every 3 s: those rows
    are still in it), the server's exit awaited, then every row stored again. Last, the app's
    traces hold its own spans and none of otel-ml's plumbing. ``until``: after ``before``, one-row
    requests four at a time until it returns true (e.g. every worker has answered)."""
    expected: Dict[str, dict] = {}
    try:
        for n in before:
            expected.update(send(n))
        if until is not None:
            with ThreadPoolExecutor(4) as pool:
                for _ in range(100):
                    if until():
                        break
                    for got in pool.map(send, [1] * 4):
                        expected.update(got)
            assert until(), "the condition of the concurrent requests never held"
        check_stored(proc, expected, timeout=60)
        for n in after:
            expected.update(send(n))
        code = server.terminate()
    finally:
        server.kill()
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"exit {code}: {server.log()[-3000:]}"
    check_stored(proc, expected, timeout=30)
    spans = sink.snapshot()
    served = [s for s in spans if "http.method" in s["attributes"] or "http.request.method" in s["attributes"]]
    assert served, f"no HTTP span of the app among {len(spans)} spans: {sorted({s['name'] for s in spans})}"
    plumbing = otel_ml_spans(spans)
    assert not plumbing, f"otel-ml's own spans in the app's traces: {[s['name'] for s in plumbing][:5]}"
    return expected
