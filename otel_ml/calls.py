"""A recorded predict call, and what the app attaches to it (ids, segments, a model name).

The request path builds one :class:`Call` per instrumented call and hands it to the
background thread; ``prediction_context``, ``model_context`` and ``last_prediction_ids`` are
the app's side of it, ``server_model`` the model servers' (``otel_ml.instrumentation``). Prediction ids are ``<process prefix>-<call number>-<row>`` unless the app supplies its
own (``prediction_context(ids=...)`` or an ``id_hook``), so making them costs one counter step.

Example::

    from otel_ml.calls import last_prediction_ids, prediction_context

    with prediction_context(ids=["req-1"], segments={"gender": "f"}):
        model.predict(X)                       # instrumented
    last_prediction_ids()                      # ["req-1"]

    with model_context(name="churn", version="3"):
        model.predict(X)                       # rows of model churn, version 3
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Union

from opentelemetry.trace.propagation import _SPAN_KEY  # the key the API keeps the active span under

Scalar = Union[str, bool, int, float]

# Thread-local "inside an instrumented call" flag: a Pipeline calling its final estimator,
# or LogisticRegression.predict_proba calling decision_function, records once (outermost).
busy = threading.local()

_PREFIX = os.urandom(6).hex()       # new per process: ids never collide across restarts
_numbers = itertools.count(1)


def _new_prefix() -> None:
    # A forked worker must not continue its parent's ids: each would make the same ones.
    global _PREFIX, _numbers  # per-process id state, renewed in each forked child
    _PREFIX = os.urandom(6).hex()
    _numbers = itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)


@dataclass(frozen=True)
class Annotations:
    """What the app attaches to the predictions made inside ``prediction_context``."""

    ids: Optional[Sequence[str]] = None
    segments: Optional[Union[Mapping[str, Scalar], Sequence[Mapping[str, Scalar]]]] = None
    model_name: Optional[str] = None
    model_version: Optional[str] = None
    attributes: Optional[Mapping[str, Scalar]] = None
    # The identity a model server gives the model it is running (otel_ml.instrumentation.mlserver,
    # .bentoml): below OTEL_ML_MODEL_NAME/_VERSION, which override it, unlike model_name above.
    server_model_name: Optional[str] = None
    server_model_version: Optional[str] = None


_EMPTY = Annotations()

current_annotations: contextvars.ContextVar[Optional[Annotations]] = contextvars.ContextVar(
    "otel_ml_annotations", default=None)
# The last call recorded in this thread / task: what ``last_prediction_ids`` answers, and what the
# next call on the same input may join (one record per row, see ``Call.root``). The recorder lets
# go of a call's model and input (``Call.release``) once its rows are written, so this keeps
# them alive no longer than the join window.
_last_call: contextvars.ContextVar[Optional["Call"]] = contextvars.ContextVar("otel_ml_last_call", default=None)

#: A call joins the previous one (same model object, same input object, same span, another
#: method) only if it starts within this many nanoseconds of the previous call's end.
JOIN_WINDOW_NS = 50_000_000


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
    outer = current_annotations.get()
    if outer is not None:
        # an enclosing model_context's name and a server's identity stay
        if model_name is None:
            model_name, model_version = outer.model_name, model_version or outer.model_version
        token = current_annotations.set(Annotations(
            ids, segments, model_name, model_version, attributes, outer.server_model_name,
            outer.server_model_version))
    else:
        token = current_annotations.set(Annotations(ids, segments, model_name, model_version, attributes))
    try:
        yield
    finally:
        current_annotations.reset(token)


@contextlib.contextmanager
def model_context(name: str, version: Optional[str] = None) -> Iterator[None]:
    """Give the predictions made inside the block the model name ``name`` and version ``version``.

    For servers otel-ml does not know: it wins over ``OTEL_ML_MODEL_NAME``/``_VERSION``, a
    model server's own identity and the model's class name (``version`` None: the version
    comes from those). Ids, segments and attributes of an enclosing ``prediction_context``
    are kept; an inner block wins over an outer one.

    Example::

        with otel_ml.model_context(name="churn", version="3"):
            model.predict(X)                   # rows carry ml.model.name churn, version 3
    """
    current = current_annotations.get() or _EMPTY
    version = str(version) if version is not None else current.model_version
    token = current_annotations.set(dataclasses.replace(current, model_name=str(name), model_version=version))
    try:
        yield
    finally:
        current_annotations.reset(token)


@contextlib.contextmanager
def server_model(name: Optional[str], version: Optional[str]) -> Iterator[None]:
    """The identity a model server gives the model it is calling (for server integrations).

    Unlike ``model_context``, ``OTEL_ML_MODEL_NAME``/``_VERSION`` override it."""
    current = current_annotations.get() or _EMPTY
    token = current_annotations.set(dataclasses.replace(
        current, server_model_name=None if name is None else str(name),
        server_model_version=None if version is None else str(version)))
    try:
        yield
    finally:
        current_annotations.reset(token)


class Call:
    """One recorded call: the model's inputs and output, its timing, the request's context.

    ``ids`` are the app's prediction ids (None: generated from the call's number), ``error``
    the exception the call raised (then ``output`` is None and no row is recorded).

    ``root`` is the call this one joins (the first of its group: the same rows predicted by
    another method, see :func:`joinable`), else None. On a root, ``methods`` are the group's
    methods, ``end_perf`` the group's last end (``perf_counter_ns``), ``open`` how many joining
    calls are still running or queued, and ``emitted`` says the recorder wrote its rows (no
    call joins it any more).
    """

    __slots__ = ("adapter", "instance", "method", "args", "kwargs", "output", "start_ns", "duration_ns",
                 "context", "number", "ids", "annotations", "error", "root", "methods", "end_perf", "open",
                 "emitted")

    def __init__(self, adapter: Any, instance: Any, method: str, args: tuple, kwargs: dict, output: Any,
                 start_ns: int, duration_ns: int, context: Any, ids: Optional[Sequence[str]],
                 annotations: Optional[Annotations], error: Optional[BaseException] = None) -> None:
        self.adapter = adapter
        self.instance = instance
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.output = output
        self.start_ns = start_ns
        self.duration_ns = duration_ns
        self.context = context
        self.number = next(_numbers)
        self.ids = ids
        self.annotations = annotations
        self.error = error
        self.root: Optional[Call] = None
        self.methods: tuple = (method,)
        self.end_perf = 0
        self.open = 0
        self.emitted = False

    def release(self) -> None:
        """Forget the model and its input (its rows are written): the app's objects can be freed."""
        self.instance, self.args, self.kwargs = None, (), {}

    def id_base(self) -> str:
        """The generated ids' common part: row ``i``'s id is this plus ``i``."""
        return _id_base(self.number)

    def prediction_ids(self) -> List[str]:
        """The prediction ids of this call's rows."""
        return _ids(self.ids, self.number, self.adapter, self.method, self.output)


def new_number() -> int:
    """A call number not given to any call yet."""
    return next(_numbers)


def _id_base(number: int) -> str:
    return f"{_PREFIX}-{number:x}-"


def _ids(ids: Optional[Sequence[str]], number: int, adapter: Any, method: str, output: Any) -> List[str]:
    if ids is not None:
        return list(ids)
    n = adapter.rows(method, output) or 0
    base = _id_base(number)
    return [base + str(i) for i in range(n)]


def remember(call: Optional[Call]) -> None:
    """Make ``call`` what ``last_prediction_ids`` answers in this thread / task."""
    _last_call.set(call)


def joinable(instance: Any, method: str, args: tuple, context: Any, start_perf: int) -> Optional[Call]:
    """The group a call starting now joins, or None: it is "the same call" as the last one
    recorded in this thread / async task when that one was made on the same model object, with
    the same input object (the first positional argument, by identity), under the same active
    span (or none in both), its group has not used ``method`` yet, and it ended at most
    :data:`JOIN_WINDOW_NS` before. The caller then counts itself in ``root.open``."""
    prev = _last_call.get()
    if prev is None or instance is None or not args:
        return None
    root = prev.root or prev
    if root.instance is not instance or not root.args or args[0] is not root.args[0] or root.emitted or method in root.methods or start_perf - root.end_perf > JOIN_WINDOW_NS:
        return None
    pctx = root.context
    if context is not pctx and (context.get(_SPAN_KEY) if context is not None else None) is not \
            (pctx.get(_SPAN_KEY) if pctx is not None else None):
        return None
    return root


def last_prediction_ids() -> List[str]:
    """Ids of the predictions made by the last instrumented call in this thread / task.

    Send them with ``otel_ml.record_label`` once the truth is known. Empty when nothing was
    recorded (not instrumented, suppressed, or the call failed).

    Example::

        proba = model.predict_proba(X)
        ids = otel_ml.last_prediction_ids()    # one per row of X
    """
    last = _last_call.get()
    if last is None:
        return []
    return _ids(last.ids, last.number, last.adapter, last.method, last.output)
