"""BentoML: a model loaded from the BentoML model store carries its tag's name and version.

``bentoml.sklearn.load_model("iris_clf:latest")`` (and the ``load_model`` of BentoML's
XGBoost, LightGBM, ONNX and picklable-model frameworks) returns the framework's own model
object; otel-ml remembers the tag it came from, resolved (``latest`` becomes the stored
version), so that object's predictions carry ``ml.model.name`` = the tag's name and
``ml.model.version`` = its version, in every worker BentoML starts. ``OTEL_ML_MODEL_NAME`` /
``_VERSION`` still override it. A model loaded by other means (``joblib.load`` of a
``BentoModel``'s ``path_of(...)``) is named with ``otel_ml.set_model`` or
``otel_ml.model_context``.

Activated by :class:`~otel_ml.instrumentation.MLInstrumentor` when BentoML imports one of those
framework modules (``opentelemetry-instrument bentoml serve service:Svc``): nothing to call.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

from otel_ml.registry import serve

_log = logging.getLogger(__name__)

Wrap = Callable[[Any, str, Callable], None]


def _stored_model(ref: Any) -> Any:
    """The ``bentoml.Model`` that a tag (``"name:version"``, ``Tag``) or model refers to."""
    if hasattr(ref, "tag") and hasattr(ref, "path_of"):
        return ref
    import bentoml

    return bentoml.models.get(ref)


def _load_wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    ref = args[0] if args else kwargs.get("bento_model")
    try:
        stored = _stored_model(ref)
    except Exception:  # noqa: BLE001 - let BentoML raise its own error for a bad tag
        return wrapped(*args, **kwargs)
    # The resolved model, so "latest" is looked up once and names the same version that loads.
    args = (stored,) + tuple(args[1:]) if args else args
    if not args:
        kwargs = {**kwargs, "bento_model": stored}
    model = wrapped(*args, **kwargs)
    try:
        serve(model, stored.tag.name, stored.tag.version)
    except Exception:  # noqa: BLE001 - naming must never break loading
        _log.warning("otel-ml: could not name the BentoML model %s", stored.tag, exc_info=True)
    return model


def instrument_module(module_name: str, wrap: Wrap) -> None:
    """Wrap ``load_model`` of one of BentoML's framework modules (imported already; the list is
    ``otel_ml.instrumentation._BENTOML_MODULES``, hooked before BentoML is imported)."""
    module = importlib.import_module(module_name)
    if hasattr(module, "load_model"):
        wrap(module, "load_model", _load_wrapper)
