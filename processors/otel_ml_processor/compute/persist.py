"""A JSON codec for computed results: dataclasses of numbers, strings, lists, tuples, dicts, arrays.

The compute cycle keeps each model version's :class:`~otel_ml_processor.compute.engine.ModelMetrics`
in the database (``model_snapshots``) so that any replica can serve any model's page from it.
Snapshots outlive the code that wrote them, so :func:`load` is lenient the way a reader of an
older or newer snapshot must be:

- a field the class gained since the snapshot was written gets its default (``None`` when it
  has none); a field the class no longer has is ignored;
- a dataclass whose name the reader does not know comes back as a plain ``dict`` of its fields.

What JSON cannot say is tagged: ``{"$dataclass": name, "fields": {...}}``, ``{"$tuple": [...]}``,
``{"$dict": [[key, value], ...]}`` for dicts whose keys are not all strings (tuple keys such as
``(attribute, metric)``) or could be mistaken for a tag, ``{"$float": "nan"}`` for NaN and
infinities, ``{"$ndarray": [...], "dtype": ...}`` for numpy arrays; numpy scalars become numbers.

Example::

    from otel_ml_processor.compute.persist import dump, load

    text = dump(metrics)                 # str (JSON)
    again = load(text)                   # ModelMetrics equal to metrics
    load(text, types=[MyResult])         # dataclasses from outside the compute stage, by name
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any, Iterable, Optional

import numpy as np

from otel_ml_processor.compute import engine

#: Version of the encoding (the outer object's ``$codec``).
CODEC_VERSION = 1
_COMPUTE = "otel_ml_processor.compute."
_TAGS = ("$dataclass", "$tuple", "$dict", "$float", "$ndarray", "$codec")


def _compute_types() -> list:
    """Every dataclass defined in a loaded module of the compute stage (``engine`` first)."""
    names = sorted(n for n in sys.modules if n.startswith(_COMPUTE) and sys.modules[n] is not None)
    names.sort(key=lambda n: n != engine.__name__)
    return [v for n in names for v in vars(sys.modules[n]).values()
            if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == n]


def _encode(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str, int)) and not isinstance(obj, np.integer):
        return obj
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else {"$float": repr(float(obj))}
    if isinstance(obj, np.generic):
        return _encode(obj.item())
    if isinstance(obj, np.ndarray):
        return {"$ndarray": [_encode(v) for v in obj.tolist()], "dtype": obj.dtype.str if obj.dtype != object else "O"}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"$dataclass": type(obj).__name__,
                "fields": {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v) for v in obj]}
    if isinstance(obj, (list, set, frozenset)):
        return [_encode(v) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"$dict": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    raise TypeError(f"cannot persist a {type(obj).__name__}: {obj!r:.80}")


def dump(obj: Any) -> str:
    """``obj`` as compact JSON text (see the module docstring for what it may hold)."""
    return json.dumps({"$codec": CODEC_VERSION, "value": _encode(obj)}, separators=(",", ":"), allow_nan=False)


def _build(cls: type, fields: dict) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in fields:
            kwargs[f.name] = fields[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None    # added since, without a default: unknown in this snapshot
    return cls(**kwargs)


def _decode(obj: Any, types: dict) -> Any:
    if isinstance(obj, list):
        return [_decode(v, types) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "$float" in obj:
        return float(obj["$float"])
    if "$tuple" in obj:
        return tuple(_decode(v, types) for v in obj["$tuple"])
    if "$dict" in obj:
        return {_decode(k, types): _decode(v, types) for k, v in obj["$dict"]}
    if "$ndarray" in obj:
        values = [_decode(v, types) for v in obj["$ndarray"]]
        return np.array(values, dtype=object if obj["dtype"] == "O" else np.dtype(obj["dtype"]))
    if "$dataclass" in obj:
        fields = {k: _decode(v, types) for k, v in obj["fields"].items()}
        cls = types.get(obj["$dataclass"])
        return fields if cls is None else _build(cls, fields)
    return {k: _decode(v, types) for k, v in obj.items()}


def load(text: str, types: Optional[Iterable[type]] = None) -> Any:
    """The object :func:`dump` wrote. Dataclasses are rebuilt by class name from ``types``, else
    from the dataclasses of the compute stage's modules (``ModelMetrics``, ``DriftResult``, and
    those the engine's results hold, wherever in ``compute`` they are defined)."""
    known: dict = {}
    for cls in [*(types or ()), *_compute_types()]:
        known.setdefault(cls.__name__, cls)
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("$codec") != CODEC_VERSION:
        raise ValueError(f"not a snapshot of codec version {CODEC_VERSION}")
    return _decode(data["value"], known)
