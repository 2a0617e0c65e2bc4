"""Test machinery of tests/pages: TLS certificates (openssl), a web config with a bcrypt user, a
processor served over TLS with basic auth, and a drifted stream carrying identifiers that must
never reach a page.

Example::

    certs = make_certs(tmp)
    web = write_web_config(tmp, certs, {"prometheus": "s3cret"})
    with SecureProcessor(tmp, web, certs, models=[...]) as proc:
        send_stream(proc.grpc_endpoint, "churn")
        status, headers, body = proc.get("/models/churn")
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from otel_ml import semconv as sc
from tests.ops.stack import reference_quantiles
from tests.support import ProcessorProcess, grpc_export, label, otlp_logs_request, prediction

MODEL, VERSION = "churn", "3"
REF, WIN = 300, 300
#: every identifier sent contains this marker; no page, report or metric may show it
SECRET = "SECRET"
HASH_KEY = "test-hash-key"     # ProcessorProcess's OTEL_ML_HASH_KEY
CUSTOMERS = [f"cust-{SECRET}-{i}" for i in range(7)]
#: the model config of the stream: binary, fairness on gender, drift auto (ks / chi2 at these sizes)
MODEL_CONFIG = {"name": MODEL, "task": "classification", "positive_label": "1", "reference": {"first_n": REF},
                "window": {"size": WIN}, "fairness": {"attributes": ["gender"], "min_group_size": 10}}
#: anonymization: enduser.id hashed, ml.feature.email dropped, ml.feature.customer hashed
ANONYMIZATION = {"rules": [{"attribute": sc.ENDUSER_ID, "action": "hash"},
                           {"attribute": sc.feature_key("email"), "action": "drop"},
                           {"attribute": sc.feature_key("customer"), "action": "hash"}]}
DRIFTED = ("x", "plan")         # shifted in the window
STABLE = ("y",)                 # the window repeats the reference's values exactly


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(tmp: Path) -> Certs:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (ECDSA P-256)."""
    d = Path(tmp) / "certs"
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=otel-ml test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key")


def bcrypt_hash(password: str, rounds: int = 10) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def write_web_config(tmp: Path, certs: Optional[Certs], users: dict) -> Path:
    cfg: dict = {"basic_auth_users": {u: bcrypt_hash(p) for u, p in users.items()}}
    if certs is not None:
        cfg["tls_server_config"] = {"cert_file": str(certs.cert), "key_file": str(certs.key)}
    path = Path(tmp) / "web.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class SecureProcessor(ProcessorProcess):
    """The processor with ``prometheus.web_config_file``: its web port speaks TLS and wants a password."""

    def __init__(self, tmp: Path, web_config: Path, certs: Optional[Certs], auth: tuple, **kw):
        extra = kw.pop("extra", {})
        extra.setdefault("prometheus", {})["web_config_file"] = str(web_config)
        super().__init__(tmp, extra=extra, **kw)
        self.auth = auth
        self.scheme = "https" if certs is not None else "http"
        self.ssl = ssl.create_default_context(cafile=str(certs.ca)) if certs is not None else None

    @property
    def web_url(self) -> str:
        return f"{self.scheme}://{self.metrics_endpoint}"

    def get(self, path: str, auth: Optional[tuple] = None, header: Optional[str] = None) -> tuple:
        """(status, headers, body) of ``path`` with ``auth`` = (user, password), or a raw Authorization header."""
        req = urllib.request.Request(self.web_url + path)
        if auth is not None:
            req.add_header("Authorization", basic(*auth))
        elif header is not None:
            req.add_header("Authorization", header)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"processor exited with {self.proc.returncode}: {self.log()}")
        try:
            return self.get("/-/ready")[0] == 200     # the probes need no password
        except OSError:
            return False

    def metrics_text(self) -> str:
        return self.get("/metrics", self.auth)[2].decode()


def hashed(value: str) -> str:
    """What the processor stores for a hashed value (HMAC-SHA256 with the test key)."""
    return hmac.new(HASH_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def identifiers() -> list:
    """Every identifier the stream sends, and the hashes the processor makes of the hashed ones."""
    ids = [f"user-{SECRET}-{i}" for i in range(REF + WIN)] + [f"alice.{SECRET}.{i}@example.com" for i in range(3)]
    return ids + CUSTOMERS + [hashed(v) for v in CUSTOMERS + ids[:REF + WIN]]


def send_stream(grpc_endpoint: str, model: str = MODEL) -> None:
    """REF reference predictions, then WIN window predictions with ``x`` shifted by 1.5 and ``plan``'s
    categories moved; ``y`` repeats the reference exactly (never detected); labels for most of the window.
    Each prediction carries ``enduser.id``, a hashed ``customer`` and a dropped ``email``."""
    q = reference_quantiles(REF)
    plans_ref = ["basic"] * (REF // 2) + ["gold"] * (REF // 3) + ["premium"] * (REF - REF // 2 - REF // 3)
    plans_win = ["basic"] * (WIN // 6) + ["gold"] * (WIN // 3) + ["premium"] * (WIN - WIN // 6 - WIN // 3)

    def rec(i: int, window: bool) -> tuple:
        j = i - REF if window else i
        x = q[(j * 37) % REF] + (1.5 if window else 0.0)
        pred = "1" if x > 0.3 else "0"
        return prediction(model, f"p{i}", {"x": x, "y": q[(j * 11) % REF], "plan": (plans_win if window else plans_ref)[
            (j * 7) % REF], "customer": CUSTOMERS[i % len(CUSTOMERS)], "email": f"alice.{SECRET}.{i % 3}@example.com"},
            label=pred, **{sc.ML_MODEL_VERSION: VERSION, sc.ML_MODEL_TASK: "classification", sc.ML_OUTPUT_SCORE: 0.8,
                           sc.ENDUSER_ID: f"user-{SECRET}-{i}", sc.segment_key("gender"): "fm"[i % 2]})

    grpc_export(grpc_endpoint, otlp_logs_request([rec(i, False) for i in range(REF)]))
    grpc_export(grpc_endpoint, otlp_logs_request([rec(i, True) for i in range(REF, REF + WIN)]))
    truth = [label(model, f"p{i}", "1" if (i * 13) % 10 < 6 else "0") for i in range(REF, REF + WIN - 40)]
    grpc_export(grpc_endpoint, otlp_logs_request(truth))
