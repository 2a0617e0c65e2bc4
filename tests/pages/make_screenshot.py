"""Render docs/img/model-page.png: a model page of a real run, for the README.

Not a test: run by hand when the page changes.

    PYTHONPATH=.:processors python tests/pages/make_screenshot.py [--light]

Starts the processor with the test stream of tests/pages (``x`` and ``plan`` drifted, ``y``
stable, a hashed ``customer``, labels, two groups), waits for the drift to be computed and
screenshots ``/models/churn`` with headless Chromium (the DevTools protocol, dark colour scheme).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "processors")]

from tests.pages.browser import Chromium  # noqa: E402
from tests.pages.stack import ANONYMIZATION, DRIFTED, MODEL, MODEL_CONFIG, VERSION, WIN, send_stream  # noqa: E402
from tests.support import ProcessorProcess, wait_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--light", action="store_true", help="the light colour scheme")
    ap.add_argument("--output", default=str(ROOT / "docs" / "img" / "model-page.png"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="otel-ml-page-shot-"))
    with ProcessorProcess(tmp, models=[MODEL_CONFIG], extra={"anonymization": ANONYMIZATION}) as proc:
        send_stream(proc.grpc_endpoint)
        labels = {"model": MODEL, "model_version": VERSION}
        wait_for(lambda: all(proc.sample("ml_drift_detected", {**labels, "feature": f}) == 1 for f in DRIFTED)
                 and proc.sample("ml_window_labeled", labels) == WIN - 40, timeout=120, what="drift computed")
        with Chromium(tmp, width=1100, height=1250) as browser:
            visit = browser.visit(f"http://{proc.metrics_endpoint}/models/{MODEL}", dark=not a.light, full_page=False)
        if visit.console_errors:
            raise SystemExit(f"console errors: {visit.console_errors}")
        Path(a.output).write_bytes(visit.screenshot_png)
        print(a.output)


if __name__ == "__main__":
    main()
