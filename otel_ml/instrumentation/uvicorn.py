"""uvicorn (and what runs on it: gunicorn's uvicorn workers, BentoML, FastAPI's CLI): SIGTERM
delivers what otel-ml holds.

On SIGTERM or SIGINT, uvicorn shuts down gracefully and then raises the signal again with its
default action, which ends the process at once: ``atexit`` never runs, so otel-ml's exit
shipment would not either. After ``uvicorn.server.Server.shutdown`` (connections drained, the
app's lifespan shutdown done), when the server stops because of a signal, otel-ml shuts down
as at exit: the queued calls become records and are shipped within ``OTEL_ML_SHUTDOWN_TIMEOUT``
(what the hub has not acknowledged by then stays in the disk buffer for the next start).
A server stopped in code (no signal) is left alone; ``atexit`` covers it.

Activated by :class:`~otel_ml.instrumentation.MLInstrumentor` when the app imports uvicorn
(``opentelemetry-instrument uvicorn app:app --workers 2``): nothing to call, and no
``otel_ml.shutdown()`` in the app's shutdown hook is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

Wrap = Callable[[Any, str, Callable], None]


def _shutdown_wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    async def run() -> Any:
        result = await wrapped(*args, **kwargs)
        # uvicorn's record of the signals it caught: it raises them again once serve() returns
        if getattr(instance, "_captured_signals", None):
            import otel_ml

            # off the event loop: shipping may wait for the hub up to the shutdown timeout
            await asyncio.get_running_loop().run_in_executor(None, otel_ml.shutdown)
        return result

    return run()


def instrument(wrap: Wrap) -> None:
    """Deliver otel-ml's records after every uvicorn ``Server.shutdown`` caused by a signal."""
    from uvicorn.server import Server

    wrap(Server, "shutdown", _shutdown_wrapper)
