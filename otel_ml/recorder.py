"""The request path, and the background thread that turns predict calls into OTel signals.

On the request path an instrumented predict does only this: check it is the outermost call
and instrumentation is not suppressed, read two clocks, call the model, and append one
:class:`~otel_ml.calls.Call` to a ``deque`` (plus a ``ContextVar`` set so the app can ask for
the ids it just made). Everything else is done by the ``otel-ml-recorder`` thread:

- the model name and version, the rows (features, labels, scores) read from the call;
- the ``ml.predict`` span, through the app's TracerProvider, with the call's real start and
  end times, parented on the request's span;
- the metric points: ``ml.client.predict.duration`` per call, ``ml.client.prediction.score``
  per row, and ``ml.client.predictions`` added once per model for all the calls it drained;
- one ``ml.prediction`` record per row carrying that span's trace context, encoded straight
  into OTLP bytes (``otel_ml.events``) and handed to the sink (the disk buffer's outbox); a call
  that predicts the same rows as the previous one by another method (``predict`` then
  ``predict_proba`` on the same input, see ``calls.joinable``) adds its outputs to those rows,
  which is why a call's rows are held until no call can join them any more (50 ms);
- the ``ml.audit`` trail of model loads and version changes;
- every 100 ms, the sink's commit to disk (``tick``).

Example::

    from otel_ml.recorder import Recorder

    recorder = Recorder(config, sink=outbox, tracer_provider=tp, meter_provider=mp)
    model.predict(X)                       # instrumented with recorder.wrapper(adapter, "predict")
    recorder.flush(); recorder.shutdown()
"""

from __future__ import annotations

import collections
import getpass
import logging
import os
import random
import socket
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from opentelemetry import context as otel_context
from opentelemetry import trace
# The keys is_instrumentation_enabled() reads, read here from the one context the call needs anyway.
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
from opentelemetry.metrics import MeterProvider, get_meter_provider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from otel_ml import calls
from otel_ml import semconv as sc
from otel_ml.config import MLConfig
from otel_ml.convert import clean_score
from otel_ml.events import EventEncoder, TraceIds, audit_id
from otel_ml.forks import call_in_child
from otel_ml.registry import registered, served
from otel_ml.version import __version__

_log = logging.getLogger(__name__)

ModelHook = Callable[[Any], Optional[Tuple[str, str]]]
IdHook = Callable[[Any, tuple, dict], Optional[Sequence[str]]]

_DRAIN_MAX = 256                 # calls per pass: the sink sees bursts in slices
_IDLE_WAIT_S = 0.05
_JOIN_WAIT_MAX_NS = 60_000_000_000  # a group waits at most this long for a joining call still running
_COUNT_EVERY_S = 0.1             # rows predicted are added to their counter at most this often
_SCAN_YOUNG = 64                 # held groups still reachable looked at per pass before giving up
# sys.getrefcount of a held root call that only the recorder refers to (the group's slot, the
# loop's variable, the call's argument). Exact on CPython only: elsewhere groups wait the window.
_refs = sys.getrefcount if sys.implementation.name == "cpython" else None
_UNREACHED_REFS = 3


def default_actor() -> str:
    """``user@host pid N`` of this process (who ``ml.audit`` events name by default)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class _Model:
    """What is fixed per (model, version): metric attributes, and rows predicted not yet counted."""

    __slots__ = ("name", "version", "attributes", "uncounted")

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self.attributes = {sc.ML_MODEL_NAME: name, sc.ML_MODEL_VERSION: version}
        self.uncounted = 0


_LABEL_RANK = {"predict": 3, "predict_proba": 2, "decision_function": 1}


class _Group:
    """The rows of one call and of the calls that joined it (the same rows by other methods):
    one record per row, with the label of ``predict`` (else ``predict_proba``'s best class,
    else ``decision_function``'s), and the score and probabilities of ``predict_proba``."""

    __slots__ = ("call", "model", "trace", "parts")

    def __init__(self, call: calls.Call, model: _Model, result: Any, trace: TraceIds, method: str) -> None:
        self.call, self.model, self.trace = call, model, trace
        self.parts = [(method, result)]

    def join(self, method: str, result: Any) -> bool:
        """Add a joining call's rows (False: not the same rows, e.g. another row count)."""
        first = self.parts[0][1]
        if result.n != first.n:
            return False
        self.parts.append((method, result))
        return True

    def result(self) -> Any:
        if len(self.parts) == 1:
            return self.parts[0][1]
        by_rank = sorted(self.parts, key=lambda p: -_LABEL_RANK.get(p[0], 0))
        best = by_rank[0][1]
        probs = next((r for _, r in self.parts if r.probabilities is not None), None)
        scored = next((r for _, r in self.parts if r.scores is not None), None)
        merged = replace(best)
        if probs is not None:
            merged.classes, merged.probabilities = probs.classes, probs.probabilities
            if merged.labels is not None and probs.classes is not None and merged.labels is not probs.labels:
                # Confidence of the class actually predicted (predict's label), in predict_proba's columns.
                col = {c: j for j, c in enumerate(probs.classes)}
                merged.scores = [clean_score(row[col[lab]]) if lab in col and row[col[lab]] is not None else s
                                 for lab, row, s in zip(merged.labels, probs.probabilities,
                                                        probs.scores or [None] * merged.n)]
            else:
                merged.scores = probs.scores
        elif merged.scores is None and scored is not None:
            merged.scores = scored.scores
        return merged


class Recorder:
    """Queue of recorded calls and the thread that turns them into spans, metrics and events.

    ``sink`` receives the encoded records (``put``) and is ticked every pass (``tick``).
    """

    def __init__(
        self,
        config: MLConfig,
        *,
        sink: Any,
        encoder: Optional[EventEncoder] = None,
        tracer_provider: Optional[TracerProvider] = None,
        meter_provider: Optional[MeterProvider] = None,
        model_hook: Optional[ModelHook] = None,
        id_hook: Optional[IdHook] = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.encoder = encoder or EventEncoder()
        self.model_hook = model_hook
        self.id_hook = id_hook
        self._tracer = trace.get_tracer(sc.INSTRUMENTATION_NAME, __version__, tracer_provider)
        meter = (meter_provider or get_meter_provider()).get_meter(sc.INSTRUMENTATION_NAME, __version__)
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
        self._seen: Dict[str, str] = {}              # name -> last version seen (audit trail)
        self._seen_lock = threading.Lock()
        self._model_states: Dict[Tuple[str, str], _Model] = {}
        self._touched: list = []                     # models with rows not yet counted
        self._counted_at = 0.0
        self._out: list = []                         # records encoded in this pass
        self._held: Dict[int, _Group] = {}           # id(root call) -> rows waiting for joining calls
        self._logged_errors: set = set()
        self._actor = config.audit_actor or default_actor()
        self._stop = threading.Event()
        self._start_thread()
        call_in_child(self, "_after_fork")

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-ml-recorder", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._queue.clear()                  # the parent processes what it queued itself
        self._out, self._touched = [], []
        self._held = {}
        self._seen_lock = threading.Lock()
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
        suppressed, suppressed_plain = _SUPPRESS_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
        busy = calls.busy
        annotations = calls.current_annotations
        remember = calls.remember
        joinable = calls.joinable
        Call = calls.Call
        recorder = self

        def _wrapper(wrapped, instance, args, kwargs):
            ctx = get_current()
            if busy.__dict__.get("busy") or (kwargs and kwargs.get("check_input") is False) or \
                    ctx.get(suppressed) or ctx.get(suppressed_plain):
                # Nested (or a forest calling its trees on worker threads), or suppressed
                # (is_instrumentation_enabled(), without reading the context twice more).
                return wrapped(*args, **kwargs)
            busy.busy = True
            t0 = perf()
            # The same rows predicted by another method (predict, then predict_proba): one record.
            root = joinable(instance, method, args, ctx, t0)
            if root is not None:
                root.open += 1
            try:
                out = wrapped(*args, **kwargs)
            except BaseException as exc:
                t1 = perf()
                busy.busy = False
                recorder._submit_error(adapter, instance, method, args, kwargs, wall() - (t1 - t0), t1 - t0, ctx,
                                       exc, root)
                raise
            t1 = perf()
            busy.busy = False
            try:
                annot = annotations.get()
                if root is not None:
                    ids = root.ids
                else:
                    ids = annot.ids if annot is not None else None
                    if ids is None and recorder.id_hook is not None:
                        ids = recorder.id_hook(instance, args, kwargs)
                call = Call(adapter, instance, method, args, kwargs, out, wall() - (t1 - t0), t1 - t0, ctx, ids, annot)
                if root is not None:
                    call.root, call.number = root, root.number
                    root.methods += (method,)
                    root.end_perf = t1
                else:
                    call.end_perf = t1
                if len(queue) < recorder._max_queue:
                    append(call)
                else:
                    recorder._queue_full()
                    if root is not None:
                        root.open -= 1
                remember(call)
            except Exception as exc:  # noqa: BLE001 - never make predict fail
                recorder._internal_error("request path", exc)
            return out

        return _wrapper

    def silencer(self) -> Callable:
        """A wrapper for ``fit``/``score``: predict calls made inside them are not recorded."""
        busy = calls.busy

        def _silencer(wrapped, instance, args, kwargs):
            if busy.__dict__.get("busy"):
                return wrapped(*args, **kwargs)
            busy.busy = True
            try:
                return wrapped(*args, **kwargs)
            finally:
                busy.busy = False

        return _silencer

    def submit(self, call: calls.Call) -> None:
        """Queue a call recorded elsewhere (``monitor_predict``)."""
        if len(self._queue) < self._max_queue:
            self._queue.append(call)
        else:
            self._queue_full()
        calls.remember(call if call.error is None else None)

    def _submit_error(self, adapter, instance, method, args, kwargs, start, dur, ctx, exc, root=None) -> None:
        try:
            call = calls.Call(adapter, instance, method, args, kwargs, None, start, dur, ctx, (),
                              calls.current_annotations.get(), exc)
            call.root = root
            if len(self._queue) < self._max_queue:
                self._queue.append(call)
            elif root is not None:
                root.open -= 1
            calls.remember(None)
        except Exception as err:  # noqa: BLE001
            self._internal_error("request path", err)

    def _queue_full(self) -> None:
        self.dropped.add(1, {sc.ML_DROP_REASON: sc.DROP_QUEUE_FULL})

    # -- background thread ---------------------------------------------------------------------
    def _run(self) -> None:
        queue = self._queue
        held = self._held
        while True:
            drained = 0
            while drained < _DRAIN_MAX:
                try:
                    item = queue.popleft()
                except IndexError:
                    break
                if isinstance(item, threading.Event):       # flush marker
                    self._emit_held(force=True)
                    self._end_pass(count=True)
                    item.set()
                    continue
                drained += 1
                try:
                    self._process(item)
                except Exception as exc:  # noqa: BLE001 - one bad call must not stop the thread
                    self._internal_error(type(item.adapter).__name__, exc)
                item = None
                if held:                  # a held call only the recorder refers to is written at once
                    self._emit_held()
            self._end_pass()
            if not queue:
                if self._stop.is_set():
                    return
                self._stop.wait(_IDLE_WAIT_S)

    def _end_pass(self, count: bool = False) -> None:
        """Hand this pass's records to the sink, let it commit, and every 100 ms (or when
        ``count``) add the rows predicted to ``ml.client.predictions``: one ``add`` per model
        for all its calls, the same total as one per call."""
        try:
            self._emit_held()
            if self._out:
                out, self._out = self._out, []
                self.sink.put(out)
            now = time.monotonic()
            if self._touched and (count or now - self._counted_at >= _COUNT_EVERY_S):
                self._counted_at = now
                touched, self._touched = self._touched, []
                for model in touched:
                    n, model.uncounted = model.uncounted, 0
                    self._predictions.add(n, model.attributes)
            self.sink.tick()
        except Exception as exc:  # noqa: BLE001
            self._internal_error("sink", exc)

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

    def resolve_model(self, adapter: Any, instance: Any, annot: Optional[calls.Annotations]) -> Tuple[str, str]:
        """Model name and version: context, hook, registration, environment, the model server's
        identity (``server_model`` context or ``serve`` registration), then the model itself."""
        name = version = None
        if annot is not None:
            name, version = annot.model_name, annot.model_version
        if name is None and self.model_hook is not None and instance is not None:
            got = self.model_hook(instance)
            if got:
                name, version = got[0], (got[1] if version is None else version)
        if name is None and instance is not None:
            got = registered(instance)
            if got:
                name, version = got[0], (got[1] if version is None else version)
        if name is None:
            name = self.config.model_name
        if version is None:
            version = self.config.model_version
        if name is None or version is None:
            # what the model server calls it (OTEL_ML_MODEL_NAME/_VERSION above override it)
            server = (annot.server_model_name, annot.server_model_version) if annot is not None else (None, None)
            if server[0] is None and instance is not None:
                server = served(instance) or server
            if name is None and server[0] is not None:
                name, version = server[0], version or server[1]
            elif version is None and name == server[0]:
                version = server[1]
        if name is None or version is None:
            default_name, default_version = adapter.default_model(instance) if instance is not None else ("model", None)
            name = name or default_name
            version = version or default_version or "unknown"
        return str(name), str(version)

    def _model(self, name: str, version: str) -> _Model:
        state = self._model_states.get((name, version))
        if state is None:
            if len(self._model_states) >= 4096:      # names come from users: bounded
                self._model_states.clear()
            state = self._model_states[(name, version)] = _Model(name, version)
        return state

    def _process(self, call: calls.Call) -> None:
        adapter, method, error = call.adapter, call.method, call.error
        start, dur = call.start_ns, call.duration_ns
        root = call.root
        if root is not None:
            root.open -= 1
        name, version = self.resolve_model(adapter, call.instance, call.annotations)
        if self._seen.get(name) != version:
            self._audit_model(name, version, adapter.framework)
        model = self._model(name, version)
        result = None
        if error is None:
            try:
                result = adapter.interpret(call.instance, method, call.args, call.kwargs, call.output)
            except Exception as exc:  # noqa: BLE001 - still emit the span and duration
                self._internal_error(f"{adapter.framework} output conversion", exc)
        span_attrs = {sc.ML_MODEL_NAME: name, sc.ML_MODEL_VERSION: version, sc.ML_FRAMEWORK: adapter.framework,
                      sc.ML_PREDICT_METHOD: method}
        if result is not None:
            span_attrs[sc.ML_MODEL_TASK] = result.task
            span_attrs[sc.ML_PREDICT_ROWS] = result.n
        span = self._tracer.start_span(sc.SPAN_PREDICT, context=call.context, kind=SpanKind.INTERNAL,
                                       attributes=span_attrs, start_time=start)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
        span.end(end_time=start + dur)
        self._duration.record(dur / 1e9, model.attributes)
        if error is not None:
            self._errors.add(1, {**model.attributes, sc.ERROR_TYPE: type(error).__qualname__})
            call.release()
            return
        if root is not None or result is None:
            call.release()
        if result is None:
            return
        if root is not None:
            group = self._held.get(id(root))
            if group is not None and group.model is model and group.join(method, result):
                return
            # Its group was written already (a rare race with the join window) or cannot take it:
            # a record of its own, with ids of its own.
            call.root, call.end_perf = None, root.end_perf
            if call.ids is None:
                call.number = calls.new_number()
        self._held[id(call)] = _Group(call, model, result, TraceIds.of(span.get_span_context()), method)

    def _emit_held(self, force: bool = False) -> None:
        """Write the rows of the groups no call can join any more (all of them when ``force``).

        A group can be joined only through its root call, which a later call finds in the
        ``ContextVar`` of its thread / task (``calls.joinable``). Once nothing but this recorder
        refers to the root (its thread made another call, its task ended), no call can reach it:
        its rows are written at once instead of after the join window, so that they die young
        instead of being promoted to the garbage collector's older generations."""
        held = self._held
        if not held:
            return
        now = time.perf_counter_ns()
        limit = now - calls.JOIN_WINDOW_NS
        unreached = _refs
        done = []
        skipped = 0
        for key, group in held.items():
            root = group.call
            # A joining call still running (or queued) is waited for, though not for ever.
            waiting = root.open > 0 and root.end_perf > now - _JOIN_WAIT_MAX_NS
            young = root.end_perf > limit
            if not force and (waiting or young):
                if waiting or unreached is None or unreached(root) > _UNREACHED_REFS:
                    if young:
                        skipped += 1
                        if unreached is None or skipped >= _SCAN_YOUNG:
                            break         # later groups ended later still
                    continue
            root.emitted = True
            done.append(key)
            try:
                self._emit(group)
            except Exception as exc:  # noqa: BLE001 - one bad group must not stop the others
                self._internal_error(type(root.adapter).__name__, exc)
            root.release()
        for key in done:
            del held[key]

    def _emit(self, group: "_Group") -> None:
        call, model, result = group.call, group.model, group.result()
        if not model.uncounted:
            self._touched.append(model)
        model.uncounted += result.n
        if result.scores:
            record, attrs = self._score.record, model.attributes
            for s in result.scores:
                if s is not None:
                    record(s, attrs)
        self._encode_rows(call, model, result, group.trace)

    def _encode_rows(self, call: calls.Call, model: _Model, result: Any, trace_ids: TraceIds) -> None:
        ids = call.ids
        if ids is None:
            base = call.id_base()
            ids = [base + str(i) for i in range(result.n)]
        annot = call.annotations
        ratio = self.config.sample_ratio
        rows = None
        if ratio < 1.0:
            rnd = random.random
            rows = [i for i in range(result.n) if rnd() < ratio]
            if not rows:
                return
        self._out.extend(self.encoder.predictions(
            result, model_name=model.name, model_version=model.version, ids=ids, time_ns=call.start_ns,
            trace=trace_ids, segments=annot.segments if annot is not None else None,
            attributes=annot.attributes if annot is not None else None,
            max_text=self.config.max_text_length, rows=rows))

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
        with self._seen_lock:
            seen = self._seen.get(name)
            if seen == version:
                return False, seen
            self._seen[name] = version
        return True, seen

    def _audit_model(self, name: str, version: str, framework: str) -> None:
        self.note_model(name, version, f"first prediction served by {framework}", detail_on_change=False)

    def note_model(self, name: str, version: str, detail: str, detail_on_change: bool = True) -> None:
        """A model was seen (first prediction) or registered in code: audit a load or a version change."""
        changed, seen = self._remember_model(name, version)
        if not changed:
            return
        if seen is None:
            self.audit(sc.AUDIT_MODEL_LOAD, name, version, detail)
        else:
            change = f"version {seen} -> {version}"
            self.audit(sc.AUDIT_VERSION_CHANGE, name, version, f"{change}; {detail}" if detail_on_change else change)

    def audit(self, action: str, model_name: str, model_version: str, detail: str,
              actor: Optional[str] = None) -> None:
        """Emit one ``ml.audit`` event (who = ``actor`` or this process's user, host and pid)."""
        now = time.time_ns()
        attrs = {sc.ML_AUDIT_ACTION: action, sc.ML_AUDIT_ACTOR: actor or self._actor,
                 sc.ML_MODEL_NAME: model_name, sc.ML_MODEL_VERSION: model_version, sc.ML_AUDIT_DETAIL: detail}
        attrs[sc.ML_AUDIT_ID] = audit_id(attrs, now)
        record = self.encoder.event(sc.EVENT_AUDIT, attrs, time_ns=now)
        self.sink.put([record])
