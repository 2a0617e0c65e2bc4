"""The web port's pieces in isolation: the web config file (strict parsing, reload, client
certificates), the aiohttp app on a real loopback socket (pages on and off, basic auth), and the
rendering (escaping, hidden categories, stable links into docs/metrics.md)."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry

from otel_ml_processor.compute.engine import DriftResult, ModelMetrics, ModelSpec, compute_model_metrics
from otel_ml_processor.compute.histograms import categorical_histogram
from otel_ml_processor.compute.manager import Snapshot
from otel_ml_processor.compute.reference import ReferenceData, prepare_reference
from otel_ml_processor.compute.window import WindowData
from otel_ml_processor.config import ConfigError, load_config
from otel_ml_processor.export.http import PROBE_PATHS, Pages, metrics_app, web_endpoint
from otel_ml_processor.export.pages.render import (
    ANCHORS, PageOptions, drift_order, hidden_features, render_index, render_model,
)
from otel_ml_processor.export.pages.source import ComputerSource, ModelSnapshot, latest_version
from otel_ml_processor.export.webconfig import WebConfig, WebConfigState
from tests.pages.stack import Certs, basic, bcrypt_hash, make_certs

ROOT = Path(__file__).resolve().parents[2]


# --- the web config file -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _write(tmp: Path, data) -> str:
    path = tmp / "web.yml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize("data, key", [
    ({"nope": 1}, "nope"),
    ({"rate_limit": {"interval": "1s", "burst": 1}}, "rate_limit"),
    ({"tls_server_config": {"cipher_suites": ["TLS_AES_128_GCM_SHA256"]}}, "tls_server_config.cipher_suites"),
    ({"tls_server_config": {"cert": "inline"}}, "tls_server_config.cert"),
    ({"tls_server_config": {"cert_file": "server.crt"}}, "tls_server_config"),
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "server.key"}}, "tls_server_config.cert_file"),
    ({"tls_server_config": {"cert_file": "CERT", "key_file": "KEY", "min_version": "TLS14"}},
     "tls_server_config.min_version"),
    ({"tls_server_config": {"cert_file": "CERT", "key_file": "KEY", "client_auth_type": "RequireAnyClientCert",
                            "client_ca_file": "CA"}}, "tls_server_config.client_auth_type"),
    ({"tls_server_config": {"cert_file": "CERT", "key_file": "KEY", "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_auth_type"),
    ({"tls_server_config": {"cert_file": "CERT", "key_file": "KEY", "client_ca_file": "CA"}},
     "tls_server_config.client_ca_file"),
    ({"http_server_config": {"headers": {"X-Powered-By": "otel-ml"}}}, "http_server_config.headers.X-Powered-By"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, "http_server_config.headers.X-Frame-Options"),
    ({"basic_auth_users": {"prometheus": "plain-text-password"}}, "basic_auth_users.prometheus"),
])
def test_web_config_errors_name_the_key(tmp_path, certs, data, key):
    text = yaml.safe_dump(data).replace("CERT", str(certs.cert)).replace("KEY", str(certs.key)).replace("CA", str(certs.ca))
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_text("x")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        WebConfig.load(path)
    assert err.value.key == key and path in str(err.value)


def test_web_config_relative_paths_and_tls_context(tmp_path, certs):
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_bytes((certs.cert.parent / name).read_bytes())
    cfg = WebConfig.load(_write(tmp_path, {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS13",
                              "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "ca.crt"},
        "http_server_config": {"http2": True, "headers": {"X-Frame-Options": "deny"}},
        "basic_auth_users": {"alice": bcrypt_hash("pw", rounds=4)}}))
    assert cfg.cert_file == str(tmp_path / "server.crt") and cfg.headers == {"X-Frame-Options": "deny"}
    ctx = cfg.ssl_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.verify_mode == ssl.CERT_REQUIRED
    assert WebConfig.load(None).ssl_context() is None


def test_processor_with_a_bad_web_config_does_not_start(tmp_path):
    (tmp_path / "web.yml").write_text("basic_auth_users: {prometheus: not-a-hash}\n")
    (tmp_path / "otel-ml.yaml").write_text(f"prometheus: {{web_config_file: web.yml}}\n"
                                           f"storage: {{url: 'sqlite:///{tmp_path / 'db.sqlite'}'}}\n")
    from tests.support import otel_ml_command

    run = subprocess.run(otel_ml_command() + ["processor", "--config", str(tmp_path / "otel-ml.yaml")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 2 and "basic_auth_users.prometheus" in run.stderr and "web.yml" in run.stderr


# --- the app on a real socket ----------------------------------------------------------------------------

def _metrics() -> ModelMetrics:
    rng = np.random.default_rng(1)
    n = 300
    ref = ReferenceData(features={"x": rng.normal(size=n), "<b>plan</b>": rng.choice(np.array(["a", "b"], dtype=object), n),
                                  "customer": rng.choice(np.array(["h1", "h2"], dtype=object), n)}, task="classification")
    spec = ModelSpec()
    window = WindowData(
        model="m", model_version="2", task="classification", prediction_ids=np.array([str(i) for i in range(n)], dtype=object),
        timestamps=np.arange(n, dtype=float), features={"x": rng.normal(2, 1, n), "<b>plan</b>": ref.features["<b>plan</b>"],
                                                         "customer": ref.features["customer"]},
        output_label=np.full(n, "1", dtype=object), output_value=np.full(n, np.nan), score=np.full(n, 0.9),
        probabilities={}, segments={}, label=np.full(n, None, dtype=object))
    return compute_model_metrics(window, prepare_reference(ref, spec), spec)


def _snapshot() -> Snapshot:
    m = _metrics()
    now = time.time()
    return Snapshot(models={("m", "2"): m, ("m", "10"): m, ("other", "1"): ModelMetrics()},
                    computed_at={("m", "2"): now, ("m", "10"): now, ("other", "1"): now},
                    durations={("m", "2"): 0.1, ("m", "10"): 0.1, ("other", "1"): 0.0})


async def _serve(app: web.Application, fn, ssl_ctx=None):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ClientSession() as http:
            return await fn(http, port)
    finally:
        await runner.cleanup()


def test_pages_on_and_off_beside_metrics():
    snap = _snapshot()
    pages = Pages(ComputerSource(lambda: snap), PageOptions(hidden_features=frozenset({"customer"})))

    async def check(http, port):
        out = {}
        for path in ("/", "/models/m", "/models/m?version=2", "/models/nope", "/models/m?version=7", "/metrics"):
            async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                out[path] = (r.status, r.headers.get("Content-Security-Policy", ""), await r.text())
        return out

    on = asyncio.run(_serve(metrics_app(CollectorRegistry(), lambda: True, pages), check))
    assert [on[p][0] for p in on] == [200, 200, 200, 404, 404, 200]
    assert "default-src 'none'" in on["/"][1] and "frame-ancestors 'none'" in on["/models/m"][1]
    # the latest version is 10 (natural order), the other one is linked
    assert "version 10" in on["/models/m"][2] and 'href="../models/m?version=2"' in on["/models/m"][2]
    assert "version 2" in on["/models/m?version=2"][2]
    # a feature name is text, never markup; a hashed feature's categories are not named
    page = on["/models/m"][2]
    assert "<b>plan</b>" not in page and "&lt;b&gt;plan&lt;/b&gt;" in page
    assert ">h1<" not in page and "h1:" not in page and "hidden by anonymization" in page
    off = asyncio.run(_serve(metrics_app(CollectorRegistry(), lambda: True, None), check))
    assert [off[p][0] for p in ("/", "/models/m", "/metrics")] == [404, 404, 200]


def test_basic_auth_and_reload_of_the_web_config(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": bcrypt_hash("one", rounds=4)},
                                    "http_server_config": {"headers": {"X-Frame-Options": "deny"}}}))
    state = WebConfigState(WebConfig.load(str(path)))
    snap = _snapshot()
    app = metrics_app(CollectorRegistry(), lambda: True, Pages(ComputerSource(lambda: snap)), state)

    def bump():
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    async def check(http, port):
        async def status(p, auth=None):
            async with http.get(f"http://127.0.0.1:{port}{p}", headers={"Authorization": auth} if auth else {}) as r:
                await r.read()
                return r.status, r.headers
        base = []
        for p in ("/metrics", "/models/m"):
            s, h = await status(p)
            base.append((s, h.get("WWW-Authenticate", ""), h.get("X-Frame-Options")))
        base.append((await status("/metrics", basic("alice", "one")))[0])
        base.append((await status("/metrics", basic("alice", "two")))[0])
        base.extend([(await status(p))[0] for p in sorted(PROBE_PATHS)])
        path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": bcrypt_hash("two", rounds=4)}}))
        bump()
        base.append((await status("/metrics", basic("alice", "one")))[0])
        base.append((await status("/metrics", basic("alice", "two")))[0])
        path.write_text("basic_auth_users: [broken")
        bump()
        base.append((await status("/metrics", basic("alice", "two")))[0])
        return base

    got = asyncio.run(_serve(app, check))
    assert got[:2] == [(401, 'Basic realm="otel-ml", charset="UTF-8"', "deny")] * 2
    # the right password, a wrong one; probes without one; after the change the new password only;
    # a broken file fails closed
    assert got[2:] == [200, 401, 200, 200, 401, 200, 500]


def test_client_certificates_when_required(tmp_path, certs):
    d = certs.ca.parent
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=prometheus"], check=True, cwd=d,
                   capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", "client.crt", "-days", "2"], check=True, cwd=d, capture_output=True)
    state = WebConfigState(WebConfig.load(_write(tmp_path, {"tls_server_config": {
        "cert_file": str(certs.cert), "key_file": str(certs.key), "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(certs.ca)}})))
    app = metrics_app(CollectorRegistry(), lambda: True, None, state)

    async def check(http, port):
        out = []
        for with_cert in (True, False):
            ctx = ssl.create_default_context(cafile=str(certs.ca))
            if with_cert:
                ctx.load_cert_chain(str(d / "client.crt"), str(d / "client.key"))
            try:
                async with http.get(f"https://127.0.0.1:{port}/metrics", ssl=ctx) as r:
                    out.append(r.status)
            except Exception as exc:  # noqa: BLE001 - the handshake (or the first read) fails without a certificate
                out.append(type(exc).__name__)
        return out

    got = asyncio.run(_serve(app, check, state.server_ssl_context()))
    assert got[0] == 200 and got[1] != 200


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path):
    certs = make_certs(tmp_path / "a")
    state = WebConfigState(WebConfig.load(_write(tmp_path, {"tls_server_config": {
        "cert_file": str(certs.cert), "key_file": str(certs.key)}})))
    app = metrics_app(CollectorRegistry(), lambda: True, None, state)
    rotated = make_certs(tmp_path / "b")      # another CA, another certificate and key

    def served(port: int) -> bytes:
        pem = ssl.get_server_certificate(("127.0.0.1", port))
        return ssl.PEM_cert_to_DER_cert(pem)

    def der(path: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(path.read_text())

    original = der(certs.cert)

    async def check(http, port):
        loop = asyncio.get_running_loop()
        before = await loop.run_in_executor(None, served, port)
        for name in ("server.crt", "server.key"):
            (certs.cert.parent / name).write_bytes((rotated.cert.parent / name).read_bytes())
            st = os.stat(certs.cert.parent / name)
            os.utime(certs.cert.parent / name, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        async with http.get(f"https://127.0.0.1:{port}/-/healthy", ssl=False) as r:   # any request notices it
            assert r.status == 200
        after = await loop.run_in_executor(None, served, port)
        return before, after

    before, after = asyncio.run(_serve(app, check, state.server_ssl_context()))
    assert before == original and after == der(rotated.cert) and before != after


def test_web_endpoint_follows_the_config(tmp_path):
    cfg_path = tmp_path / "otel-ml.yaml"
    cfg_path.write_text("prometheus: {pages: false}\n")
    ep = web_endpoint(load_config(str(cfg_path)), CollectorRegistry(), lambda: True, Snapshot)
    assert ep.ssl_context is None and ep.scheme == "http"
    assert not [r for r in ep.app.router.routes() if r.resource.canonical.startswith("/models")]


# --- rendering ---------------------------------------------------------------------------------------------

def test_every_docs_link_of_the_pages_has_its_anchor_in_metrics_md():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', doc))
    assert set(ANCHORS.values()) <= anchors, set(ANCHORS.values()) - anchors
    page = render_model(ModelSnapshot("m", "1", _metrics()), options=PageOptions(docs_url="https://docs.example/d/"))
    used = set(re.findall(r'href="https://docs.example/d/metrics.md#([^"]+)"', page))
    assert used and used <= anchors


def test_drift_order_detected_first_then_how_far_relative_to_the_threshold():
    d = [DriftResult("calm", "ks", 0.01, 0.9, False), DriftResult("far", "wasserstein", 0.5, None, True),
         DriftResult("near", "psi", 0.25, None, True), DriftResult("tiny-p", "chi2", 50.0, 1e-12, True),
         DriftResult("close", "wasserstein", 0.09, None, False)]
    # wasserstein 0.5 / 0.1 = 5, psi 0.25 / 0.2 = 1.25, chi2 log(1e-12) / log(0.05) = 9.2; then the undetected
    assert [x.feature for x in drift_order(d)] == ["tiny-p", "far", "near", "close", "calm"]


def test_hidden_features_are_the_hashed_and_masked_ones():
    cfg = load_config(None)
    assert hidden_features(cfg.anonymization.rules) == frozenset()   # defaults: email dropped, zip generalized
    from otel_ml_processor.config import AnonymizationRule
    rules = [AnonymizationRule("ml.feature.customer", "hash"), AnonymizationRule("ml.feature.card", "mask"),
             AnonymizationRule("ml.feature.zip", "generalize", keep_chars=3), AnonymizationRule("enduser.id", "hash")]
    assert hidden_features(rules) == frozenset({"customer", "card"})
    h = categorical_histogram("card", np.array(["****1234"], dtype=object), np.array(["****1234"], dtype=object))
    m = ModelMetrics(drift=[DriftResult("card", "chi2", 0.0, 1.0, False)], feature_histograms={"card": h})
    page = render_model(ModelSnapshot("m", "1", m), options=PageOptions(hidden_features=frozenset({"card"})))
    assert "1234" not in page and "category 1 (hidden by anonymization)" in page


def test_missing_values_have_their_section_and_are_named_as_such_when_flagged():
    m = ModelMetrics(drift=[DriftResult("x", "ks", 0.05, 0.5, False, 0.9, 0.01),
                            DriftResult("x", "missing", 0.0, 1.0, False, 1.0, 0.01),
                            DriftResult("zip", "missing", 0.3, 1e-9, True, 2e-9, 0.01)],
                     feature_missing_ratio={"x": 0.0, "zip": 0.3}, feature_missing_reference={"x": 0.0, "zip": 0.01})
    page = render_model(ModelSnapshot("m", "1", m))
    rows = re.findall(r'data-missing-feature="([^"]+)" data-ratio="([^"]+)" data-detected="(\d)"', page)
    assert rows == [("zip", "0.3", "1"), ("x", "0.0", "0")]        # detected first
    assert '<td class="num">30.00 %</td><td class="num">1.00 %</td>' in page
    # the drift table keeps the distribution tests; the missing-value tests are in their own section
    assert 'data-method="missing"' not in page and 'data-feature="x" data-method="ks"' in page
    index = render_index([ModelSnapshot("m", "1", m)])
    assert "drift: zip (missing)" in index


def test_the_ood_card_shows_the_stable_floor_beside_the_ratio():
    with_floor = render_model(ModelSnapshot("m", "1", ModelMetrics(ood_ratio=0.0812, ood_ratio_floor=0.1575)))
    assert re.search(r"<b>8\.12 %</b><span class=\"muted\">of the window; stable up to 15\.75 %</span>", with_floor)
    # a snapshot written before the floor existed: the ratio alone
    older = render_model(ModelSnapshot("m", "1", ModelMetrics(ood_ratio=0.0812)))
    assert '<b>8.12 %</b><span class="muted">of the window</span>' in older and "stable up to" not in older


def test_index_lists_versions_latest_first_and_what_is_flagged():
    snap = _snapshot()
    source = ComputerSource(lambda: snap)
    assert [(s.model, s.version) for s in source.models()] == [("m", "10"), ("m", "2"), ("other", "1")]
    assert latest_version(["9", "10", "v2", "1.10", "1.9"]) == "v2" and latest_version(["1.9", "1.10"]) == "1.10"
    page = render_index(source.models())
    assert 'href="models/m"' in page and 'href="models/m?version=2"' in page and "drift: x" in page
    assert "nothing" in page     # the model without drift


def test_model_names_in_urls_as_the_alerts_link_them():
    """The shipped alerts link /models/<urlquery name>?version=<v>: spaces, slashes, non-ASCII, '+'."""
    names = ["my model", "a/b", "ünï+x"]
    snap = Snapshot(models={(n, "1"): ModelMetrics() for n in names}, computed_at={}, durations={})
    from urllib.parse import quote

    async def check(http, port):
        out = []
        for n in names:
            async with http.get(f"http://127.0.0.1:{port}/models/{quote(n, safe='')}?version=1") as r:
                out.append((r.status, f"<h1>{n}" in (await r.text())))
        async with http.get(f"http://127.0.0.1:{port}/") as r:
            out.append(sorted(re.findall(r'href="(models/[^"]+)"', await r.text())))
        return out

    got = asyncio.run(_serve(metrics_app(CollectorRegistry(), lambda: True, Pages(ComputerSource(lambda: snap))), check))
    assert got[:3] == [(200, True)] * 3
    assert got[3] == sorted(f"models/{quote(n, safe='')}" for n in names)
