"""Model inputs as rows of feature values (runs on the background thread).

Inputs: a pandas DataFrame (its columns name the features), a 2-D numpy array or scipy sparse
matrix, a list of rows (lists, tuples or dicts), or a 1-D array/list (one feature per row).
Feature names come from the caller (``feature_names_in_``, ONNX inputs, ...), else the
DataFrame or dict keys, else ``x0, x1, ...`` (scikit-learn's own convention).

The result is a :class:`Features` table: its :class:`Columns` (attribute keys
``ml.feature.<name>``, and which columns are known to hold only floats, so the encoder packs
those without looking at each value) and one row of plain Python values per prediction. A value that is not a scalar is summarized
when it is encoded (:func:`feature_entries`), never shipped raw:
- a string longer than ``max_text`` becomes ``ml.feature.<name>.length`` (its length);
- bytes become ``ml.feature.<name>.length``;
- an array or list becomes ``.size``, and for numbers ``.mean``, ``.min`` and ``.max``;
- ``None`` is left out (a missing value).

Example::

    from otel_ml.convert import feature_table

    table = feature_table([[1.0, "a"], [2.0, "b"]], ["age", "plan"])
    assert table.columns.keys == ["ml.feature.age", "ml.feature.plan"] and table.rows[1] == [2.0, "b"]
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from otel_ml import semconv as sc

_SPARSE_DENSE_MAX_COLUMNS = 1000


class Columns:
    """Attribute keys of a table's columns, and which of them hold only floats.

    One object per shape, shared by every call with that shape (:func:`columns`), so that the
    encoder can keep what it derives from it (its packing layout) by identity.
    """

    __slots__ = ("names", "keys", "float_columns", "float_idx", "other_idx", "__weakref__")

    def __init__(self, names: Sequence[str], float_columns: Sequence[bool]) -> None:
        self.names = list(names)
        self.keys = [sc.feature_key(n) for n in self.names]
        self.float_columns = list(float_columns)
        self.float_idx = [j for j, f in enumerate(self.float_columns) if f]
        self.other_idx = [j for j, f in enumerate(self.float_columns) if not f]


_COLUMNS: Dict[tuple, Columns] = {}


def columns(names: Sequence[Any], float_columns: Sequence[bool]) -> Columns:
    """The shared :class:`Columns` of features ``names`` (bounded cache)."""
    key = (tuple(names), tuple(float_columns))
    got = _COLUMNS.get(key)
    if got is None:
        if len(_COLUMNS) >= 1024:
            _COLUMNS.clear()
        got = _COLUMNS[key] = Columns([str(n) for n in names], float_columns)
    return got


class Features:
    """The inputs of one call, one row per prediction.

    With ``columns``, each row is a sequence of values aligned with ``columns.keys``; without,
    each row is a mapping of attribute key to value (rows of differing keys: dicts, summaries
    of images).
    """

    __slots__ = ("columns", "rows")

    def __init__(self, columns: Optional[Columns], rows: Sequence[Any]) -> None:
        self.columns = columns
        self.rows = rows

    @property
    def keys(self) -> Optional[List[str]]:
        return self.columns.keys if self.columns is not None else None

    def __len__(self) -> int:
        return len(self.rows)

    def as_dicts(self) -> List[Dict[str, Any]]:
        """Rows as ``{attribute key: value}`` (values as given, not yet summarized)."""
        if self.columns is None:
            return [dict(r) for r in self.rows]
        return [dict(zip(self.columns.keys, r)) for r in self.rows]


EMPTY = Features(columns([], []), [])


def feature_entries(attrs: Any, key: str, value: Any, max_text: int) -> bytes:
    """The encoded attribute entries of one feature value (``attrs`` is a
    :class:`otel_ml.wire.Attributes`): the value itself, its summary, or nothing when missing."""
    t = type(value)
    if t is float or t is int or t is bool:
        return attrs.entry(key, value)
    if t is str:
        if len(value) <= max_text:
            return attrs.entry(key, value)
        return attrs.entry(sc.summary_key(key, sc.FEATURE_SUMMARY_LENGTH), len(value))
    if value is None:
        return b""
    if isinstance(value, bool):                  # subclasses (numpy.bool_ is not, numpy.float64 is a float)
        return attrs.entry(key, bool(value))
    if isinstance(value, int):
        return attrs.entry(key, int(value))
    if isinstance(value, float):
        return attrs.entry(key, float(value))
    if isinstance(value, str):
        return feature_entries(attrs, key, str(value), max_text)
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:   # numpy scalar
        return feature_entries(attrs, key, item(), max_text)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return attrs.entry(sc.summary_key(key, sc.FEATURE_SUMMARY_LENGTH), len(value))
    return attrs.entries(summarize(key, value))


def summarize(key: str, value: Any) -> Dict[str, Any]:
    """Summary attributes of an array-like value: ``.size`` and, for numbers, ``.mean/.min/.max``."""
    out: Dict[str, Any] = {}
    try:
        import numpy as np  # only when a non-scalar feature shows up

        arr = np.asarray(value)
        out[sc.summary_key(key, sc.FEATURE_SUMMARY_SIZE)] = int(arr.size)
        if arr.size and arr.dtype.kind in "biuf":
            flat = arr.astype(float, copy=False).ravel()
            finite = flat[np.isfinite(flat)]
            if finite.size:
                out[sc.summary_key(key, sc.FEATURE_SUMMARY_MEAN)] = float(finite.mean())
                out[sc.summary_key(key, sc.FEATURE_SUMMARY_MIN)] = float(finite.min())
                out[sc.summary_key(key, sc.FEATURE_SUMMARY_MAX)] = float(finite.max())
    except Exception:  # noqa: BLE001 - an object we cannot read: record only that it was there
        out[sc.summary_key(key, sc.FEATURE_SUMMARY_SIZE)] = 1
    return out


@functools.lru_cache(maxsize=64)
def default_names(n: int) -> Tuple[str, ...]:
    """scikit-learn's names of unnamed columns: ``x0, x1, ...``."""
    return tuple(f"x{i}" for i in range(n))


def _names(names: Optional[Sequence[str]], width: int) -> Sequence[Any]:
    return names if names is not None and len(names) == width else default_names(width)


def _one_name(names: Optional[Sequence[str]], default: str = "x0") -> str:
    return str(names[0]) if names is not None and len(names) == 1 else default


_FLOAT_DTYPES: Dict[Any, bool] = {}


def _float_dtype(dtype: Any) -> bool:
    """numpy's own float dtypes only: pandas' nullable Float64 holds pd.NA, not floats."""
    got = _FLOAT_DTYPES.get(dtype)
    if got is None:
        got = getattr(dtype, "kind", "") == "f" and type(dtype).__module__.startswith("numpy")
        if len(_FLOAT_DTYPES) < 256:
            _FLOAT_DTYPES[dtype] = got
    return got


def feature_table(X: Any, names: Optional[Sequence[str]] = None) -> Features:
    """The :class:`Features` of input ``X``."""
    cols = getattr(X, "columns", None)
    if cols is not None and hasattr(X, "iloc"):                            # pandas DataFrame
        series = [X[c] for c in cols]
        return Features(columns(list(cols), [_float_dtype(c.dtype) for c in series]),
                        list(zip(*[c.tolist() for c in series])))
    if hasattr(X, "tocsr") and hasattr(X, "shape"):                        # scipy sparse
        if X.shape[1] <= _SPARSE_DENSE_MAX_COLUMNS:
            X = X.toarray()
        else:
            return Features(columns([sc.summary_key("input", sc.FEATURE_SUMMARY_SIZE)], [False]), [[int(r.nnz)] for r in X.tocsr()])
    ndim = getattr(X, "ndim", None)
    if ndim is not None and hasattr(X, "tolist"):                          # numpy array
        if ndim == 2:
            width = X.shape[1]
            return Features(columns(_names(names, width), [_float_dtype(X.dtype)] * width), X.tolist())
        if ndim == 1:
            return Features(columns([_one_name(names)], [_float_dtype(X.dtype)]), [[v] for v in X.tolist()])
        key = sc.feature_key(_one_name(names, "input"))
        return Features(None, [summarize(key, item) for item in X])        # images, tensors: summaries
    rows = list(X)
    if not rows:
        return EMPTY
    first = rows[0]
    if isinstance(first, dict):
        return Features(None, [{sc.feature_key(str(k)): v for k, v in r.items()} for r in rows])
    if isinstance(first, (list, tuple)) or (hasattr(first, "__len__") and not isinstance(first, (str, bytes))):
        width = len(first)
        return Features(columns(_names(names, width), [False] * width), rows)
    return Features(columns([_one_name(names)], [False]), [[v] for v in rows])


def merge_columns(parts: Sequence[Features]) -> Features:
    """Side-by-side tables of the same rows (one per model input) as one table."""
    if len(parts) == 1:
        return parts[0]
    tables = [p.columns for p in parts if p.columns is not None]
    if len(tables) < len(parts):
        dict_rows = [p.as_dicts() for p in parts]
        return Features(None, [{k: v for d in row for k, v in d.items()} for row in zip(*dict_rows)])
    names = [n for c in tables for n in c.names]
    rows = [[v for r in row for v in r] for row in zip(*(p.rows for p in parts))]
    return Features(columns(names, [f for c in tables for f in c.float_columns]), rows)


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
