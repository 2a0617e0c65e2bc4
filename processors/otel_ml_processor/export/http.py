"""The processor's own HTTP endpoint: ``/metrics``, ``/-/healthy``, ``/-/ready`` and the model pages.

As Prometheus itself has them: ``/-/healthy`` answers 200 while the process serves;
``/-/ready`` answers 200 once the windows are rebuilt and the receivers listen, 503 before
and while shutting down.

With ``prometheus.pages`` (the default) it also serves ``/`` (the models) and
``/models/<name>`` (``?version=V``; the latest version without it), rendered from the last
computed snapshots (:mod:`.pages`): on PostgreSQL every replica's, from the shared database
(:class:`~.pages.database_source.DatabaseSource`: one base URL behind a load balancer serves
every model), on SQLite the processor's own. They are read and rendered on a worker thread,
off the event loop that also runs the receivers.

With ``prometheus.web_config_file`` (:mod:`.webconfig`) every path but the two probes needs
basic auth; a missing or wrong password gets 401 with ``WWW-Authenticate: Basic``, which a
browser answers with its login prompt. TLS is the listening socket's (see the service).

Example::

    app = metrics_app(registry, is_ready=lambda: service.ready)
    app = metrics_app(registry, is_ready, pages=Pages(ComputerSource(lambda: computer.snapshot)),
                      web_state=WebConfigState(WebConfig.load("web.yml")))
    endpoint = web_endpoint(config, registry, is_ready, lambda: computer.snapshot, db)
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from otel_ml_processor.config import Config
from otel_ml_processor.export.pages.database_source import DatabaseSource
from otel_ml_processor.export.pages.render import (
    PageOptions, page_options, render_index, render_model, render_not_found,
)
from otel_ml_processor.export.pages.source import ComputerSource, SnapshotSource
from otel_ml_processor.export.pages.theme import CSP
from otel_ml_processor.export.webconfig import WebConfig, WebConfigState
from otel_ml_processor.store.database import Database

if TYPE_CHECKING:
    from otel_ml_processor.compute.manager import Snapshot

__all__ = ["metrics_app", "web_endpoint", "page_source", "WebEndpoint", "Pages", "PROBE_PATHS"]

#: Paths that never need a password (they only say whether the process serves).
PROBE_PATHS = frozenset({"/-/healthy", "/-/ready"})

_PAGE_HEADERS = {
    "Content-Security-Policy": CSP + "; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Pages:
    """The handlers of ``/`` and ``/models/<name>`` over a :class:`SnapshotSource`."""

    def __init__(self, source: SnapshotSource, options: PageOptions = PageOptions()):
        self.source = source
        self.options = options

    @staticmethod
    def _html(text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                            headers=_PAGE_HEADERS)

    async def index(self, _request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        return self._html(await loop.run_in_executor(None, lambda: render_index(self.source.models(), self.options)))

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        version = request.query.get("version") or None

        def render() -> tuple:   # reads the source (maybe the database): on a worker thread
            snap = self.source.latest(name, version)
            keys = self.source.keys()
            if snap is None:
                return render_not_found(name, version, list(dict.fromkeys(m for m, _v in keys))), 404
            return render_model(snap, [v for m, v in keys if m == name], self.options), 200

        text, status = await asyncio.get_running_loop().run_in_executor(None, render)
        return self._html(text, status)


def _protect(state: WebConfigState):
    @web.middleware
    async def protect(request: web.Request, handler):
        cfg = state.current()
        if cfg is None:   # the web config file became invalid: fail closed
            return web.Response(status=500, text="Internal Server Error: invalid web config file\n")
        if request.path not in PROBE_PATHS and not await state.check_basic_auth(
                cfg, request.headers.get("Authorization")):
            response = web.Response(status=401, text="Unauthorized\n",
                                    headers={"WWW-Authenticate": 'Basic realm="otel-ml", charset="UTF-8"'})
        else:
            response = await handler(request)
        response.headers.update(cfg.headers)
        return response
    return protect


def metrics_app(registry: CollectorRegistry, is_ready: Callable[[], bool], pages: Optional[Pages] = None,
                web_state: Optional[WebConfigState] = None) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def healthy(_request: web.Request) -> web.Response:
        return web.Response(text="otel-ml processor is Healthy.\n")

    async def ready(_request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="otel-ml processor is Ready.\n")
        return web.Response(status=503, text="Service Unavailable\n")

    app = web.Application(middlewares=[_protect(web_state)] if web_state is not None else [])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    if pages is not None:
        app.router.add_get("/", pages.index)
        app.router.add_get("/models/{name}", pages.model)
    return app


@dataclass
class WebEndpoint:
    app: web.Application
    ssl_context: Optional[ssl.SSLContext]

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


def page_source(snapshot: Callable[[], Snapshot], db: Optional[Database] = None) -> SnapshotSource:
    """Where the pages read: on PostgreSQL (replicas may share it) every version in the database,
    this replica's own from ``snapshot``; on SQLite (one processor), or without a database, only
    ``snapshot``, the compute thread's last one."""
    if db is None or db.dialect == "sqlite":
        return ComputerSource(snapshot)
    return DatabaseSource(db, ComputerSource(snapshot, owner=db.replica))


def web_endpoint(config: Config, registry: CollectorRegistry, is_ready: Callable[[], bool],
                 snapshot: Callable[[], Snapshot], db: Optional[Database] = None) -> WebEndpoint:
    """The web port as the config has it: pages on ``prometheus.pages`` (from :func:`page_source`),
    TLS and basic auth from ``prometheus.web_config_file`` (a bad file raises ConfigError: the
    processor does not start)."""
    state, ssl_ctx = None, None
    if config.prometheus.web_config_file:
        state = WebConfigState(WebConfig.load(config.resolve_path(config.prometheus.web_config_file)))
        ssl_ctx = state.server_ssl_context()
    pages = Pages(page_source(snapshot, db), page_options(config)) if config.prometheus.pages else None
    return WebEndpoint(metrics_app(registry, is_ready, pages, state), ssl_ctx)
