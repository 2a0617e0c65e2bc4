"""How each framework's inputs and outputs become prediction rows (background thread only).

An adapter answers two questions about one recorded call: which model made it (a default
name and version, before the user's hook, registration or environment override them) and
what it predicted, row by row (:class:`Interpretation`, columns of plain Python values).
Nothing here runs on the request path, and nothing here imports a framework at module level;
numpy is used only on outputs that already are numpy arrays.

Example::

    from otel_ml.instrumentation.adapters import SklearnAdapter

    result = SklearnAdapter().interpret(model, "predict_proba", (X,), {}, model.predict_proba(X))
    result.labels, result.scores, result.classes, result.probabilities[0]
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, List, Optional, Sequence, Tuple

from otel_ml import semconv as sc
from otel_ml.convert import EMPTY, Features, clean_score, feature_table, merge_columns, n_rows, to_list


@dataclass
class Interpretation:
    """Per-row outputs of one call (lists of length ``n``; None where the model gives nothing).

    ``probabilities[i][j]`` is the probability of class ``classes[j]`` for row ``i``.
    """

    n: int
    task: str
    features: Features
    labels: Optional[List[str]] = None
    values: Optional[List[float]] = None
    scores: Optional[List[Optional[float]]] = None
    classes: Optional[Sequence[str]] = None
    probabilities: Optional[List[List[Optional[float]]]] = None


def _argmax_rows(rows: Sequence[Sequence[float]]) -> List[int]:
    return [max(range(len(r)), key=r.__getitem__) if len(r) else 0 for r in rows]


_CLASS_NAMES: dict = {}         # id(classes) -> (classes, width, names): a model's classes_ read once


def _class_names(classes: Any, width: int) -> Tuple[str, ...]:
    """The class names of the probability columns, as one shared tuple per model's classes."""
    if classes is not None:
        hit = _CLASS_NAMES.get(id(classes))
        if hit is not None and hit[0] is classes and hit[1] == width:
            return hit[2]
    names = tuple(str(c) for c in to_list(classes)) if classes is not None else ()
    if len(names) != width:
        names = tuple(str(i) for i in range(width))
    if classes is not None:
        if len(_CLASS_NAMES) >= 256:
            _CLASS_NAMES.clear()
        _CLASS_NAMES[id(classes)] = (classes, width, names)
    return names


_VECTOR_ROWS = 8                # from this many rows on, numpy finds the best class of each row


def _from_probabilities(P: Any, classes: Optional[Sequence[Any]]
                        ) -> Tuple[List[str], List[Optional[float]], Sequence[str], List[List[Optional[float]]]]:
    """Labels, scores, class names and probability rows of a probability output."""
    if (getattr(P, "ndim", None) == 2 and hasattr(P, "argmax") and P.shape[0] >= _VECTOR_ROWS and P.shape[1]
            and P.dtype.kind == "f"):
        # A numpy array (numpy is loaded: the model returned one): argmax and max per row at once.
        cls = _class_names(classes, P.shape[1])
        idx = P.argmax(axis=1)
        best = P.max(axis=1)
        # min() is NaN when any score is: then each is checked on its own.
        finite = float("-inf") < float(best.min()) and float(best.max()) < float("inf")
        scores = best.tolist() if finite else [clean_score(v) for v in best.tolist()]
        return [cls[i] for i in idx.tolist()], scores, cls, P.tolist()
    rows = to_list(P)
    if rows and not isinstance(rows[0], list):          # binary models giving P(positive) only
        rows = [[1.0 - p, p] for p in rows]
    width = len(rows[0]) if rows else 0
    cls = _class_names(classes, width)
    idx = _argmax_rows(rows)
    if getattr(P, "dtype", None) is None or P.dtype.kind != "f":
        rows = [[float(p) for p in r] for r in rows]
    return [cls[i] for i in idx], [clean_score(r[i]) if r else None for r, i in zip(rows, idx)], cls, rows


def _from_probability_dicts(maps: Sequence[dict]) -> Tuple[List[str], List[List[Optional[float]]]]:
    """Class names (in order of first appearance) and rows of ``{class: probability}`` maps."""
    classes: dict = {}
    for m in maps:
        for k in m:
            classes.setdefault(str(k), None)
    names = list(classes)
    rows = []
    for m in maps:
        by_name = {str(k): v for k, v in m.items()}
        rows.append([float(by_name[c]) if c in by_name else None for c in names])
    return names, rows


def _best(classes: Sequence[str], rows: List[List[Optional[float]]]) -> Tuple[List[str], List[Optional[float]]]:
    labels: List[str] = []
    scores: List[Optional[float]] = []
    for r in rows:
        # (column, probability) of the first highest probability the row has
        best = max(((k, v) for k, v in enumerate(r) if v is not None), key=itemgetter(1), default=None)
        labels.append(classes[best[0]] if best is not None else "")
        scores.append(clean_score(best[1]) if best is not None else None)
    return labels, scores


class Adapter:
    """Base adapter: subclasses override ``default_model`` and ``interpret``."""

    framework = "custom"

    def default_model(self, instance: Any) -> Tuple[str, Optional[str]]:
        return type(instance).__name__, None

    def rows(self, method: str, output: Any) -> Optional[int]:
        """Rows predicted, from the output alone (cheap: used to make prediction ids)."""
        return n_rows(output)

    def interpret(self, instance: Any, method: str, args: tuple, kwargs: dict, output: Any) -> Interpretation:
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


def _values(output: Any) -> List[float]:
    return [float(v[0]) if isinstance(v, list) else float(v) for v in to_list(output)]


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
                from sklearn.base import is_classifier, is_regressor

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

    def _names(self, instance: Any) -> Optional[List[str]]:
        names = getattr(instance, "feature_names_in_", None)
        if names is None:
            return None
        facts = self._cache.get(instance)
        if facts.get("names_of") is not names:     # a refit makes a new array: read it again
            facts["names"], facts["names_of"] = [str(n) for n in names], names
        return facts["names"]

    def interpret(self, instance, method, args, kwargs, output):
        X = args[0] if args else kwargs.get("X", kwargs.get("data"))
        features = feature_table(X, self._names(instance))
        n = n_rows(output) or len(features)
        classes = getattr(instance, "classes_", None)
        if method == "predict_proba":
            labels, scores, cls, probs = _from_probabilities(output, classes)
            return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels, scores=scores,
                                  classes=cls, probabilities=probs)
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
        if task == sc.TASK_REGRESSION:
            return Interpretation(n, task, features, values=_values(output))
        return Interpretation(n, task, features, labels=[str(v) for v in to_list(output)])


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

    def interpret(self, instance, method, args, kwargs, output):
        data = args[0] if args else kwargs.get("data")
        facts = self._cache.get(instance)
        if "objective" not in facts:
            facts["objective"] = _xgb_objective(instance)
        names = getattr(data, "feature_names", None) or getattr(instance, "feature_names", None)
        X = data.get_data() if hasattr(data, "get_data") and hasattr(data, "num_row") else data
        return _booster_outputs(facts["objective"], output, feature_table(X, names), kwargs)


def _booster_outputs(objective: str, output: Any, features: Features, kwargs: dict) -> Interpretation:
    n = n_rows(output) or len(features)
    margin = kwargs.get("output_margin") or kwargs.get("raw_score") or kwargs.get("pred_leaf") or kwargs.get("pred_contrib")
    obj = objective.split(" ")[0]
    if not margin and (obj.startswith("binary") or obj in ("multi:softprob", "multiclass", "softmax", "multiclassova")):
        labels, scores, cls, probs = _from_probabilities(output, None)
        return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels, scores=scores, classes=cls,
                              probabilities=probs)
    if obj == "multi:softmax":
        return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=[str(int(v)) for v in to_list(output)])
    return Interpretation(n, sc.TASK_REGRESSION, features, values=_values(output))


class LightGBMBoosterAdapter(Adapter):
    """``lightgbm.Booster.predict`` (the native API)."""

    framework = "lightgbm"

    def __init__(self) -> None:
        self._cache = _Cache()

    def default_model(self, instance):
        return "lightgbm.Booster", None

    def interpret(self, instance, method, args, kwargs, output):
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
        return _booster_outputs(facts["objective"], output, feature_table(data, facts["names"]), kwargs)


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

    def interpret(self, instance, method, args, kwargs, output):
        facts = self._facts(instance)
        output_names = args[0] if args else kwargs.get("output_names")
        feed = args[1] if len(args) > 1 else kwargs.get("input_feed", {})
        features = self._features(feed, facts)
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
            return Interpretation(n, sc.TASK_REGRESSION, features,
                                  values=_values(float_out if float_out is not None else output[0]))
        labels = [str(v[0]) if isinstance(v, list) else str(v) for v in to_list(label_out)] if label_out is not None else None
        scores = cls = probs = None
        if prob_out is not None:
            if isinstance(prob_out, list) and prob_out and isinstance(prob_out[0], dict):     # ZipMap output
                cls, probs = _from_probability_dicts(prob_out)
                best_labels, best_scores = _best(cls, probs)
            else:
                best_labels, best_scores, cls, probs = _from_probabilities(prob_out, None)
            if labels is None:
                labels, scores = best_labels, best_scores
            else:
                col = {c: j for j, c in enumerate(cls)}
                scores = [clean_score(r[col[lbl]]) if lbl in col and r[col[lbl]] is not None else None
                          for r, lbl in zip(probs, labels)]
        return Interpretation(n, sc.TASK_CLASSIFICATION, features, labels=labels, scores=scores, classes=cls,
                              probabilities=probs)

    @staticmethod
    def _features(feed: dict, facts: dict) -> Features:
        if len(feed) == 1:
            (name, value), = feed.items()
            return feature_table(value, facts["feature_names"])
        per_input = []
        for name, value in feed.items():
            width = value.shape[1] if getattr(value, "ndim", 1) == 2 else 1
            cols = [name] if width == 1 else [f"{name}_{j}" for j in range(width)]
            per_input.append(feature_table(value, cols))
        return merge_columns(per_input)


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

    def interpret(self, instance, method, args, kwargs, output: Explicit):
        features = feature_table(output.features, output.feature_names) if output.features is not None else EMPTY
        labels = [str(v) for v in to_list(output.labels)] if output.labels is not None else None
        values = [float(v) for v in to_list(output.values)] if output.values is not None else None
        scores = [clean_score(v) for v in to_list(output.scores)] if output.scores is not None else None
        cls: Optional[Sequence[str]] = None
        probs: Optional[List[List[Optional[float]]]] = None
        if output.probabilities is not None:
            P = output.probabilities
            if isinstance(P, (list, tuple)) and P and isinstance(P[0], dict):
                cls, probs = _from_probability_dicts(P)
                lab, sco = _best(cls, probs)
            else:
                lab, sco, cls, probs = _from_probabilities(P, output.classes)
            labels = labels if labels is not None else lab
            scores = scores if scores is not None else sco
        task = output.task or (sc.TASK_REGRESSION if values is not None and labels is None else sc.TASK_CLASSIFICATION)
        n = self.rows(method, output) or 0
        return Interpretation(n, task, features, labels=labels, values=values, scores=scores, classes=cls,
                              probabilities=probs)
