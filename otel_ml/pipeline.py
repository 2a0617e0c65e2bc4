"""The ML event pipeline of one process: recorder thread -> OTLP bytes -> disk buffer -> receiver.

``ml.prediction`` / ``ml.label`` / ``ml.audit`` events are encoded straight into OTLP
LogRecord bytes (``otel_ml.events``), kept in the durable SQLite buffer and shipped as they
are (``otel_ml.outbox``), with the same resource as the service's tracer provider, so they
survive a hub outage or a restart; spans, metrics and application logs keep using the global
providers that ``opentelemetry-instrument`` (or ``otel_ml.configure``) set up. Given a
``logger_provider``, the ML events go through it instead (decoded into SDK log records, no
disk buffer).

Example::

    from otel_ml.config import MLConfig
    from otel_ml.pipeline import MLPipeline

    pipe = MLPipeline(MLConfig.from_env(buffer_path="/tmp/ml.db"))
    ...
    pipe.shutdown()        # ships within OTEL_ML_SHUTDOWN_TIMEOUT, keeps the rest on disk
"""

from __future__ import annotations

import atexit
import logging
import sys
from typing import Any, Mapping, Optional

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider as APILoggerProvider
from opentelemetry._logs import get_logger_provider
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.trace import TracerProvider

from otel_ml import semconv as sc
from otel_ml import wire
from otel_ml.buffer import MemoryBuffer, SQLiteBuffer
from otel_ml.config import MLConfig, default_buffer_path
from otel_ml.events import NO_TRACE, EventEncoder, TraceIds
from otel_ml.forks import call_in_child
from otel_ml.outbox import Outbox, legacy_record
from otel_ml.recorder import IdHook, ModelHook, Recorder
from otel_ml.version import __version__

_log = logging.getLogger(__name__)

_active: Optional["MLPipeline"] = None


def active() -> Optional["MLPipeline"]:
    """The pipeline of the running instrumentation, if any."""
    return _active


def _set_active(pipe: Optional["MLPipeline"]) -> None:
    global _active  # one process-wide pipeline, set by instrument()/uninstrument()
    _active = pipe


def _resource_of(tracer_provider: Any) -> Resource:
    resource = getattr(tracer_provider, "resource", None)
    return resource if isinstance(resource, Resource) else Resource.create()


class LoggerSink:
    """Hands encoded records to an app's LoggerProvider, decoded into SDK log records."""

    def __init__(self, logger_provider: APILoggerProvider) -> None:
        self.logger_provider = logger_provider
        self._logger = logger_provider.get_logger(sc.INSTRUMENTATION_NAME, __version__)

    def put(self, records: list) -> None:
        from otel_ml.decode import emit_records  # only this option needs the proto parser

        emit_records(self._logger, records)

    def tick(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flush = getattr(self.logger_provider, "force_flush", None)
        return bool(flush(timeout_millis)) if flush is not None else True


class MLPipeline:
    """Recorder + encoder + outbox (durable buffer and sender) + the logging bridge, shut down together.

    ``sender`` (an object with ``send(body, timeout) -> bool``) or ``log_exporter`` (an SDK
    ``LogRecordExporter``) replace the OTLP sender the ``OTEL_EXPORTER_OTLP_*`` variables
    describe; ``logger_provider`` replaces the buffer and the sender altogether.
    """

    def __init__(
        self,
        config: MLConfig,
        *,
        tracer_provider: Optional[TracerProvider] = None,
        meter_provider: Optional[MeterProvider] = None,
        logger_provider: Optional[APILoggerProvider] = None,
        log_exporter: Any = None,
        sender: Any = None,
        model_hook: Optional[ModelHook] = None,
        id_hook: Optional[IdHook] = None,
    ) -> None:
        self.config = config
        self.encoder = EventEncoder()
        self.outbox: Optional[Outbox] = None
        if logger_provider is not None:
            sink: Any = LoggerSink(logger_provider)
        else:
            resource = _resource_of(tracer_provider or trace.get_tracer_provider())
            if sender is None:
                from otel_ml import senders

                sender = senders.ExporterSender(log_exporter) if log_exporter is not None else senders.sender_from_env()
            if config.buffer_path == "":
                buffer: Any = MemoryBuffer(config.buffer_max_bytes)
            else:
                path = config.buffer_path or default_buffer_path(
                    str(resource.attributes.get(SERVICE_NAME, "unknown_service")))
                with suppress_instrumentation():      # opening the file: no sqlite span in the app's traces
                    buffer = SQLiteBuffer(path, config.buffer_max_bytes, legacy=legacy_record(self.encoder))
            sink = self.outbox = Outbox(
                buffer, sender, resource=wire.resource_bytes(resource.attributes),
                scope=wire.scope_bytes(sc.INSTRUMENTATION_NAME, __version__), schema_url=resource.schema_url or "",
                export_interval_ms=config.export_interval_ms, batch_size=config.export_batch_size,
                shutdown_timeout_ms=config.shutdown_timeout_ms, on_dropped=self._on_dropped)
        self.sink = sink
        self.recorder: Recorder = Recorder(config, sink=sink, encoder=self.encoder, tracer_provider=tracer_provider,
                                 meter_provider=meter_provider, model_hook=model_hook, id_hook=id_hook)
        self._handler: Optional[logging.Handler] = None
        self._logging_instrumentor: Any = None
        if config.logging_bridge:
            self._bridge_logging()
        self._closed = False
        atexit.register(self.shutdown)
        call_in_child(self, "_after_fork")

    def _after_fork(self) -> None:
        # multiprocessing's forked workers end with os._exit(): no atexit. Its own exit hook
        # (multiprocessing.util._exit_function) runs finalizers, so the child's shutdown is one.
        # The worker clears the finalizers it inherited and then runs its after-fork hooks: the
        # finalizer is registered from one of those.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None and not self._closed:
            mp_util.register_after_fork(self, MLPipeline._shutdown_with_worker)

    def _shutdown_with_worker(self) -> None:
        sys.modules["multiprocessing.util"].Finalize(self, self.shutdown, exitpriority=0)

    def record(self, event_name: str, attributes: Mapping[str, Any], time_ns: int,
               trace_ids: TraceIds = NO_TRACE) -> None:
        """Encode one event now and queue it for the buffer (any thread)."""
        self.sink.put([self.encoder.event(event_name, attributes, time_ns=time_ns, trace=trace_ids)])

    def _on_dropped(self, n: int) -> None:
        recorder: Optional[Recorder] = getattr(self, "recorder", None)   # None while __init__ builds the outbox
        if recorder is not None:
            recorder.dropped.add(n, {sc.ML_DROP_REASON: sc.DROP_BUFFER_FULL})

    def _bridge_logging(self) -> None:
        """Send Python ``logging`` records to the service's OTel LoggerProvider (once).

        Uses ``opentelemetry-instrumentation-logging`` when installed (the maintained bridge;
        ``opentelemetry-instrument`` may also load it: it is a singleton, so it bridges once),
        else the SDK's own (deprecated) ``LoggingHandler``.
        """
        root = logging.getLogger()
        if any(type(h).__name__ == "LoggingHandler" and "opentelemetry" in type(h).__module__ for h in root.handlers):
            return                   # already bridged (opentelemetry-instrument or the app)
        if not isinstance(get_logger_provider(), LoggerProvider):
            return                   # no SDK configured: nowhere to send them
        try:
            from opentelemetry.instrumentation.logging import LoggingInstrumentor
        except ImportError:
            pass                     # not installed: the SDK's own handler below
        else:
            instrumentor = LoggingInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument()
                self._logging_instrumentor = instrumentor
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from opentelemetry.sdk._logs import LoggingHandler

            self._handler = LoggingHandler(level=logging.NOTSET, logger_provider=get_logger_provider())
        root.addHandler(self._handler)   # the app's own logger levels decide what is bridged

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Turn queued calls into signals and ship buffered events now."""
        ok = self.recorder.flush(timeout_millis / 1000.0)
        return self.sink.force_flush(timeout_millis) and ok

    def shutdown(self) -> None:
        """Process queued calls, then ship within the shutdown timeout and keep the rest on disk."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
        if self._logging_instrumentor is not None:
            self._logging_instrumentor.uninstrument()
        self.recorder.shutdown(timeout=max(1.0, self.config.shutdown_timeout_ms / 1000.0))
        if self.outbox is not None:
            self.outbox.shutdown()
