"""The processor's own HTTP endpoint: ``/metrics``, ``/-/healthy``, ``/-/ready``.

As Prometheus itself has them: ``/-/healthy`` answers 200 while the process serves;
``/-/ready`` answers 200 once the windows are rebuilt and the receivers listen, 503 before
and while shutting down.

Example::

    app = metrics_app(registry, is_ready=lambda: service.ready)
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def metrics_app(registry: CollectorRegistry, is_ready: Callable[[], bool]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def healthy(_request: web.Request) -> web.Response:
        return web.Response(text="otel-ml processor is Healthy.\n")

    async def ready(_request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="otel-ml processor is Ready.\n")
        return web.Response(status=503, text="Service Unavailable\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app
