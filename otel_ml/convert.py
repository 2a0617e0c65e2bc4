"""Turn model inputs and outputs into ``ml.*`` attributes (runs on the background thread).

Inputs: a pandas DataFrame (its columns name the features), a 2-D numpy array or scipy sparse
matrix, a list of rows (lists, tuples or dicts), or a 1-D array/list (one feature per row).
Feature names come from the caller (``feature_names_in_``, ONNX inputs, ...), else the
DataFrame or dict keys, else ``x0, x1, ...`` (scikit-learn's own convention).

A value that is not a scalar is summarized, never shipped raw:
- a string longer than ``max_text`` becomes ``ml.feature.<name>.length`` (its length);
- bytes become ``ml.feature.<name>.length``;
- an array or list becomes ``.size``, and for numbers ``.mean``, ``.min`` and ``.max``;
- ``None`` is left out (a missing value).

Example::

    from otel_ml.convert import feature_rows

    rows = feature_rows([[1.0, "a"], [2.0, "b"]], ["age", "plan"], max_text=256)
    assert rows[0] == {"ml.feature.age": 1.0, "ml.feature.plan": "a"}
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

from otel_ml import semconv as sc

_SPARSE_DENSE_MAX_COLUMNS = 1000


def put_feature(attrs: dict, key: str, value: Any, max_text: int) -> None:
    """Set attribute ``key`` to ``value`` if it is a scalar, else set its summary attributes."""
    t = type(value)
    if t is float or t is int or t is bool:
        attrs[key] = value
        return
    if t is str:
        if len(value) <= max_text:
            attrs[key] = value
        else:
            attrs[key + sc.FEATURE_SUMMARY_LENGTH] = len(value)
        return
    if value is None:
        return
    if isinstance(value, bool):                  # subclasses (numpy.float64 is a float)
        attrs[key] = bool(value)
        return
    if isinstance(value, int):
        attrs[key] = int(value)
        return
    if isinstance(value, float):
        attrs[key] = float(value)
        return
    if isinstance(value, str):
        put_feature(attrs, key, str(value), max_text)
        return
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:   # numpy scalar
        put_feature(attrs, key, item(), max_text)
        return
    if isinstance(value, (bytes, bytearray, memoryview)):
        attrs[key + sc.FEATURE_SUMMARY_LENGTH] = len(value)
        return
    _summarize_array(attrs, key, value)


def _summarize_array(attrs: dict, key: str, value: Any) -> None:
    try:
        import numpy as np  # noqa: PLC0415 - only when a non-scalar feature shows up

        arr = np.asarray(value)
        attrs[key + sc.FEATURE_SUMMARY_SIZE] = int(arr.size)
        if arr.size and arr.dtype.kind in "biuf":
            flat = arr.astype(float, copy=False).ravel()
            finite = flat[np.isfinite(flat)]
            if finite.size:
                attrs[key + sc.FEATURE_SUMMARY_MEAN] = float(finite.mean())
                attrs[key + sc.FEATURE_SUMMARY_MIN] = float(finite.min())
                attrs[key + sc.FEATURE_SUMMARY_MAX] = float(finite.max())
    except Exception:  # noqa: BLE001 - an object we cannot read: record only that it was there
        attrs[key + sc.FEATURE_SUMMARY_SIZE] = 1


def default_names(n: int) -> List[str]:
    return [f"x{i}" for i in range(n)]


def _keys(names: Sequence[str]) -> List[str]:
    return [sc.ML_FEATURE_PREFIX + str(n) for n in names]


def _rows_from_columns(names: Sequence[str], columns: Sequence[list], max_text: int, scalar: Sequence[bool]) -> List[dict]:
    keys = _keys(names)
    if all(scalar):
        # Fast path: numeric columns need no per-value checks (NaN stays a double).
        return [dict(zip(keys, row)) for row in zip(*columns)]
    rows = []
    for row in zip(*columns):
        attrs: dict = {}
        for k, v in zip(keys, row):
            put_feature(attrs, k, v, max_text)
        rows.append(attrs)
    return rows


def feature_rows(X: Any, names: Optional[Sequence[str]], max_text: int) -> List[dict]:
    """One dict of ``ml.feature.*`` attributes per input row."""
    columns = getattr(X, "columns", None)
    if columns is not None and hasattr(X, "iloc"):                         # pandas DataFrame
        cols = [X[c] for c in columns]
        return _rows_from_columns([str(c) for c in columns], [c.tolist() for c in cols], max_text,
                                  [c.dtype.kind in "biuf" for c in cols])
    if hasattr(X, "tocsr") and hasattr(X, "shape"):                        # scipy sparse
        if X.shape[1] <= _SPARSE_DENSE_MAX_COLUMNS:
            X = X.toarray()
        else:
            return [{sc.ML_FEATURE_PREFIX + "input" + sc.FEATURE_SUMMARY_SIZE: int(r.nnz)} for r in X.tocsr()]
    ndim = getattr(X, "ndim", None)
    if ndim is not None and hasattr(X, "tolist"):                          # numpy array
        if ndim == 2:
            width = X.shape[1]
            names = list(names) if names is not None and len(names) == width else default_names(width)
            keys = _keys(names)
            if X.dtype.kind in "biuf":
                return [dict(zip(keys, row)) for row in X.tolist()]
            return _generic_rows(X.tolist(), names, max_text)
        if ndim == 1:
            name = names[0] if names is not None and len(names) == 1 else "x0"
            return _generic_rows([[v] for v in X.tolist()], [name], max_text)
        key = sc.ML_FEATURE_PREFIX + (names[0] if names is not None and len(names) == 1 else "input")
        rows = []
        for item in X:                                                      # images, tensors: summaries
            attrs: dict = {}
            _summarize_array(attrs, key, item)
            rows.append(attrs)
        return rows
    rows = list(X)
    if not rows:
        return []
    first = rows[0]
    if isinstance(first, dict):
        out = []
        for r in rows:
            attrs = {}
            for k, v in r.items():
                put_feature(attrs, sc.ML_FEATURE_PREFIX + str(k), v, max_text)
            out.append(attrs)
        return out
    if isinstance(first, (list, tuple)) or (hasattr(first, "__len__") and not isinstance(first, (str, bytes))):
        width = len(first)
        names = list(names) if names is not None and len(names) == width else default_names(width)
        return _generic_rows(rows, names, max_text)
    name = names[0] if names is not None and len(names) == 1 else "x0"
    return _generic_rows([[v] for v in rows], [name], max_text)


def _generic_rows(rows: Sequence[Sequence[Any]], names: Sequence[str], max_text: int) -> List[dict]:
    keys = _keys(names)
    out = []
    for r in rows:
        attrs: dict = {}
        for k, v in zip(keys, r):
            put_feature(attrs, k, v, max_text)
        out.append(attrs)
    return out


def to_list(values: Any) -> list:
    """A plain Python list from an array, Series, list or scalar-per-row sequence."""
    tolist = getattr(values, "tolist", None)
    if tolist is not None:
        return tolist()
    return list(values)


def n_rows(X: Any) -> Optional[int]:
    """Number of rows of an input or output, or None if unknown."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        return None


def clean_score(v: Any) -> Optional[float]:
    """A finite float, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
