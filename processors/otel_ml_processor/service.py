"""The processor service: wires the stages together and runs them until SIGTERM.

This is the one module that knows every stage. Each stage imports only the stages before it
(receive -> clean -> store -> join -> compute -> export); what flows forward is handed over
here, through the types the stages define: the receivers hand requests to an
:class:`~otel_ml_processor.receive.handlers.Ingestor` (:class:`WriterChain`), which runs
clean's admission, the store, the label join, and hands each committed write to compute's
:class:`~otel_ml_processor.compute.manager.CommitListener`; the exporter reads compute's last
snapshot.

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
import socket
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Optional, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from otel_ml import semconv as sc
from otel_ml_processor.clean.admit import Admission
from otel_ml_processor.clean.batch import CleanBatch, Cleaner, clean_in_worker, init_worker, warm_up
from otel_ml_processor.compute.manager import CommitListener, Committed, Computer, ModelWindows
from otel_ml_processor.config import Config
from otel_ml_processor.counters import Caps, Counters
from otel_ml_processor.export.http import web_endpoint
from otel_ml_processor.export.prometheus import MLCollector
from otel_ml_processor.join.labels import LabelJoiner
from otel_ml_processor.receive.auth import BearerAuth
from otel_ml_processor.receive.grpc_server import start_grpc_server
from otel_ml_processor.receive.handlers import CommitResult, Handlers, Unavailable
from otel_ml_processor.receive.http_server import HttpReceiver, ssl_context
from otel_ml_processor.receive.limits import InflightGate
from otel_ml_processor.receive.otlp import LogEvent
from otel_ml_processor.store.database import RETRYABLE_ERRORS, Database
from otel_ml_processor.store.writer import StoreWriter

log = logging.getLogger("otel_ml_processor")

#: Seconds the receivers get to finish in-flight requests on shutdown.
SHUTDOWN_GRACE_SECONDS = 10


def ingest_workers() -> int:
    """Ingest worker processes: ``$OTEL_ML_INGEST_WORKERS``, else one per core on multi-core machines.

    Decoding and cleaning (the costly, stateless part of ingest) run in them so that every
    core works; 0 keeps everything on the writer thread.
    """
    value = os.environ.get(sc.ENV_INGEST_WORKERS)
    if value is not None and value.strip():
        return max(0, int(value))
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


def replica_id(config: Config, environ: Optional[dict] = None) -> str:
    """This replica's identity in the shared database: ``$OTEL_ML_REPLICA_ID``, else the host
    name and the OTLP/gRPC endpoint (stable across restarts of the same replica; set the variable
    where host names change, e.g. to a StatefulSet's pod name)."""
    value = (os.environ if environ is None else environ).get(sc.ENV_REPLICA_ID, "").strip()
    return value or f"{socket.gethostname()}/{config.receiver.grpc_endpoint}"


def split_endpoint(endpoint: str) -> tuple:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class WriterChain:
    """The writer thread's chain, as the receivers see it (an ``Ingestor``).

    clean (admission: counts, caps, feature kinds) -> store (predictions, labels, audit events,
    each committed before the next) -> join (counts) -> compute (the predictions stored and the
    labels joined, as a :class:`Committed`). A write that is committed is handed to compute even
    when a later one of the same request fails: the request is answered "retry", and its resend
    finds those rows stored. Labels joined by another replica reach compute through the
    database (each compute cycle reads those since its last one), so that a label reaches the
    owner of its model wherever it entered.
    """

    def __init__(self, cleaner: Cleaner, admission: Admission, store: StoreWriter, joiner: LabelJoiner,
                 compute: CommitListener):
        self.cleaner, self.admission, self.store, self.joiner, self.compute = cleaner, admission, store, joiner, compute

    def clean(self, kind: str, body: bytes, content_type: str, encoding: Optional[str], max_bytes: int,
              received_at: float) -> CleanBatch:
        return self.cleaner.request(kind, body, content_type, encoding, max_bytes, received_at)

    def clean_events(self, events: Sequence[LogEvent]) -> CleanBatch:
        return self.cleaner.events(events)

    def commit(self, batch: CleanBatch, now: float) -> CommitResult:
        try:
            return self._commit(batch, now)
        except RETRYABLE_ERRORS as exc:
            log.warning("storage unavailable, asking the client to retry: %s", type(exc).__name__)
            raise Unavailable("storage unavailable: retry later") from exc

    def _commit(self, batch: CleanBatch, now: float) -> CommitResult:
        result = self.admission.check(batch)
        if batch.predictions:
            stored = self.store.predictions(batch.predictions, now)
            joins = self.joiner.joined(stored.joins, now)
            self.compute.committed(Committed(predictions=stored.inserted, ids=stored.ids, received_at=now, joins=joins))
            result.add(stored.result)
        if batch.labels:
            stored = self.store.labels(batch.labels, now)
            self.compute.committed(Committed(received_at=now, joins=self.joiner.joined(stored.joins, now)))
            result.add(stored.result)
        return result.add(self.store.audits(batch.audits))


class ProcessorService:
    def __init__(self, config: Config, registry: Optional[CollectorRegistry] = None):
        self.config = config
        self.auth = BearerAuth.from_env(config.receiver.bearer_token_env)
        self.replica = replica_id(config)
        self.db = Database(config.storage.url, replica=self.replica)
        self.counters = Counters()
        self.caps = Caps(config.limits.max_models, config.limits.max_features_per_model, self.counters,
                         initial_models=[m.name for m in config.models])
        self.windows = ModelWindows(config, self.db, self.caps)
        self.chain = WriterChain(Cleaner(config.anonymization), Admission(self.counters, self.caps),
                                 StoreWriter(self.db, self.counters, self.caps),
                                 LabelJoiner(self.counters, self.caps), self.windows)
        for model, reference in self.windows.file_references.items():
            # one type per feature: live values are read as the reference file's types
            self.chain.admission.kinds.declare(model, reference.feature_types())
        self.computer = Computer(config, self.db, self.windows, self.counters)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(MLCollector(self.counters, lambda: self.computer.snapshot))
        # /metrics, probes and model pages (every replica's models, from the database on PostgreSQL);
        # TLS and basic auth from prometheus.web_config_file
        self.web = web_endpoint(config, self.registry, lambda: self.ready, lambda: self.computer.snapshot, self.db)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otel-ml-writer")
        self.pool: Optional[ProcessPoolExecutor] = None
        self.handlers = Handlers(self.chain, self.counters, self.writer, None, config.receiver.max_request_bytes,
                                 pool_task=clean_in_worker)
        self.gate = InflightGate(config.receiver.max_inflight_bytes)
        self.ready = False
        self._grpc = None
        self._runners: list = []

    async def start(self) -> None:
        # SQLite: versions stored before owners were recorded (PostgreSQL: leases own compute)
        claimed = self.db.claim_unowned() if self.db.leases is None else 0
        # Admit the models this replica owns (by name) so that restarts keep the same set.
        for v in self.db.model_owners():
            if v.owner == self.replica:
                self.caps.model(v.model, count=False)
        sync = self.windows.sync()
        self.windows.check_references()   # a mismatching reference file is an error at start
        self.computer.run_once()
        log.info("replica %s: %d model versions owned (%d claimed), windows rebuilt from the database: %d rows",
                 self.replica, len(sync.owned), claimed, sync.loaded)
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
        await self._site(receiver.app(), cfg.http_endpoint, ssl_context(cfg), "receiver.http_endpoint")
        await self._site(self.web.app, self.config.prometheus.endpoint, self.web.ssl_context, "prometheus.endpoint")
        self.computer.start()
        self.ready = True
        log.info("otel-ml processor ready: OTLP/gRPC %s, OTLP/HTTP %s, metrics %s://%s/metrics",
                 cfg.grpc_endpoint, cfg.http_endpoint, self.web.scheme, self.config.prometheus.endpoint)

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        pool = self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
            initargs=(self.config.anonymization, {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}))
        return pool

    async def _site(self, app: web.Application, endpoint: str, ssl_ctx, key: str) -> None:
        # auto_decompress off: gzip bodies go through the receiver's bounded decompression
        # (receiver.max_request_bytes enforced before decompression finishes).
        runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        await runner.setup()
        host, port = split_endpoint(endpoint)
        self._runners.append(runner)
        try:
            await web.TCPSite(runner, host, port, ssl_context=ssl_ctx, shutdown_timeout=SHUTDOWN_GRACE_SECONDS).start()
        except OSError as exc:   # e.g. the port is in use: name the key, not aiohttp's internals
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise OSError(exc.errno, f"{key} {endpoint}: cannot listen: {reason}") from None

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
        if self.db.leases is not None:
            try:   # the other replicas take this one's versions at their next cycle, not after ttl
                self.db.leases.give_up()
            except RETRYABLE_ERRORS:
                log.warning("could not release the compute leases: they expire by themselves")
        self.db.close()
        log.info("otel-ml processor stopped in %.2fs", time.monotonic() - started)


async def serve(config: Config) -> None:
    service = ProcessorService(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except BaseException:
        # a start that failed half way (a port in use) stops what it started before the error
        await service.stop()
        raise
    await stop.wait()
    log.info("shutting down")
    await service.stop()


def run(config: Config) -> None:
    asyncio.run(serve(config))
