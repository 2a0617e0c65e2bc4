"""``otel-ml demo``: the newcomer's first run, with nothing to download.

It starts a processor on SQLite in a temporary folder, trains a scikit-learn classifier on a
data set scikit-learn ships (breast cancer), serves predictions through the otel-ml SDK over
OTLP, shifts the inputs half way, sends the true labels a few seconds late, and prints the
accuracy and drift the processor computes. It prints the model page's address (drift per feature
with charts, performance, fairness) and, with ``prometheus`` on PATH, starts a Prometheus
scraping the processor and prints PromQL to paste.

Example::

    otel-ml demo             # about a minute
    otel-ml demo --forever   # until Ctrl-C
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MODEL = "breast-cancer"
VERSION = "1"
RATE = 40                 # predictions per second
LABEL_DELAY = 3.0         # seconds before a true label comes back
REFERENCE_ROWS = 300
WINDOW = 400
SHOWN_FEATURES = 8        # features sent with each prediction (the model uses all 30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.read().decode()


def _samples(text: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def model_page_url(metrics_port: int) -> str:
    """The demo model's page on the processor's web port (beside /metrics)."""
    return f"http://127.0.0.1:{metrics_port}/models/{MODEL}"


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"otel-ml demo: the process exited ({proc.returncode}); see its log")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"otel-ml demo: {url} did not become ready")


def run_demo(forever: bool = False, duration: float = 60.0) -> int:
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import otel_ml
    from otel_ml.providers import build_logger_provider

    tmp = Path(tempfile.mkdtemp(prefix="otel-ml-demo-"))
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    (tmp / "otel-ml.yaml").write_text(f"""\
receiver: {{grpc_endpoint: "127.0.0.1:{grpc_port}", http_endpoint: "127.0.0.1:{http_port}"}}
prometheus: {{endpoint: "127.0.0.1:{metrics_port}"}}
storage: {{url: "sqlite:///{tmp / 'otel-ml.db'}"}}
compute: {{interval: 2s}}
models:
  - name: {MODEL}
    task: classification
    positive_label: "1"
    reference: {{first_n: {REFERENCE_ROWS}}}
    window: {{size: {WINDOW}}}
    drift: {{default: {{method: ks}}}}
""")
    procs: list = []
    log = open(tmp / "processor.log", "ab")
    procs.append(subprocess.Popen([sys.executable, "-m", "otel_ml_processor.cli", "processor", "--config",
                                   str(tmp / "otel-ml.yaml")], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OTEL_ML_HASH_KEY": "demo"}))
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        _wait_ready(f"http://127.0.0.1:{metrics_port}/-/ready", procs[0])
        print(f"otel-ml demo: processor running, data in {tmp}")
        print(f"  metrics:  {metrics_url}")
        print(f"  model page: {model_page_url(metrics_port)}  (drift per feature with charts, performance, fairness)")
        if shutil.which("prometheus"):
            prom_port = _free_port()
            (tmp / "prometheus.yml").write_text(
                "global: {scrape_interval: 2s}\nscrape_configs:\n  - job_name: otel-ml\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
            procs.append(subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                           f"--storage.tsdb.path={tmp / 'prom-data'}",
                                           f"--web.listen-address=127.0.0.1:{prom_port}"],
                                          stdout=open(tmp / "prometheus.log", "ab"), stderr=subprocess.STDOUT))
            print(f"  Prometheus: http://127.0.0.1:{prom_port}/graph  - paste for example:")
            print(f'    ml_performance{{model="{MODEL}",metric="accuracy"}}')
            print(f'    sum by (model) (ml_drift_detected{{model="{MODEL}"}})')
            print(f'    topk(5, ml_drift_score{{model="{MODEL}",method="ks"}})')
        else:
            print("  (install Prometheus to have the demo start one: apt-get install prometheus)")

        data = load_breast_cancer()
        names = [n.replace(" ", "_") for n in data.feature_names]
        x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.5, random_state=0)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
        print(f"  model: LogisticRegression on {len(names)} features, test accuracy "
              f"{model.score(x_test, y_test):.3f}; inputs shift after {duration / 2:.0f}s\n")

        os.environ.setdefault("OTEL_SERVICE_NAME", "otel-ml-demo")
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{grpc_port}"
        provider = build_logger_provider(protocol="grpc")
        rng = np.random.default_rng(0)
        pending: collections.deque = collections.deque()
        started = time.monotonic()
        next_report = started + 2
        sent = 0
        print(f"{'time':>5} {'phase':>8} {'sent':>6} {'labeled':>8} {'accuracy':>9} {'drifted':>8} {'max KS':>7}")
        while forever or time.monotonic() - started < duration:
            now = time.monotonic()
            shifted = now - started > duration / 2
            i = rng.integers(len(x_test))
            row = x_test[i].copy()
            if shifted:
                # Production drifts: the measurements come from a recalibrated instrument.
                row = row * 1.35 + rng.normal(0, 0.05, row.shape) * row
            proba = model.predict_proba(row.reshape(1, -1))[0]
            predicted = int(proba.argmax())
            pid = otel_ml.record_prediction(
                MODEL, VERSION, {names[j]: float(row[j]) for j in range(SHOWN_FEATURES)},
                label=str(predicted), score=float(proba.max()),
                probabilities={"0": float(proba[0]), "1": float(proba[1])}, logger_provider=provider)
            pending.append((now + LABEL_DELAY, pid, int(y_test[i])))
            sent += 1
            while pending and pending[0][0] <= now:
                _, label_pid, truth = pending.popleft()
                otel_ml.record_label(MODEL, label_pid, str(truth), logger_provider=provider)
            if now >= next_report:
                next_report += 2
                _report(metrics_url, now - started, "shifted" if shifted else "normal", sent)
            time.sleep(max(0.0, started + sent / RATE - time.monotonic()))
        provider.shutdown()
        time.sleep(2.5)
        _report(metrics_url, time.monotonic() - started, "final", sent)
        print(f"\nDone. The processor's data stays in {tmp}; its page was {model_page_url(metrics_port)}.")
        print(f"  Write it again from the database: otel-ml report --config {tmp / 'otel-ml.yaml'} --model {MODEL}")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _report(metrics_url: str, elapsed: float, phase: str, sent: int) -> None:
    try:
        samples = _samples(_get(metrics_url))
    except OSError:
        return
    labels = {"model": MODEL, "model_version": VERSION}

    def pick(name, **extra):
        return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in {**labels, **extra}.items())]

    acc = pick("ml_performance", metric="accuracy")
    labeled = pick("ml_window_labeled")
    detected = pick("ml_drift_detected")
    ks = pick("ml_drift_score", method="ks")
    print(f"{elapsed:5.0f}s {phase:>8} {sent:6d} {int(labeled[0].value) if labeled else 0:8d} "
          f"{acc[0].value if acc else float('nan'):9.3f} "
          f"{int(sum(s.value for s in detected)):4d}/{len(detected):<3d} "
          f"{max((s.value for s in ks), default=float('nan')):7.3f}", flush=True)
