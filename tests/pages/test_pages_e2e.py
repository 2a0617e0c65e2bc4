"""Model pages end to end (issue 15): a real processor serving over TLS with basic auth, a real
headless Chromium, a real Prometheus, and ``otel-ml report`` on the database once the processor
is stopped.

One processor for the module (the last test stops it): a binary model whose window moved ``x``
and ``plan`` and kept ``y``; every prediction carries an ``enduser.id``, a hashed ``customer``
and a dropped ``email``, all marked with ``SECRET``.
"""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from otel_ml_processor.export.pages.theme import OOD_COLOUR_DARK, REFERENCE_COLOUR_DARK, WINDOW_COLOUR_DARK
from tests.pages.browser import Chromium, decode_png, hex_rgb, png_size
from tests.pages.stack import (
    ANONYMIZATION, DRIFTED, MODEL, MODEL_CONFIG, STABLE, VERSION, WIN, SecureProcessor, identifiers, make_certs,
    send_stream, write_web_config,
)
from tests.support import PrometheusProcess, otel_ml_command, wait_for

pytestmark = pytest.mark.e2e

USER, PASSWORD = "prometheus", "s3cret-pässword"
LIGHT_WINDOW_COLOUR = "#0969da"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pages")
    certs = make_certs(tmp)
    web = write_web_config(tmp, certs, {USER: PASSWORD})
    with SecureProcessor(tmp, web, certs, (USER, PASSWORD), models=[MODEL_CONFIG],
                         extra={"anonymization": ANONYMIZATION}) as proc:
        proc.certs = certs
        send_stream(proc.grpc_endpoint)
        labels = {"model": MODEL, "model_version": VERSION}
        wait_for(lambda: all(proc.sample("ml_drift_detected", {**labels, "feature": f}) == 1 for f in DRIFTED)
                 and proc.sample("ml_window_labeled", labels) == WIN - 40, timeout=120,
                 what="drift of x and plan and the labels computed")
        yield proc


def _rows(html: str) -> dict:
    """feature -> (attributes, inner HTML) of the drift table's rows."""
    out = {}
    for m in re.finditer(r'<tr id="f-\d+" data-feature="([^"]*)"([^>]*)>(.*?)</tr>', html, re.S):
        out[m.group(1)] = (m.group(2), m.group(3))
    return out


def _colours(png: bytes) -> set:
    return {px[:3] for row in decode_png(png) for px in row}


def test_model_page_in_a_real_browser(stack, tmp_path):
    proc = stack
    detected = {f for f in ("x", "y", "plan", "customer")
                if proc.sample("ml_drift_detected", {"model": MODEL, "feature": f}) == 1}
    assert set(DRIFTED) <= detected and not set(STABLE) & detected
    with Chromium(tmp_path) as browser:
        dark = browser.visit(f"{proc.web_url}/models/{MODEL}", auth=(USER, PASSWORD),
                             clip_selector="tr[data-feature='x'] svg.hist")
        light = browser.visit(f"{proc.web_url}/models/{MODEL}", auth=(USER, PASSWORD), dark=False,
                              clip_selector="tr[data-feature='x'] svg.hist")
        index = browser.visit(f"{proc.web_url}/", auth=(USER, PASSWORD))
    # the browser met the 401 + WWW-Authenticate challenge and answered it, as a person at the prompt
    # does; later visits reuse the credentials it keeps for the site
    assert dark.auth_challenges == 1
    for v in (dark, light, index):
        assert v.status == 200 and v.console_errors == [], (v.url, v.console_errors)   # incl. CSP violations
    rows = _rows(dark.html)
    for feature in detected:
        attrs, cells = rows[feature]
        assert 'data-detected="1"' in attrs and "yes" in cells
        assert re.search(r'<svg class="hist"[^>]*>.*<rect class="win"', cells, re.S), feature   # its chart
    assert 'data-detected="0"' in rows["y"][0] and '<svg class="hist"' in rows["y"][1]
    # detected first, so the drifted features lead the table
    flags = [int('data-detected="1"' in attrs) for attrs, _ in rows.values()]
    assert flags == sorted(flags, reverse=True) and sum(flags) >= len(detected)
    width, height = png_size(dark.screenshot_png)
    assert width == 1280 and height > 900          # the whole page, beyond the first screen
    # the chart of x, in pixels: reference and window bars, and window bars beyond the reference (OOD)
    dark_colours, light_colours = _colours(dark.clip_png), _colours(light.clip_png)
    for colour in (WINDOW_COLOUR_DARK, REFERENCE_COLOUR_DARK, OOD_COLOUR_DARK):
        assert hex_rgb(colour) in dark_colours, colour
    assert hex_rgb(LIGHT_WINDOW_COLOUR) in light_colours and hex_rgb(WINDOW_COLOUR_DARK) not in light_colours
    assert len(dark_colours) > 5
    # the index lists the model version, its counts and what is flagged
    assert f">{MODEL}</a>" in index.html and "drift: " in index.html
    assert all(f in index.html for f in DRIFTED)


def test_model_page_fits_a_phone(stack, tmp_path):
    proc = stack
    with Chromium(tmp_path, width=390, height=844) as phone:
        v = phone.visit(f"{proc.web_url}/models/{MODEL}", auth=(USER, PASSWORD),
                        evaluate="[document.documentElement.scrollWidth, window.innerWidth]")
    assert v.console_errors == []
    scroll_width, viewport = v.value
    assert viewport == 390 and scroll_width <= viewport   # wide tables scroll inside their box, not the page


def test_a_wrong_or_missing_password_gets_401(stack):
    proc = stack
    for path in ("/metrics", "/", f"/models/{MODEL}", "/no-such-page"):
        for kw in ({}, {"auth": (USER, "wrong")}, {"auth": ("nobody", PASSWORD)}, {"header": "Basic bm90LWJhc2U2NA=="},
                   {"header": "Bearer " + PASSWORD}):
            status, headers, _ = proc.get(path, **kw)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), (path, kw)
    for path in ("/metrics", "/", f"/models/{MODEL}"):
        assert proc.get(path, auth=(USER, PASSWORD))[0] == 200
    assert proc.get("/no-such-page", auth=(USER, PASSWORD))[0] == 404
    # the probes answer without a password (TLS still applies)
    assert proc.get("/-/healthy")[0] == 200 and proc.get("/-/ready")[0] == 200
    # plain HTTP on the TLS port gets nothing
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{proc.metrics_endpoint}/-/healthy", timeout=5).read()


def test_prometheus_scrapes_over_tls_with_basic_auth(stack, tmp_path):
    proc = stack

    def job(name: str, auth) -> dict:
        j = {"job_name": name, "scheme": "https", "tls_config": {"ca_file": str(proc.certs.ca)},
             "static_configs": [{"targets": [proc.metrics_endpoint]}]}
        if auth:
            j["basic_auth"] = {"username": auth[0], "password": auth[1]}
        return j

    prom = PrometheusProcess(tmp_path, targets=[])
    (prom.tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [job("right", (USER, PASSWORD)), job("wrong", (USER, "wrong")), job("none", None)]}))
    with prom:
        wait_for(lambda: prom.value('up{job="right"}') == 1 and prom.value('up{job="wrong"}') == 0
                 and prom.value('up{job="none"}') == 0, timeout=60, what="the three scrapes")
        assert prom.value(f'ml_window_predictions{{job="right", model="{MODEL}"}}') == WIN
        assert prom.query('ml_window_predictions{job=~"wrong|none"}') == []


def test_identifiers_never_reach_a_page_or_metrics(stack):
    proc = stack
    bodies = {p: proc.get(p, auth=(USER, PASSWORD))[2].decode() for p in
              ("/", f"/models/{MODEL}", f"/models/{MODEL}?version={VERSION}", "/metrics")}
    for path, body in bodies.items():
        leaked = [i for i in identifiers() if i in body]
        assert not leaked and "SECRET" not in body, (path, leaked[:3])
    page = bodies[f"/models/{MODEL}"]
    rows = _rows(page)
    # the hashed feature is still drawn, with its categories unnamed; the dropped one never arrives
    assert '<svg class="hist"' in rows["customer"][1] and "hidden by anonymization" in rows["customer"][1]
    assert "email" not in rows and "email" not in page


def test_report_from_the_database_with_the_processor_stopped(stack, tmp_path):
    proc = stack
    scores = {f: proc.sample("ml_drift_score", {"model": MODEL, "feature": f}) for f in ("x", "y", "plan", "customer")}
    assert proc.stop() == 0
    out = tmp_path / "incident.html"
    run = subprocess.run(otel_ml_command() + ["report", "--config", str(proc.config_path), "--model", MODEL,
                                              "--output", str(out)], capture_output=True, text=True, timeout=300,
                         env=proc.env, cwd=proc.tmp)
    assert run.returncode == 0, run.stderr
    assert "\r[" not in run.stderr          # no progress bar when stderr is not a terminal
    html = out.read_text()
    rows = _rows(html)
    # the same window, reference and engine as the processor: the same numbers
    for feature, score in scores.items():
        attrs, cells = rows[feature]
        assert float(re.search(r'data-score="([^"]+)"', attrs).group(1)) == score, feature
        assert '<svg class="hist"' in cells
    for feature in DRIFTED:
        assert 'data-detected="1"' in rows[feature][0]
    assert "offline report" in html and 'href="../' not in html     # no links into a processor
    assert not [i for i in identifiers() if i in html] and "SECRET" not in html
    # a version that does not exist: a clear error naming the ones that do
    bad = subprocess.run(otel_ml_command() + ["report", "--config", str(proc.config_path), "--model", MODEL,
                                              "--version", "99"], capture_output=True, text=True, timeout=120,
                         env=proc.env, cwd=proc.tmp)
    assert bad.returncode == 1 and f"versions: {VERSION}" in bad.stderr
    assert Path(proc.db_path).exists()
