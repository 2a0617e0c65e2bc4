"""Test helpers of tests/ops: a real Alertmanager, a webhook receiver, SDK traffic with drift.

Example::

    with WebhookReceiver() as hook, AlertmanagerProcess(tmp, hook.url) as am:
        ...                      # point Prometheus at am.address
        hook.wait_for(lambda n: n["path"] == "/ml-models")
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import yaml

from tests.support import free_port, http_get, wait_for

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER_YML = ROOT / "dashboards" / "alertmanager" / "alertmanager.yml"


class WebhookReceiver:
    """A local HTTP server that records every Alertmanager webhook notification it gets."""

    def __init__(self) -> None:
        self.notifications: list = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.notifications.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self, path: Optional[str] = None) -> list:
        """Every alert of every notification (to ``path`` only, when given)."""
        with self._lock:
            return [dict(a, receiver_path=n["path"]) for n in self.notifications
                    if path is None or n["path"] == path for a in n["body"]["alerts"]]

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 120, what: str = "alert") -> dict:
        return wait_for(lambda: next((a for a in self.alerts() if predicate(a)), None), timeout=timeout, what=what)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_copy_of_alertmanager_yml(webhook_base: str, out: Path, group_wait: str = "2s") -> Path:
    """The shipped alertmanager.yml with every receiver's placeholder host replaced by
    ``webhook_base`` (keeping the path that names the receiver) and short grouping timers,
    so a test sees notifications within seconds. Routing and inhibition stay as shipped."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_base + urlsplit(hook["url"]).path
    cfg["route"].update(group_wait=group_wait, group_interval="2s")
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


class AlertmanagerProcess:
    """Debian's ``prometheus-alertmanager`` on a free loopback port, no clustering, temp storage."""

    def __init__(self, tmp: Path, webhook_base: str) -> None:
        self.tmp = Path(tmp) / "alertmanager"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = test_copy_of_alertmanager_yml(webhook_base, self.tmp / "alertmanager.yml")
        self.args = ["prometheus-alertmanager", f"--config.file={self.config}",
                     f"--storage.path={self.tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                     "--cluster.listen-address="]
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "AlertmanagerProcess":
        self._log = open(self.tmp / "alertmanager.log", "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: http_get(f"http://{self.address}/-/ready", timeout=1)[0] == 200, timeout=60,
                 what="Alertmanager ready")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._log.close()


def reference_quantiles(n: int) -> list:
    """``n`` evenly spread quantiles of N(0, 1): a deterministic reference sample."""
    from statistics import NormalDist

    return [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]


def send_drifted(provider, model: str, version: str, drifted: list, stable: list, first_n: int, repeats: int = 2,
                 reference: bool = True) -> list:
    """Predictions through the SDK: ``first_n`` reference rows (unless ``reference`` is false),
    then ``repeats`` copies of them with the ``drifted`` features shifted by +3 and the
    ``stable`` ones unchanged (so their KS statistic is exactly 0 and only the drifted features
    can be detected). Returns the ids."""
    import otel_ml

    ref = reference_quantiles(first_n)
    ids = []

    def emit(shift: float, i: int) -> None:
        features = {f: ref[i] + shift for f in drifted}
        features.update({f: ref[(i * 7 + k) % first_n] for k, f in enumerate(stable)})
        ids.append(otel_ml.record_prediction(model, version, features, label="1", score=0.9, logger_provider=provider))

    if reference:
        for i in range(first_n):
            emit(0.0, i)
        provider.force_flush()  # the reference is the first predictions: send them first
    for _ in range(repeats):
        for i in range(first_n):
            emit(3.0, i)
    provider.force_flush()
    return ids
