"""Render docs/img/prometheus-alerts.png: Prometheus' alerts page with otel-ml alerts firing.

Not a test: run by hand when the rules change.

    PYTHONPATH=.:processors python tests/ops/make_screenshot.py

Starts the processor, sends drifted predictions through the SDK, runs Prometheus with a test
copy of the shipped rules (every ``for:`` 1s) and screenshots /classic/alerts (Debian builds the classic UI) with headless Chromium.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "processors")]

from dashboards.prometheus import generate  # noqa: E402
from tests.ops.stack import send_drifted  # noqa: E402
from tests.support import PrometheusProcess, ProcessorProcess, sdk_logger_provider, wait_for  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="otel-ml-shot-"))
    rules = generate.render_to(generate.load_thresholds(), tmp / "rules", for_override="1s")
    models = [{"name": n, "task": "classification", "reference": {"first_n": 100}, "drift": {"default": {"method": "ks"}}}
              for n in ("churn", "fraud-detector")]
    with ProcessorProcess(tmp, models=models) as proc, \
            PrometheusProcess(tmp, targets=[proc.metrics_endpoint], rule_files=rules) as prom:
        provider = sdk_logger_provider(proc.grpc_endpoint, "grpc")
        send_drifted(provider, "churn", "3", drifted=["x"], stable=["a", "b"], first_n=100)
        send_drifted(provider, "fraud-detector", "1", drifted=["amount"], stable=[], first_n=100)
        provider.shutdown()
        wait_for(lambda: prom.query('ALERTS{alertname="MLFeatureDrift", alertstate="firing"}'), what="alerts firing")
        time.sleep(3)
        out = ROOT / "docs" / "img" / "prometheus-alerts.png"
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=8000",
                        f"--screenshot={out}", "--window-size=1280,900", f"{prom.url}/classic/alerts"],
                       check=True, capture_output=True, timeout=120)
        print(out)


if __name__ == "__main__":
    main()
