"""The request path and the background thread that turns predict calls into OTel signals.

On the request path an instrumented predict does only this: check it is the outermost
call, read two clocks, call the model, and append one tuple to a ``deque`` (plus a
``ContextVar`` set so the app can ask for the ids it just made). Everything else - model
name, feature rows, labels and scores, the ``ml.predict`` span (with the call's real start
and end times, parented on the request's span), the metric points and one ``ml.prediction``
LogRecord per row carrying that span's trace context - is done by the ``otel-ml-recorder``
thread.

Prediction ids are ``<process prefix>-<call number>-<row>`` unless the app supplies its own
(``prediction_context(ids=...)`` or an ``id_hook``), so making them costs one counter step.

Example::

    from otel_ml.recorder import Recorder, prediction_context, last_prediction_ids

    recorder = Recorder(config, tracer_provider=tp, meter_provider=mp, logger_provider=lp)
    with prediction_context(ids=["req-1"], segments={"gender": "f"}):
        model.predict(X)                       # instrumented
    last_prediction_ids()                      # ["req-1"]
    recorder.flush(); recorder.shutdown()
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import getpass
import itertools
import logging
import os
import random
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, get_logger_provider
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.metrics import MeterProvider, get_meter_provider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from otel_ml import semconv as sc
from otel_ml.config import MLConfig
from otel_ml.version import __version__

_log = logging.getLogger(__name__)

Scalar = Union[str, bool, int, float]
ModelHook = Callable[[Any], Optional[Tuple[str, str]]]
IdHook = Callable[[Any, tuple, dict], Optional[Sequence[str]]]

# Thread-local "inside an instrumented call" flag: a Pipeline calling its final estimator,
# or LogisticRegression.predict_proba calling decision_function, records once (outermost).
_tls = threading.local()

_PREFIX = os.urandom(6).hex()       # new per process: ids never collide across restarts
_calls = itertools.count(1)


@dataclass(frozen=True)
class Annotations:
    """What the app attaches to the predictions made inside ``prediction_context``."""

    ids: Optional[Sequence[str]] = None
    segments: Optional[Union[Mapping[str, Scalar], Sequence[Mapping[str, Scalar]]]] = None
    model_name: Optional[str] = None
    model_version: Optional[str] = None
    attributes: Optional[Mapping[str, Scalar]] = None


_annotations: contextvars.ContextVar[Optional[Annotations]] = contextvars.ContextVar("otel_ml_annotations", default=None)
_last_call: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("otel_ml_last_call", default=None)


@contextlib.contextmanager
def prediction_context(
    ids: Optional[Sequence[str]] = None,
    segments: Optional[Union[Mapping[str, Scalar], Sequence[Mapping[str, Scalar]]]] = None,
    model_name: Optional[str] = None,
    model_version: Optional[str] = None,
    attributes: Optional[Mapping[str, Scalar]] = None,
) -> Iterator[None]:
    """Attach ids, segments (``ml.segment.*``), a model name/version or extra attributes
    (e.g. ``enduser.id``) to the predictions made inside the block.

    ``ids`` gives one id per row of each call in the block; ``segments`` is one mapping for
    every row, or one mapping per row.

    Example::

        with otel_ml.prediction_context(ids=[request_id], segments={"gender": user.gender}):
            model.predict_proba(X)
    """
    token = _annotations.set(Annotations(ids, segments, model_name, model_version, attributes))
    try:
        yield
    finally:
        _annotations.reset(token)


# A recorded call, as a plain tuple (cheapest to build on the request path).
# (adapter, instance, method, args, kwargs, output, start_ns, duration_ns, context, call_no,
#  ids, annotations, error)
_ADAPTER, _INSTANCE, _METHOD, _ARGS, _KWARGS, _OUTPUT, _START, _DUR, _CTX, _CALLNO, _IDS, _ANNOT, _ERROR = range(13)


def call_ids(call: tuple) -> List[str]:
    """The prediction ids of a recorded call."""
    if call[_IDS] is not None:
        return list(call[_IDS])
    n = call[_ADAPTER].rows(call[_METHOD], call[_OUTPUT]) or 0
    base = f"{_PREFIX}-{call[_CALLNO]:x}-"
    return [base + str(i) for i in range(n)]


def last_prediction_ids() -> List[str]:
    """Ids of the predictions made by the last instrumented call in this thread / task.

    Send them with ``otel_ml.record_label`` once the truth is known. Empty when nothing was
    recorded (not instrumented, suppressed, or the call failed).

    Example::

        proba = model.predict_proba(X)
        ids = otel_ml.last_prediction_ids()    # one per row of X
    """
    call = _last_call.get()
    return call_ids(call) if call is not None else []


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class Recorder:
    """Queue of recorded calls and the thread that turns them into spans, metrics and events."""

    def __init__(
        self,
        config: MLConfig,
        *,
        tracer_provider: Optional[TracerProvider] = None,
        meter_provider: Optional[MeterProvider] = None,
        logger_provider: Optional[LoggerProvider] = None,
        model_hook: Optional[ModelHook] = None,
        id_hook: Optional[IdHook] = None,
    ) -> None:
        self.config = config
        self.model_hook = model_hook
        self.id_hook = id_hook
        self._tracer = trace.get_tracer(sc.INSTRUMENTATION_NAME, __version__, tracer_provider)
        meter = (meter_provider or get_meter_provider()).get_meter(sc.INSTRUMENTATION_NAME, __version__)
        self._logger = (logger_provider or get_logger_provider()).get_logger(sc.INSTRUMENTATION_NAME, __version__)
        self._predictions = meter.create_counter(
            sc.METRIC_CLIENT_PREDICTIONS, unit="{prediction}", description="Predictions made (rows predicted).")
        self._errors = meter.create_counter(
            sc.METRIC_CLIENT_ERRORS, unit="{error}", description="Predict calls that raised an error.")
        self._duration = meter.create_histogram(
            sc.METRIC_CLIENT_PREDICT_DURATION, unit="s", description="Duration of predict calls.",
            explicit_bucket_boundaries_advisory=sc.PREDICT_DURATION_BUCKETS)
        self._score = meter.create_histogram(
            sc.METRIC_CLIENT_PREDICTION_SCORE, unit="1", description="Confidence of the predicted class.",
            explicit_bucket_boundaries_advisory=sc.SCORE_BUCKETS)
        self.dropped = meter.create_counter(
            sc.METRIC_CLIENT_BUFFER_DROPPED, unit="{record}",
            description="Prediction records dropped because a buffer was full (oldest first).")
        self._internal = meter.create_counter(
            sc.METRIC_CLIENT_INSTRUMENTATION_ERRORS, unit="{error}",
            description="Internal errors of the otel-ml instrumentation (predict itself was unaffected).")
        self._queue: collections.deque = collections.deque()
        self._max_queue = max(1, config.max_queue_size)
        self._models: Dict[str, str] = {}              # name -> last version seen (audit trail)
        self._models_lock = threading.Lock()
        self._registered: "Any" = None
        self._logged_errors: set = set()
        self._actor = config.audit_actor or default_actor()
        self._stop = threading.Event()
        self._start_thread()
        # Pre-fork servers (gunicorn) instrument in the parent: each child needs its own thread.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (lambda r: r._after_fork() if r is not None else None)(ref()))

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-ml-recorder", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._queue.clear()                  # the parent processes what it queued itself
        self._models_lock = threading.Lock()
        if not self._stop.is_set():
            self._stop = threading.Event()
            self._start_thread()

    # -- request path --------------------------------------------------------------------------
    def wrapper(self, adapter: Any, method: str) -> Callable:
        """A ``wrapt`` wrapper recording ``method`` calls interpreted by ``adapter``."""
        queue = self._queue
        append = queue.append
        perf = time.perf_counter_ns
        wall = time.time_ns
        get_current = otel_context.get_current
        suppress = _SUPPRESS_INSTRUMENTATION_KEY
        tls = _tls
        recorder = self

        def _wrapper(wrapped, instance, args, kwargs):
            if tls.__dict__.get("busy") or (kwargs and kwargs.get("check_input") is False):
                # Nested (or a forest calling its trees on worker threads): the outer call records.
                return wrapped(*args, **kwargs)
            ctx = get_current()
            if ctx.get(suppress):
                return wrapped(*args, **kwargs)
            tls.busy = True
            t0 = perf()
            try:
                out = wrapped(*args, **kwargs)
            except BaseException as exc:
                dur = perf() - t0
                tls.busy = False
                recorder._submit_error(adapter, instance, method, args, kwargs, wall() - dur, dur, ctx, exc)
                raise
            dur = perf() - t0
            tls.busy = False
            try:
                annot = _annotations.get()
                ids = annot.ids if annot is not None else None
                if ids is None and recorder.id_hook is not None:
                    ids = recorder.id_hook(instance, args, kwargs)
                call = (adapter, instance, method, args, kwargs, out, wall() - dur, dur, ctx,
                        next(_calls), ids, annot, None)
                if len(queue) < recorder._max_queue:
                    append(call)
                else:
                    recorder._queue_full()
                _last_call.set(call)
            except Exception as exc:  # noqa: BLE001 - never make predict fail
                recorder._internal_error("request path", exc)
            return out

        return _wrapper

    def silencer(self) -> Callable:
        """A wrapper for ``fit``/``score``: predict calls made inside them are not recorded."""
        tls = _tls

        def _silencer(wrapped, instance, args, kwargs):
            if tls.__dict__.get("busy"):
                return wrapped(*args, **kwargs)
            tls.busy = True
            try:
                return wrapped(*args, **kwargs)
            finally:
                tls.busy = False

        return _silencer

    def submit(self, call: tuple) -> None:
        """Queue a call recorded elsewhere (``monitor_predict``)."""
        if len(self._queue) < self._max_queue:
            self._queue.append(call)
        else:
            self._queue_full()
        _last_call.set(call)

    def _submit_error(self, adapter, instance, method, args, kwargs, start, dur, ctx, exc) -> None:
        try:
            annot = _annotations.get()
            call = (adapter, instance, method, args, kwargs, None, start, dur, ctx, next(_calls), (), annot, exc)
            if len(self._queue) < self._max_queue:
                self._queue.append(call)
            _last_call.set(None)
        except Exception as err:  # noqa: BLE001
            self._internal_error("request path", err)

    def _queue_full(self) -> None:
        self.dropped.add(1, {sc.ML_DROP_REASON: sc.DROP_QUEUE_FULL})

    # -- background thread ---------------------------------------------------------------------
    def _run(self) -> None:
        queue = self._queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                if self._stop.is_set():
                    return
                self._stop.wait(0.05)
                continue
            if isinstance(item, threading.Event):       # flush marker
                item.set()
                continue
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - one bad call must not stop the thread
                self._internal_error(type(item[_ADAPTER]).__name__, exc)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every call queued so far has been turned into signals."""
        if not self._thread.is_alive():
            return not self._queue
        marker = threading.Event()
        self._queue.append(marker)
        return marker.wait(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Process what is queued, then stop the thread."""
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)

    def _internal_error(self, where: str, exc: BaseException) -> None:
        self._internal.add(1, {sc.ERROR_TYPE: type(exc).__name__})
        key = (where, type(exc).__name__)
        if key not in self._logged_errors:            # logged once per kind, counted always
            self._logged_errors.add(key)
            _log.warning("otel-ml: internal error in %s (predictions unaffected; logged once)", where,
                         exc_info=exc)

    def resolve_model(self, adapter: Any, instance: Any, annot: Optional[Annotations]) -> Tuple[str, str]:
        """Model name and version: context, hook, registration, environment, then the model itself."""
        name = version = None
        if annot is not None:
            name, version = annot.model_name, annot.model_version
        if name is None and self.model_hook is not None and instance is not None:
            got = self.model_hook(instance)
            if got:
                name, version = got[0], (got[1] if version is None else version)
        if name is None and instance is not None:
            from otel_ml.registry import registered  # noqa: PLC0415 - leaf module, import cycle

            got = registered(instance)
            if got:
                name, version = got[0], (got[1] if version is None else version)
        if name is None:
            name = self.config.model_name
        if version is None:
            version = self.config.model_version
        if name is None or version is None:
            default_name, default_version = adapter.default_model(instance) if instance is not None else ("model", None)
            name = name or default_name
            version = version or default_version or "unknown"
        return str(name), str(version)

    def _process(self, call: tuple) -> None:
        adapter, instance, method = call[_ADAPTER], call[_INSTANCE], call[_METHOD]
        start, dur, ctx, annot, error = call[_START], call[_DUR], call[_CTX], call[_ANNOT], call[_ERROR]
        name, version = self.resolve_model(adapter, instance, annot)
        self._audit_model(name, version, adapter.framework)
        metric_attrs = {sc.ML_MODEL_NAME: name, sc.ML_MODEL_VERSION: version}
        result = None
        if error is None:
            try:
                result = adapter.interpret(instance, method, call[_ARGS], call[_KWARGS], call[_OUTPUT],
                                           self.config.max_text_length)
            except Exception as exc:  # noqa: BLE001 - still emit the span and duration
                self._internal_error(f"{adapter.framework} output conversion", exc)
        span_attrs = {sc.ML_MODEL_NAME: name, sc.ML_MODEL_VERSION: version, sc.ML_FRAMEWORK: adapter.framework,
                      sc.ML_PREDICT_METHOD: method}
        if result is not None:
            span_attrs[sc.ML_MODEL_TASK] = result.task
            span_attrs[sc.ML_PREDICT_ROWS] = result.n
        span = self._tracer.start_span(sc.SPAN_PREDICT, context=ctx, kind=SpanKind.INTERNAL,
                                       attributes=span_attrs, start_time=start)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
        span.end(end_time=start + dur)
        self._duration.record(dur / 1e9, metric_attrs)
        if error is not None:
            self._errors.add(1, {**metric_attrs, sc.ERROR_TYPE: type(error).__qualname__})
            return
        if result is None:
            return
        self._predictions.add(result.n, metric_attrs)
        if result.scores:
            record = self._score.record
            for s in result.scores:
                if s is not None:
                    record(s, metric_attrs)
        self._emit_rows(call, name, version, result, trace.set_span_in_context(span, ctx))

    def _emit_rows(self, call: tuple, name: str, version: str, result: Any, span_ctx: Any) -> None:
        ids = call_ids(call)
        annot: Optional[Annotations] = call[_ANNOT]
        seg = annot.segments if annot is not None else None
        extra = dict(annot.attributes) if annot is not None and annot.attributes else None
        seg_rows = seg if isinstance(seg, (list, tuple)) else None
        seg_all = {sc.ML_SEGMENT_PREFIX + k: v for k, v in seg.items()} if isinstance(seg, Mapping) else None
        ratio = self.config.sample_ratio
        rnd = random.random
        emit = self._logger.emit
        start = call[_START]
        base = {sc.ML_MODEL_NAME: name, sc.ML_MODEL_VERSION: version, sc.ML_MODEL_TASK: result.task}
        labels, values, scores, probs = result.labels, result.values, result.scores, result.probabilities
        features = result.features
        for i in range(min(result.n, len(ids))):
            if ratio < 1.0 and rnd() >= ratio:
                continue
            attrs = dict(base)
            attrs[sc.ML_PREDICTION_ID] = ids[i]
            if i < len(features):
                attrs.update(features[i])
            if labels is not None:
                attrs[sc.ML_OUTPUT_LABEL] = labels[i]
            if values is not None:
                attrs[sc.ML_OUTPUT_VALUE] = values[i]
            if scores is not None and scores[i] is not None:
                attrs[sc.ML_OUTPUT_SCORE] = scores[i]
            if probs is not None:
                for cls, p in probs[i].items():
                    attrs[sc.ML_OUTPUT_PROBABILITY_PREFIX + cls] = p
            if seg_all is not None:
                attrs.update(seg_all)
            elif seg_rows is not None and i < len(seg_rows):
                for k, v in seg_rows[i].items():
                    attrs[sc.ML_SEGMENT_PREFIX + k] = v
            if extra:
                attrs.update(extra)
            emit(timestamp=start, context=span_ctx, event_name=sc.EVENT_PREDICTION, attributes=attrs)

    def update_config(self, actor: Optional[str] = None, **changes: Any) -> Dict[str, Tuple[Any, Any]]:
        """Change settings at run time (e.g. ``sample_ratio``); each change is audited."""
        done: Dict[str, Tuple[Any, Any]] = {}
        for key, value in changes.items():
            if not hasattr(self.config, key):
                raise TypeError(f"unknown otel-ml setting {key!r}")
            old = getattr(self.config, key)
            if old != value:
                setattr(self.config, key, value)
                done[key] = (old, value)
        if done:
            detail = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(done.items()))
            name = self.config.model_name or "*"
            self.audit(sc.AUDIT_CONFIG_CHANGE, name, self.config.model_version or "*", detail, actor=actor)
        return done

    # -- audit trail -----------------------------------------------------------------------------
    def _remember_model(self, name: str, version: str) -> tuple:
        """(changed, version seen before or None) for ``name``, remembering ``version``."""
        with self._models_lock:
            seen = self._models.get(name)
            if seen == version:
                return False, seen
            self._models[name] = version
        return True, seen

    def _audit_model(self, name: str, version: str, framework: str) -> None:
        changed, seen = self._remember_model(name, version)
        if not changed:
            return
        if seen is None:
            self.audit(sc.AUDIT_MODEL_LOAD, name, version, f"first prediction served by {framework}")
        else:
            self.audit(sc.AUDIT_VERSION_CHANGE, name, version, f"version {seen} -> {version}")

    def note_model(self, name: str, version: str, detail: str) -> None:
        """A model was registered in code: audit a load or a version change."""
        changed, seen = self._remember_model(name, version)
        if not changed:
            return
        if seen is None:
            self.audit(sc.AUDIT_MODEL_LOAD, name, version, detail)
        else:
            self.audit(sc.AUDIT_VERSION_CHANGE, name, version, f"version {seen} -> {version}; {detail}")

    def audit(self, action: str, model_name: str, model_version: str, detail: str,
              actor: Optional[str] = None) -> None:
        """Emit one ``ml.audit`` event (who = ``actor`` or this process's user, host and pid)."""
        self._logger.emit(event_name=sc.EVENT_AUDIT, timestamp=time.time_ns(), attributes={
            sc.ML_AUDIT_ACTION: action, sc.ML_AUDIT_ACTOR: actor or self._actor,
            sc.ML_MODEL_NAME: model_name, sc.ML_MODEL_VERSION: model_version, sc.ML_AUDIT_DETAIL: detail,
        })
