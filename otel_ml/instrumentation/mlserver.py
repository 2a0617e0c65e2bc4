"""MLServer (Seldon): each model's rows carry the name and version MLServer gives that model.

MLServer serves several models in one process (and in its parallel workers), each from a
``model-settings.json`` with a ``name`` and an optional ``parameters.version``. While a
runtime's ``predict`` runs (``MLModel.predict`` as the runtime overrides it: the scikit-learn,
XGBoost, LightGBM runtimes and custom ones), the predict calls the framework adapters record
inside it take ``MLModel.name`` and ``MLModel.version`` as the model's identity (no version in
the settings: ``OTEL_ML_MODEL_VERSION``, else ``unknown``). ``OTEL_ML_MODEL_NAME`` /
``_VERSION`` still override it; ``otel_ml.model_context`` in a custom runtime too.

Activated by :class:`~otel_ml.instrumentation.MLInstrumentor` when the app imports ``mlserver``
(``opentelemetry-instrument mlserver start models/``): nothing to call. In code::

    from otel_ml.instrumentation import mlserver as otel_ml_mlserver

    otel_ml_mlserver.instrument(wrap)   # wrap(owner, name, wrapper): how the instrumentor wraps
"""

from __future__ import annotations

from typing import Any, Callable

from otel_ml import calls

Wrap = Callable[[type, str, Callable], None]


def _defining_class(cls: type, name: str):
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass
    return None


def _predict_wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    async def run() -> Any:
        # The model settings are read on each call: MLServer reloads a model under a new version
        # into a new MLModel, and a custom runtime may change its settings.
        with calls.server_model(instance.name, instance.version):
            return await wrapped(*args, **kwargs)

    if instance is None:        # called on the class: nothing to name
        return wrapped(*args, **kwargs)
    return run()


def instrument(wrap: Wrap) -> None:
    """Name the rows of every MLServer model's ``predict`` calls after its settings.

    Each runtime class is found when its first model is created (``MLModel.__init__``), in the
    main process and in each parallel worker, so runtimes imported later are covered too."""
    from mlserver.model import MLModel

    seen: set = set()

    def init_wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        cls = type(instance)
        if cls not in seen:
            seen.add(cls)
            owner = _defining_class(cls, "predict")
            if owner is not None and owner is not MLModel:
                wrap(owner, "predict", _predict_wrapper)
        return result

    wrap(MLModel, "__init__", init_wrapper)
