"""``otel-ml demo`` prints its model page's address, and that address serves the page while it runs."""

from __future__ import annotations

import re
import subprocess
import threading

import pytest

from tests.support import http_get, otel_ml_command, wait_for

pytestmark = pytest.mark.e2e


def test_demo_prints_the_address_of_a_page_that_serves(tmp_path):
    proc = subprocess.Popen(otel_ml_command() + ["demo", "--duration", "12"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        url = wait_for(lambda: next((m.group(1) for line in list(lines)
                                     if (m := re.search(r"model page: (http://\S+)", line))), None),
                       timeout=90, what=f"the page's address in the demo's output ({lines})")
        status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(http_get(url)), timeout=60,
                                what=f"{url} serving the model page")
        # while the first_n reference fills, the window card says so instead of counting predictions
        assert b"<h1>breast-cancer" in body and (b"predictions" in body or b"collecting the reference" in body)
    finally:
        assert proc.wait(timeout=120) == 0, "".join(lines)
        reader.join(timeout=10)
    assert any("otel-ml report --config" in line for line in lines)
