"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, and a
small PNG decoder, for the page tests and ``tests/pages/make_screenshot.py``.

The DevTools websocket is spoken with aiohttp's client (already a dependency). A visit records
console errors (``Runtime.consoleAPICalled`` errors, ``Runtime.exceptionThrown``, ``Log.entryAdded``
errors, which include Content-Security-Policy violations and failed loads), answers a basic-auth
challenge as a user at the browser's prompt would (``Fetch.authRequired``), and returns the DOM
and screenshots.

Example::

    with Chromium(tmp_path) as browser:
        visit = browser.visit("https://127.0.0.1:9464/models/churn", auth=("prometheus", "s3cret"),
                              clip_selector="tr[data-detected='1'] svg.hist")
        assert not visit.console_errors and visit.auth_challenges == 1
        pixels = decode_png(visit.clip_png)         # rows of (r, g, b, a)
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--ignore-certificate-errors", "--hide-scrollbars", "--mute-audio"]


@dataclass
class Visit:
    url: str
    status: Optional[int] = None
    html: str = ""
    console_errors: list = field(default_factory=list)
    auth_challenges: int = 0
    screenshot_png: bytes = b""
    clip_png: bytes = b""
    clip_rect: Optional[dict] = None
    value: object = None          # the result of ``evaluate``


def chromium_binary() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise AssertionError("chromium is not installed: run scripts/install-test-deps (Debian package chromium)")
    return exe


class Chromium:
    """One headless Chromium process with a fresh profile; one visit at a time."""

    def __init__(self, tmp: Path, width: int = 1280, height: int = 900):
        self.tmp = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp))
        self.width, self.height = width, height
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    def __enter__(self) -> "Chromium":
        profile = self.tmp / "profile"
        self._log = open(self.tmp / "chromium.log", "ab")
        self.proc = subprocess.Popen([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                      f"--window-size={self.width},{self.height}", "about:blank"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}: "
                                     f"{(self.tmp / 'chromium.log').read_text(errors='replace')[-2000:]}")
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text().split()[0])
                return self
            time.sleep(0.1)
        raise AssertionError("chromium did not open its DevTools port")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def visit(self, url: str, auth: Optional[tuple] = None, dark: bool = True, clip_selector: Optional[str] = None,
              full_page: bool = True, evaluate: Optional[str] = None, timeout: float = 60) -> Visit:
        """Load ``url`` (answering a basic-auth prompt with ``auth``), in the dark or light colour scheme;
        screenshot the page and the element ``clip_selector``; ``evaluate`` a JS expression (its value)."""
        return asyncio.run(asyncio.wait_for(self._visit(url, auth, dark, clip_selector, full_page, evaluate), timeout))

    async def _visit(self, url, auth, dark, clip_selector, full_page, evaluate) -> Visit:
        import aiohttp

        visit = Visit(url)
        async with aiohttp.ClientSession() as http:
            async with http.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as resp:
                target = await resp.json(content_type=None)
            try:
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    await _Session(ws, visit).run(url, auth, dark, clip_selector, full_page, evaluate, self.width,
                                                  self.height)
            finally:
                async with http.get(f"http://127.0.0.1:{self.port}/json/close/{target['id']}"):
                    pass
        return visit


class _Session:
    def __init__(self, ws, visit: Visit):
        self.ws, self.visit = ws, visit
        self.ids = itertools.count(1)
        self.pending: dict = {}
        self.loaded = asyncio.Event()
        self.auth: Optional[tuple] = None

    async def call(self, method: str, **params):
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        return await fut

    async def send(self, method: str, **params) -> None:
        await self.ws.send_str(json.dumps({"id": next(self.ids), "method": method, "params": params}))

    async def reader(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                fut = self.pending.pop(data["id"])
                if "error" in data:
                    fut.set_exception(AssertionError(f"DevTools error: {data['error']}"))
                else:
                    fut.set_result(data.get("result", {}))
            elif "method" in data:
                await self.event(data["method"], data.get("params", {}))

    async def event(self, method: str, p: dict) -> None:
        v = self.visit
        if method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            v.console_errors.append("console." + p["type"] + ": " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            v.console_errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            v.console_errors.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.responseReceived" and p.get("type") == "Document":
            v.status = p["response"]["status"]
        elif method == "Fetch.requestPaused":
            await self.send("Fetch.continueRequest", requestId=p["requestId"])
        elif method == "Fetch.authRequired":
            v.auth_challenges += 1
            response = {"response": "ProvideCredentials", "username": self.auth[0], "password": self.auth[1]} \
                if self.auth and v.auth_challenges == 1 else {"response": "CancelAuth"}
            await self.send("Fetch.continueWithAuth", requestId=p["requestId"], authChallengeResponse=response)

    async def run(self, url, auth, dark, clip_selector, full_page, evaluate, width, height) -> None:
        v = self.visit
        self.auth = auth
        reader = asyncio.create_task(self.reader())
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                await self.call(f"{domain}.enable")
            if auth is not None:
                await self.call("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
            await self.call("Emulation.setEmulatedMedia", features=[
                {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
            await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                            mobile=False)
            self.loaded.clear()
            await self.call("Page.navigate", url=url)
            await self.loaded.wait()
            res = await self.call("Runtime.evaluate", expression="document.documentElement.outerHTML",
                                  returnByValue=True)
            v.html = res["result"]["value"]
            if evaluate:
                v.value = (await self.call("Runtime.evaluate", expression=evaluate, returnByValue=True))["result"].get("value")
            shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)
            v.screenshot_png = base64.b64decode(shot["data"])
            if clip_selector:
                rect = await self.call("Runtime.evaluate", returnByValue=True, expression=(
                    f"(() => {{ const e = document.querySelector({json.dumps(clip_selector)}); if (!e) return null;"
                    " e.scrollIntoView(); const r = e.getBoundingClientRect();"
                    " return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height}; })()"))
                v.clip_rect = rect["result"].get("value")
                if v.clip_rect:
                    clip = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                           clip={**v.clip_rect, "scale": 1})
                    v.clip_png = base64.b64decode(clip["data"])
            await asyncio.sleep(0.2)   # late console messages
        finally:
            reader.cancel()


# --- PNG ------------------------------------------------------------------------------------------

def png_size(data: bytes) -> tuple:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def decode_png(data: bytes) -> list:
    """Rows of (r, g, b, a) tuples of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append([tuple(line[x:x + bpp]) + ((255,) if bpp == 3 else ()) for x in range(0, stride, bpp)])
        prev = line
    return rows


def hex_rgb(colour: str) -> tuple:
    c = colour.lstrip("#")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))
