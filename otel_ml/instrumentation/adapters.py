"""How each framework's inputs and outputs become prediction rows (background thread only).

An adapter answers two questions about one recorded call: which model made it (a default
name and version, before the user's hook, registration or environment override them) and
what it predicted, row by row (:class:`Interpretation`). Nothing here runs on the request
path, and nothing here imports a framework at module level.

Example::

    from otel_ml.instrumentation.adapters import SKLEARN

    result = SKLEARN.interpret(model, "predict_proba", (X,), {}, model.predict_proba(X), max_text=256)
    result.labels, result.scores, result.features[0]
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from otel_ml import semconv as sc
from otel_ml.convert import clean_score, feature_rows, n_rows, to_list


@dataclass
class Interpretation:
    """Per-row outputs of one call (lists of length ``n``; None where the model gives nothing)."""

    n: int
    task: str
    features: List[dict]
    labels: Optional[List[str]] = None
    values: Optional[List[float]] = None
    scores: Optional[List[Optional[float]]] = None
    probabilities: Optional[List[dict]] = None


def _argmax_rows(rows: Sequence[Sequence[float]]) -> List[int]:
    return [max(range(len(r)), key=r.__getitem__) if len(r) else 0 for r in rows]


def _from_probabilities(P: Any, classes: Optional[Sequence[Any]]) -> Tuple[List[str], List[Optional[float]], List[dict]]:
    rows = to_list(P)
    if rows and not isinstance(rows[0], list):          # binary models giving P(positive) only
        rows = [[1.0 - p, p] for p in rows]
    width = len(rows[0]) if rows else 0
    cls = [str(c) for c in to_list(classes)] if classes is not None else [str(i) for i in range(width)]
    if len(cls) != width:
        cls = [str(i) for i in range(width)]
    idx = _argmax_rows(rows)
    labels = [cls[i] for i in idx]
    scores = [clean_score(r[i]) for r, i in zip(rows, idx)]
    probs = [dict(zip(cls, (float(p) for p in r))) for r in rows]
    return labels, scores, probs


class Adapter:
    """Base adapter: subclasses override ``default_model`` and ``interpret``."""

    framework = "custom"

    def default_model(self, instance: Any) -> Tuple[str, Optional[str]]:
        return type(instance).__name__, None

    def rows(self, method: str, output: Any) -> Optional[int]:
        """Rows predicted, from the output alone (cheap: used to make prediction ids)."""
        return n_rows(output)

    def interpret(self, instance: Any, method: str, args: tuple, kwargs: dict, output: Any,
                  max_text: int) -> Interpretation:
        raise NotImplementedError


class _Cache:
    """Per-model facts computed once (task, feature names, objective), keyed weakly by model."""

    def __init__(self) -> None:
        self._weak: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()

    def get(self, instance: Any) -> dict:
        try:
            d = self._weak.get(instance)
            if d is None:
                d = self._weak[instance] = {}
            return d
        except TypeError:          # not weak-referenceable or not hashable: no caching
            return {}


class SklearnAdapter(Adapter):
    """scikit-learn estimators and pipelines, and the sklearn APIs of XGBoost and LightGBM."""

    framework = "sklearn"

    def __init__(self, framework: str = "sklearn") -> None:
        self.framework = framework
        self._cache = _Cache()

    def default_model(self, instance: Any) -> Tuple[str, Optional[str]]:
        final = instance
        steps = getattr(instance, "steps", None)
        if steps:
            final = steps[-1][1]
        return type(final).__name__, None

    def _task(self, instance: Any, output: Any) -> str:
        facts = self._cache.get(instance)
        task = facts.get("task")
        if task is None:
            task = None
            try:
                from sklearn.base import is_classifier, is_regressor  # noqa: PLC0415

                if is_classifier(instance):
                    task = sc.TASK_CLASSIFICATION
                elif is_regressor(instance):
                    task = sc.TASK_REGRESSION
            except Exception:  # noqa: BLE001 - third-party estimators with odd tags
                task = None
            if task is None:
                kind = getattr(getattr(output, "dtype", None), "kind", "O")
                task = sc.TASK_REGRESSION if kind == "f" else sc.TASK_CLASSIFICATION
            facts["task"] = task
        return task

    @staticmethod
    def _names(instance: Any) -> Optional[List[str]]:
        names = getattr(instance, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else None

    def interpret(self, instance, method, args, kwargs, output, max_text):
        X = args[0] if args else kwargs.get("X", kwargs.get("data"))
        features = feature_rows(X, self._names(instance), max_text)
        n = n_rows(output) or len(features)
        classes = getattr(instance, "classes_", None)
        if method == "predict_proba":
            labels, scores, probs = _from_probabilities(output, classes)
            return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels, scores=scores,
                                  probabilities=probs)
        if method == "decision_function":
            rows = to_list(output)
            cls = [str(c) for c in to_list(classes)] if classes is not None else None
            if rows and isinstance(rows[0], list):
                idx = _argmax_rows(rows)
                labels = [cls[i] if cls else str(i) for i in idx]
            else:
                labels = [(cls[1] if d > 0 else cls[0]) if cls and len(cls) == 2 else str(int(d > 0)) for d in rows]
            return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels)
        task = self._task(instance, output)
        vals = to_list(output)
        if task == sc.TASK_REGRESSION:
            values = [float(v[0]) if isinstance(v, list) else float(v) for v in vals]
            return Interpretation(n, task, features, values=values)
        return Interpretation(n, task, features, labels=[str(v) for v in vals])


def _xgb_objective(booster: Any) -> str:
    try:
        return json.loads(booster.save_config())["learner"]["objective"]["name"]
    except Exception:  # noqa: BLE001
        return ""


class XGBoostBoosterAdapter(Adapter):
    """``xgboost.Booster.predict`` / ``inplace_predict`` (the native API)."""

    framework = "xgboost"

    def __init__(self) -> None:
        self._cache = _Cache()

    def default_model(self, instance):
        return "xgboost.Booster", None

    def interpret(self, instance, method, args, kwargs, output, max_text):
        data = args[0] if args else kwargs.get("data")
        facts = self._cache.get(instance)
        if "objective" not in facts:
            facts["objective"] = _xgb_objective(instance)
        names = getattr(data, "feature_names", None) or getattr(instance, "feature_names", None)
        X = data.get_data() if hasattr(data, "get_data") and hasattr(data, "num_row") else data
        features = feature_rows(X, names, max_text)
        return _booster_outputs(facts["objective"], output, features, kwargs)


def _booster_outputs(objective: str, output: Any, features: List[dict], kwargs: dict) -> Interpretation:
    n = n_rows(output) or len(features)
    margin = kwargs.get("output_margin") or kwargs.get("raw_score") or kwargs.get("pred_leaf") or kwargs.get("pred_contrib")
    obj = objective.split(" ")[0]
    if not margin and (obj.startswith("binary") or obj in ("multi:softprob", "multiclass", "softmax", "multiclassova")):
        labels, scores, probs = _from_probabilities(output, None)
        return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels, scores=scores, probabilities=probs)
    if obj == "multi:softmax":
        return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=[str(int(v)) for v in to_list(output)])
    vals = to_list(output)
    return Interpretation(n, sc.TASK_REGRESSION, features,
                          values=[float(v[0]) if isinstance(v, list) else float(v) for v in vals])


class LightGBMBoosterAdapter(Adapter):
    """``lightgbm.Booster.predict`` (the native API)."""

    framework = "lightgbm"

    def __init__(self) -> None:
        self._cache = _Cache()

    def default_model(self, instance):
        return "lightgbm.Booster", None

    def interpret(self, instance, method, args, kwargs, output, max_text):
        data = args[0] if args else kwargs.get("data")
        facts = self._cache.get(instance)
        if "objective" not in facts:
            obj = (getattr(instance, "params", None) or {}).get("objective")
            if not obj:
                try:
                    obj = instance.dump_model(num_iteration=1).get("objective", "")
                except Exception:  # noqa: BLE001
                    obj = ""
            facts["objective"] = str(obj)
            try:
                facts["names"] = list(instance.feature_name())
            except Exception:  # noqa: BLE001
                facts["names"] = None
        features = feature_rows(data, facts["names"], max_text)
        return _booster_outputs(facts["objective"], output, features, kwargs)


class OnnxAdapter(Adapter):
    """``onnxruntime.InferenceSession.run``.

    Features: one per model input when the model has several (an input of width k gives
    ``<input>_0 .. <input>_{k-1}``); for a single 2-D input, the names in the model's metadata
    property ``feature_names`` (comma-separated) if present, else ``x0, x1, ...``.
    Outputs: an integer or string output is the predicted label; a sequence of maps or a 2-D
    float output next to it holds the class probabilities; a lone float output is a regression
    value. Model name/version: metadata properties ``ml.model.name`` / ``ml.model.version``,
    else the graph name and the model version.
    """

    framework = "onnxruntime"

    def __init__(self) -> None:
        self._cache = _Cache()

    def _facts(self, session: Any) -> dict:
        facts = self._cache.get(session)
        if not facts:
            meta = session.get_modelmeta()
            custom = dict(getattr(meta, "custom_metadata_map", {}) or {})
            facts["name"] = custom.get(sc.ML_MODEL_NAME) or meta.graph_name or "onnx-model"
            facts["version"] = custom.get(sc.ML_MODEL_VERSION) or (str(meta.version) if meta.version else None)
            names = custom.get("feature_names")
            facts["feature_names"] = [s.strip() for s in names.split(",")] if names else None
            facts["outputs"] = [(o.name, o.type) for o in session.get_outputs()]
        return facts

    def default_model(self, instance):
        facts = self._facts(instance)
        return facts["name"], facts["version"]

    def rows(self, method, output):
        try:
            return n_rows(output[0])
        except Exception:  # noqa: BLE001
            return None

    def interpret(self, instance, method, args, kwargs, output, max_text):
        facts = self._facts(instance)
        output_names = args[0] if args else kwargs.get("output_names")
        feed = args[1] if len(args) > 1 else kwargs.get("input_feed", {})
        features = self._features(feed, facts, max_text)
        names = list(output_names) if output_names else [name for name, _ in facts["outputs"]]
        types = dict(facts["outputs"])
        label_out = prob_out = float_out = None
        for name, value in zip(names, output):
            t = types.get(name, "")
            if t.startswith("seq(map") or (prob_out is None and label_out is not None and "float" in t):
                prob_out = value
            elif "int" in t or "string" in t:
                label_out = value if label_out is None else label_out
            elif "float" in t or "double" in t:
                float_out = value if float_out is None else float_out
        n = n_rows(output[0]) or len(features)
        if label_out is None and prob_out is None:
            vals = to_list(float_out if float_out is not None else output[0])
            return Interpretation(n, sc.TASK_REGRESSION, features,
                                  values=[float(v[0]) if isinstance(v, list) else float(v) for v in vals])
        labels = [str(v[0]) if isinstance(v, list) else str(v) for v in to_list(label_out)] if label_out is not None else None
        scores = probs = None
        if prob_out is not None:
            if isinstance(prob_out, list) and prob_out and isinstance(prob_out[0], dict):     # ZipMap output
                probs = [{str(k): float(p) for k, p in m.items()} for m in prob_out]
            else:
                _, _, probs = _from_probabilities(prob_out, None)
            if labels is None:
                labels = [max(p, key=p.get) for p in probs]
            scores = [clean_score(p.get(lbl)) for p, lbl in zip(probs, labels)]
        return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels, scores=scores, probabilities=probs)

    @staticmethod
    def _features(feed: dict, facts: dict, max_text: int) -> List[dict]:
        if len(feed) == 1:
            (name, value), = feed.items()
            return feature_rows(value, facts["feature_names"], max_text)
        per_input = []
        for name, value in feed.items():
            width = value.shape[1] if getattr(value, "ndim", 1) == 2 else 1
            cols = [name] if width == 1 else [f"{name}_{j}" for j in range(width)]
            per_input.append(feature_rows(value, cols, max_text))
        rows = []
        for parts in zip(*per_input):
            merged: dict = {}
            for p in parts:
                merged.update(p)
            rows.append(merged)
        return rows


@dataclass
class Explicit:
    """Outputs given by the application through ``otel_ml.monitor_predict``."""

    features: Any = None
    labels: Any = None
    values: Any = None
    scores: Any = None
    probabilities: Any = None
    classes: Any = None
    task: Optional[str] = None
    feature_names: Optional[Sequence[str]] = None
    extra: dict = field(default_factory=dict)


class ExplicitAdapter(Adapter):
    """Calls timed with ``otel_ml.monitor_predict``: the app states inputs and outputs."""

    framework = "custom"

    def rows(self, method, output: Explicit):
        for v in (output.labels, output.values, output.probabilities, output.features):
            if v is not None:
                return n_rows(v)
        return None

    def interpret(self, instance, method, args, kwargs, output: Explicit, max_text):
        features = feature_rows(output.features, output.feature_names, max_text) if output.features is not None else []
        labels = [str(v) for v in to_list(output.labels)] if output.labels is not None else None
        values = [float(v) for v in to_list(output.values)] if output.values is not None else None
        scores = [clean_score(v) for v in to_list(output.scores)] if output.scores is not None else None
        probs = None
        if output.probabilities is not None:
            P = output.probabilities
            if isinstance(P, (list, tuple)) and P and isinstance(P[0], dict):
                probs = [{str(k): float(v) for k, v in m.items()} for m in P]
                if labels is None:
                    labels = [max(m, key=m.get) for m in probs]
            else:
                lab, sco, probs = _from_probabilities(P, output.classes)
                labels = labels if labels is not None else lab
                scores = scores if scores is not None else sco
        task = output.task or (sc.TASK_REGRESSION if values is not None and labels is None else sc.TASK_CLASSIFICATION)
        n = self.rows(method, output) or 0
        if not features and n:
            features = [{} for _ in range(n)]
        return Interpretation(n, task, features, labels=labels, values=values, scores=scores, probabilities=probs)


SKLEARN = SklearnAdapter()
