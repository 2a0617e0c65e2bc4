"""Zero-code instrumentation of model servers: scikit-learn, XGBoost, LightGBM, ONNX Runtime.

What is instrumented (each framework only if installed, each wrapped when the app imports it):

- scikit-learn: ``predict``, ``predict_proba`` and ``decision_function`` of every estimator
  and of ``Pipeline`` and the meta-estimators; ``fit``/``score``/``partial_fit`` are wrapped
  only so that the predict calls they make inside (cross-validation, calibration, scoring)
  are not recorded as served predictions;
- XGBoost: ``XGBModel``/``XGBClassifier`` ``predict``/``predict_proba``, ``Booster.predict``
  and ``Booster.inplace_predict``;
- LightGBM: ``LGBMModel``/``LGBMClassifier`` ``predict``/``predict_proba``, ``Booster.predict``;
- ONNX Runtime: ``InferenceSession.run``.

Model servers, for each model's own name and version (each module imported only when its
server is): MLServer (``otel_ml.instrumentation.mlserver``: the model settings' name and
version) and BentoML (``otel_ml.instrumentation.bentoml``: the model store tag); uvicorn
(``otel_ml.instrumentation.uvicorn``): on SIGTERM, records shipped before the process ends. Elsewhere,
``otel_ml.model_context(name=..., version=...)`` names the predictions made inside it.

A call nested in another instrumented call (a ``Pipeline`` calling its final estimator,
``predict_proba`` calling ``decision_function``, ``XGBClassifier`` calling its booster)
records once, at the outermost call. Each call gives an ``ml.predict`` span, the
``ml.client.*`` metrics and one ``ml.prediction`` event per row (see
``docs/semantic-conventions.md``); only the timing and a queue append happen on the request
path.

Usage::

    opentelemetry-instrument python serve.py          # found through its entry point

or in code::

    from otel_ml.instrumentation import MLInstrumentor

    MLInstrumentor().instrument(
        model_name="churn", model_version="3",       # else OTEL_ML_MODEL_NAME / _VERSION, else the model
        model_hook=lambda model: ("churn", model.version_tag),    # per-model name and version
        id_hook=lambda model, args, kwargs: request_ids.get(),   # the app's own prediction ids
    )
    ...
    MLInstrumentor().uninstrument()                   # every original method restored

Options of ``instrument()``: ``tracer_provider``, ``meter_provider``, ``model_hook``,
``id_hook``, ``config`` (an ``MLConfig``), any ``MLConfig`` field (``sample_ratio=...``), and
where the ML events go: by default otel-ml encodes them into OTLP itself and ships them from
its disk buffer to the ``OTEL_EXPORTER_OTLP_*`` endpoint; ``sender`` (an object with
``send(body, timeout) -> bool`` taking a serialized ``ExportLogsServiceRequest``) or
``log_exporter`` (an SDK ``LogRecordExporter``) replaces the OTLP transport after the buffer;
``logger_provider`` sends them through that SDK LoggerProvider instead (no disk buffer).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Collection, List, Optional, Tuple

import wrapt
# mypy 2.4 sees none of this module's names when it is imported from site-packages (checked on
# its own it is clean), so BaseInstrumentor is Any to it
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from otel_ml import pipeline as _pipeline
from otel_ml.config import MLConfig
from otel_ml.instrumentation.adapters import (
    LightGBMBoosterAdapter, OnnxAdapter, SklearnAdapter, XGBoostBoosterAdapter,
)
from otel_ml.instrumentation.package import _instruments
from otel_ml.recorder import Recorder

_log = logging.getLogger(__name__)

PREDICT_METHODS = ("predict", "predict_proba", "decision_function")
# BentoML's framework modules whose load_model(tag) otel_ml.instrumentation.bentoml wraps
_BENTOML_MODULES = (
    "_bentoml_impl.frameworks.sklearn", "_bentoml_impl.frameworks.xgboost", "_bentoml_impl.frameworks.lightgbm",
    "bentoml._internal.frameworks.onnx", "bentoml._internal.frameworks.picklable_model",
)
SILENCED_METHODS = ("fit", "partial_fit", "score")


def _defining_class(cls: type, name: str):
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass
    return None


class MLInstrumentor(BaseInstrumentor):
    """OpenTelemetry instrumentor for ML model predict calls (see the module docstring)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        config = kwargs.get("config")
        if config is None:
            fields = {f.name for f in dataclasses.fields(MLConfig)}
            config = MLConfig.from_env(**{k: v for k, v in kwargs.items() if k in fields})
        self._generation = getattr(self, "_generation", 0) + 1
        self._wrapped: List[Tuple[type, str]] = []
        self._done: set = set()
        pipe = _pipeline.MLPipeline(
            config, tracer_provider=kwargs.get("tracer_provider"), meter_provider=kwargs.get("meter_provider"),
            logger_provider=kwargs.get("logger_provider"), log_exporter=kwargs.get("log_exporter"),
            sender=kwargs.get("sender"), model_hook=kwargs.get("model_hook"), id_hook=kwargs.get("id_hook"))
        self.pipeline: Optional[_pipeline.MLPipeline] = pipe
        _pipeline._set_active(pipe)
        generation = self._generation
        for module, patcher in (("sklearn", self._patch_sklearn), ("xgboost", self._patch_xgboost),
                                ("lightgbm", self._patch_lightgbm), ("onnxruntime", self._patch_onnxruntime)):
            # Lazy: patch now if the app already imported it, else when it does (wrapt's hook).
            wrapt.register_post_import_hook(self._hook(module, patcher, generation, pipe.recorder), module)
        # Model servers: each model's name and version as the server gives it (imported when the server is).
        servers = [("mlserver.model", self._patch_mlserver), ("uvicorn.server", self._patch_uvicorn)]
        servers += [(m, self._bentoml_patcher(m)) for m in _BENTOML_MODULES]
        for module, patcher in servers:
            wrapt.register_post_import_hook(self._hook(module, patcher, generation, pipe.recorder), module)

    def _hook(self, module: str, patcher: Callable, generation: int, recorder: Recorder) -> Callable:
        def on_import(mod: Any) -> None:
            if generation != self._generation or module in self._done:
                return          # a hook left from an earlier instrument(): do nothing
            self._done.add(module)
            try:
                patcher(recorder)
            except Exception:  # noqa: BLE001 - a framework we cannot patch must not break the app
                _log.exception("otel-ml: could not instrument %s", module)

        return on_import

    def _wrap(self, owner: Any, name: str, wrapper: Callable) -> None:
        if name in owner.__dict__ and not isinstance(owner.__dict__[name], wrapt.ObjectProxy):
            wrapt.wrap_function_wrapper(owner, name, wrapper)
            self._wrapped.append((owner, name))

    def _patch_estimators(self, recorder: Recorder, classes, adapter: SklearnAdapter) -> None:
        silencer = recorder.silencer()
        wrappers = {m: recorder.wrapper(adapter, m) for m in PREDICT_METHODS}
        seen = set()
        for cls in classes:
            for name in PREDICT_METHODS + SILENCED_METHODS:
                owner = _defining_class(cls, name)
                if owner is None or owner is object or (owner, name) in seen:
                    continue
                seen.add((owner, name))
                self._wrap(owner, name, wrappers[name] if name in wrappers else silencer)

    def _patch_sklearn(self, recorder: Recorder) -> None:
        from sklearn.pipeline import Pipeline
        from sklearn.utils import all_estimators

        classes = [cls for _, cls in all_estimators()] + [Pipeline]
        self._patch_estimators(recorder, classes, SklearnAdapter("sklearn"))

    def _patch_xgboost(self, recorder: Recorder) -> None:
        from xgboost import core, sklearn

        classes = [getattr(sklearn, n) for n in ("XGBModel", "XGBClassifier", "XGBRegressor", "XGBRanker",
                                                  "XGBRFClassifier", "XGBRFRegressor") if hasattr(sklearn, n)]
        self._patch_estimators(recorder, classes, SklearnAdapter("xgboost"))
        booster = XGBoostBoosterAdapter()
        for method in ("predict", "inplace_predict"):
            self._wrap(core.Booster, method, recorder.wrapper(booster, method))

    def _patch_lightgbm(self, recorder: Recorder) -> None:
        from lightgbm import basic, sklearn

        classes = [getattr(sklearn, n) for n in ("LGBMModel", "LGBMClassifier", "LGBMRegressor", "LGBMRanker")
                   if hasattr(sklearn, n)]
        self._patch_estimators(recorder, classes, SklearnAdapter("lightgbm"))
        self._wrap(basic.Booster, "predict", recorder.wrapper(LightGBMBoosterAdapter(), "predict"))

    def _patch_onnxruntime(self, recorder: Recorder) -> None:
        from onnxruntime.capi.onnxruntime_inference_collection import InferenceSession, Session

        owner = _defining_class(InferenceSession, "run") or Session
        self._wrap(owner, "run", recorder.wrapper(OnnxAdapter(), "run"))

    def _patch_mlserver(self, recorder: Recorder) -> None:
        from otel_ml.instrumentation import mlserver

        mlserver.instrument(self._wrap)

    def _patch_uvicorn(self, recorder: Recorder) -> None:
        from otel_ml.instrumentation import uvicorn

        uvicorn.instrument(self._wrap)

    def _bentoml_patcher(self, module: str) -> Callable:
        def patch(recorder: Recorder) -> None:
            from otel_ml.instrumentation import bentoml

            bentoml.instrument_module(module, self._wrap)

        return patch

    def _uninstrument(self, **kwargs: Any) -> None:
        self._generation += 1
        for owner, name in reversed(self._wrapped):
            unwrap(owner, name)
        self._wrapped = []
        self._done = set()
        pipe = self.pipeline
        _pipeline._set_active(None)
        self.pipeline = None
        if pipe is not None:
            pipe.shutdown()

    # Convenience for apps and tests ----------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Turn queued calls into signals and ship the buffered events now."""
        return self.pipeline.force_flush(timeout_millis) if self.pipeline is not None else True


__all__ = ["MLInstrumentor", "PREDICT_METHODS"]
