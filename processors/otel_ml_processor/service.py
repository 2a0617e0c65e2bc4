"""The processor service: wires the stages together and runs them until SIGTERM.

Threads: the asyncio loop (gRPC + HTTP I/O), one writer thread (commit: store, join, windows),
one compute thread; and ingest worker processes (decode, validate, anonymize), one per core
unless ``$OTEL_ML_INGEST_WORKERS`` says otherwise. SIGTERM or SIGINT: readiness goes to 503, the receivers stop accepting and
finish the requests in flight (each answered only after its batch is committed), the writer
drains, and the process exits 0 within ``SHUTDOWN_GRACE_SECONDS`` plus the last batch.

Example::

    from otel_ml_processor.config import load_config
    from otel_ml_processor.service import run
    run(load_config("otel-ml.yaml"))
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Optional

from aiohttp import web
from prometheus_client import CollectorRegistry

from otel_ml_processor.clean.batch import init_worker, warm_up
from otel_ml_processor.compute.manager import Computer, ModelWindows
from otel_ml_processor.config import Config
from otel_ml_processor.counters import Counters
from otel_ml_processor.export.http import web_endpoint
from otel_ml_processor.export.prometheus import MLCollector
from otel_ml_processor.pipeline import Ingest
from otel_ml_processor.receive.auth import BearerAuth
from otel_ml_processor.receive.grpc_server import start_grpc_server
from otel_ml_processor.receive.handlers import Handlers
from otel_ml_processor.receive.http_server import HttpReceiver, ssl_context
from otel_ml_processor.receive.limits import InflightGate
from otel_ml_processor.store.database import Database

log = logging.getLogger("otel_ml_processor")

#: Seconds the receivers get to finish in-flight requests on shutdown.
SHUTDOWN_GRACE_SECONDS = 10


def ingest_workers() -> int:
    """Ingest worker processes: ``$OTEL_ML_INGEST_WORKERS``, else one per core on multi-core machines.

    Decoding and cleaning (the costly, stateless part of ingest) run in them so that every
    core works; 0 keeps everything on the writer thread.
    """
    value = os.environ.get("OTEL_ML_INGEST_WORKERS")
    if value is not None and value.strip():
        return max(0, int(value))
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


def split_endpoint(endpoint: str) -> tuple:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class ProcessorService:
    def __init__(self, config: Config, registry: Optional[CollectorRegistry] = None):
        self.config = config
        self.auth = BearerAuth.from_env(config.receiver.bearer_token_env)
        self.db = Database(config.storage.url)
        self.counters = Counters()
        self.ingest: Ingest
        self.windows = ModelWindows(config, self.db, admitted=lambda m: self.ingest.models.admitted(m))
        self.ingest = Ingest(config, self.db, self.counters, self.windows)
        for model, reference in self.windows.file_references.items():
            # one type per feature: live values are read as the reference file's types
            self.ingest.kinds.declare(model, reference.feature_types())
        self.computer = Computer(config, self.db, self.windows, self.counters)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(MLCollector(self.counters, lambda: self.computer.snapshot))
        # /metrics, probes and model pages; TLS and basic auth from prometheus.web_config_file
        self.web = web_endpoint(config, self.registry, lambda: self.ready, lambda: self.computer.snapshot)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otel-ml-writer")
        self.pool = None
        self.handlers = Handlers(self.ingest, self.counters, self.writer, None, config.receiver.max_request_bytes)
        self.gate = InflightGate(config.receiver.max_inflight_bytes)
        self.ready = False
        self._grpc = None
        self._runners: list = []

    async def start(self) -> None:
        # Admit models already stored (in stored order) so that restarts keep the same set.
        for model, _version, _task in self.db.model_versions():
            self.ingest.models.admit(model, count=False)
        loaded = self.windows.rebuild()
        self.windows.check_references()   # a mismatching reference file is an error at start
        self.computer.run_once()
        log.info("windows rebuilt from the database: %d rows", loaded)
        workers = ingest_workers()
        if workers:
            self.pool = self._new_pool(workers)
            # Start the workers now (spawn imports take a moment), not on the first request.
            await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(self.pool, warm_up) for _ in range(workers)))
            self.handlers.pool = self.pool
            self.handlers.pool_factory = lambda: self._new_pool(workers)
        cfg = self.config.receiver
        self._grpc = await start_grpc_server(cfg, self.handlers, self.auth, self.gate)
        receiver = HttpReceiver(cfg, self.handlers, self.auth, self.gate)
        await self._site(receiver.app(), cfg.http_endpoint, ssl_context(cfg))
        await self._site(self.web.app, self.config.prometheus.endpoint, self.web.ssl_context)
        self.computer.start()
        self.ready = True
        log.info("otel-ml processor ready: OTLP/gRPC %s, OTLP/HTTP %s, metrics %s://%s/metrics",
                 cfg.grpc_endpoint, cfg.http_endpoint, self.web.scheme, self.config.prometheus.endpoint)

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
            initargs=(self.config.anonymization, {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}))
        return self.pool

    async def _site(self, app: web.Application, endpoint: str, ssl_ctx) -> None:
        # auto_decompress off: gzip bodies go through the receiver's bounded decompression
        # (receiver.max_request_bytes enforced before decompression finishes).
        runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        await runner.setup()
        host, port = split_endpoint(endpoint)
        await web.TCPSite(runner, host, port, ssl_context=ssl_ctx, shutdown_timeout=SHUTDOWN_GRACE_SECONDS).start()
        self._runners.append(runner)

    async def stop(self) -> None:
        self.ready = False
        self.handlers.pool_factory = None   # a worker dying now is not replaced
        started = time.monotonic()
        if self._grpc is not None:
            await self._grpc.stop(grace=SHUTDOWN_GRACE_SECONDS)
        for runner in self._runners:
            await runner.cleanup()
        # Requests already handed to the writer finish and commit before the exit.
        await asyncio.get_running_loop().run_in_executor(None, self.writer.shutdown, True)
        if self.handlers.pool is not None:
            self.handlers.pool.shutdown(wait=True)
        self.computer.stop()
        self.db.close()
        log.info("otel-ml processor stopped in %.2fs", time.monotonic() - started)


async def serve(config: Config) -> None:
    service = ProcessorService(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    log.info("shutting down")
    await service.stop()


def run(config: Config) -> None:
    asyncio.run(serve(config))
