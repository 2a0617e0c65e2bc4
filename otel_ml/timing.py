"""Time and record any predict call: ``monitor_predict`` as a context manager or a decorator.

For models no instrumentor knows (a PyTorch module, a remote call, rules): the call gets the
same ``ml.predict`` span, ``ml.client.*`` metrics and per-row ``ml.prediction`` events as an
auto-instrumented one, through the same background thread. It needs otel-ml active
(``opentelemetry-instrument`` or ``otel_ml.configure()``); otherwise it only runs the call.

Example (context manager: say what went in and what came out)::

    import otel_ml

    with otel_ml.monitor_predict("churn", "3") as call:
        proba = torch_model(batch).softmax(-1).numpy()
        call.set_outputs(features=rows, probabilities=proba, classes=["no", "yes"])
    ids = otel_ml.last_prediction_ids()

Example (decorator: the first argument is the input, the return value the output)::

    @otel_ml.monitor_predict("price", "7", task="regression")
    def predict(rows: list[dict]) -> list[float]:
        ...
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_ml import calls, pipeline
from otel_ml import semconv as sc
from otel_ml.instrumentation.adapters import Explicit, ExplicitAdapter

_ADAPTER = ExplicitAdapter()


class monitor_predict:  # used like a function (decorator / context manager)
    """Record one predict call of model ``model_name`` / ``model_version`` (see module docs)."""

    def __init__(self, model_name: Optional[str] = None, model_version: Optional[str] = None, *,
                 task: Optional[str] = None, classes: Optional[Sequence[Any]] = None,
                 feature_names: Optional[Sequence[str]] = None) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.task = task
        self.classes = classes
        self.feature_names = feature_names
        self._outputs = Explicit(task=task, classes=classes, feature_names=feature_names)

    def set_outputs(self, *, features: Any = None, labels: Any = None, values: Any = None,
                    scores: Any = None, probabilities: Any = None, classes: Any = None) -> None:
        """What the call took and gave: ``features`` (rows), and ``labels`` (classes) or
        ``values`` (regression), optional ``scores`` (confidence of the predicted class) and
        ``probabilities`` (one row per prediction, columns in ``classes`` order, or dicts)."""
        o = self._outputs
        o.features, o.labels, o.values, o.scores, o.probabilities = features, labels, values, scores, probabilities
        if classes is not None:
            o.classes = classes

    def __enter__(self) -> "monitor_predict":
        self._outer = not calls.busy.__dict__.get("busy")
        calls.busy.busy = True
        self._ctx = otel_context.get_current()
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        dur = time.perf_counter_ns() - self._t0
        if not self._outer:
            return
        calls.busy.busy = False
        pipe = pipeline.active()
        if pipe is None or not is_instrumentation_enabled():
            return
        annot = calls.current_annotations.get()
        merged = calls.Annotations(
            ids=annot.ids if annot else None, segments=annot.segments if annot else None,
            model_name=(annot.model_name if annot and annot.model_name else None) or self.model_name,
            model_version=(annot.model_version if annot and annot.model_version else None) or self.model_version,
            attributes=annot.attributes if annot else None)
        failed = exc is not None
        pipe.recorder.submit(calls.Call(
            _ADAPTER, None, "predict", (), {}, None if failed else self._outputs, time.time_ns() - dur, dur,
            self._ctx, () if failed else merged.ids, merged, exc))

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with monitor_predict(self.model_name, self.model_version, task=self.task, classes=self.classes,
                                 feature_names=self.feature_names) as call:
                out = fn(*args, **kwargs)
                call.set_outputs(features=args[0] if args else None, **_guess_outputs(out, self.task, self.classes))
            return out

        return inner


def _guess_outputs(out: Any, task: Optional[str], classes: Any) -> dict:
    if task == sc.TASK_REGRESSION:
        return {"values": out}
    ndim = getattr(out, "ndim", None)
    if ndim == 2 or (ndim is None and isinstance(out, (list, tuple)) and out and isinstance(out[0], (list, tuple, dict))):
        return {"probabilities": out}
    if task is None and getattr(getattr(out, "dtype", None), "kind", "") == "f":
        return {"values": out}
    return {"labels": out}

