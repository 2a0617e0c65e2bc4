"""One type per feature: how any value is read as a feature's type (DESIGN.md "Statistics").

A feature is a ``number``, a ``boolean`` or ``text``, however its values arrive (a reference
file's CSV cells or Parquet values, live OTLP attributes). Every value is read into the type's
one canonical form:

- ``number``: a float. A bool is 1.0 / 0.0; a string is read as a number (``"19"``, ``" 19.0"``,
  ``"1e3"``), ``true`` / ``false`` (any case) as 1.0 / 0.0; ``19`` and ``19.0`` are the same number.
- ``boolean``: the text ``"true"`` / ``"false"``. A bool, ``True`` / ``true`` / ``TRUE`` (any case,
  surrounding spaces ignored) and the numbers 1 / 0 (also as text) are read.
- ``text``: the string exactly as sent (spaces, symbols, non-ASCII kept); a number is written as
  :func:`number_text` (``19`` and ``19.0`` are both ``"19"``), a bool as ``"true"`` / ``"false"``.

A value that cannot be read as its feature's type (``"abc"`` for a number, ``"maybe"`` or ``2``
for a boolean) is :data:`UNREADABLE`: a data-quality issue (``type_mismatch``), left out of that
feature's drift and OOD like a missing value: not a new category and not OOD.

The type of a feature comes from its reference (:func:`column_type` of the reference column,
:func:`file_column` for a file's cells): numbers when every present value reads as a number,
boolean when every present value reads as a boolean and at least one is a word (a column of 0
and 1 stays numeric: a live ``true`` still reads as 1.0), text otherwise. The ingest, the
reference loader and the metrics engine all use these functions.

Example::

    from otel_ml_processor.clean.values import BOOLEAN, NUMBER, TEXT, file_column, read_value

    read_value(BOOLEAN, "True"), read_value(NUMBER, True), read_value(TEXT, 19.0)   # "true", 1.0, "19"
    read_value(NUMBER, "abc") is UNREADABLE                                          # True
    file_column(["True", "false", ""], from_text=True).tolist()                      # ["true", "false", None]
"""

from __future__ import annotations

import math
from typing import Any, Iterable, TypeGuard

import numpy as np

__all__ = ["NUMBER", "BOOLEAN", "TEXT", "TRUE", "FALSE", "UNREADABLE", "is_number", "number_text", "read_value",
           "column_type", "file_column", "read_column"]

NUMBER, BOOLEAN, TEXT = "number", "boolean", "text"
TRUE, FALSE = "true", "false"
_WORDS = {TRUE: TRUE, FALSE: FALSE}


class _Unreadable:
    def __repr__(self) -> str:
        return "UNREADABLE"


#: What :func:`read_value` returns for a value that its feature's type cannot hold.
UNREADABLE: Any = _Unreadable()


def number_text(v: float) -> str:
    """How a number is written as text: ``"19"`` for an integral value, else ``repr(float)``."""
    f = float(v)
    if math.isfinite(f) and f.is_integer():
        return str(int(f))
    return repr(f)


def is_number(v: object) -> TypeGuard[float]:
    # int, float or a numpy number (not a bool): what float() and number_text() take
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _word(v: str) -> str | None:
    return _WORDS.get(v.strip().lower())


def _parse_number(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def read_value(kind: str, v: object) -> Any:
    """``v`` in ``kind``'s canonical form; None for a missing value (None, NaN); :data:`UNREADABLE`
    when ``kind`` cannot hold it."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if kind == NUMBER:
        if isinstance(v, (bool, np.bool_)):
            return 1.0 if v else 0.0
        if is_number(v):
            return float(v)
        if isinstance(v, str):
            word = _word(v)
            if word is not None:
                return 1.0 if word == TRUE else 0.0
            f = _parse_number(v)
            if f is None:
                return UNREADABLE
            return None if math.isnan(f) else f
        return UNREADABLE
    if kind == BOOLEAN:
        if isinstance(v, (bool, np.bool_)):
            return TRUE if v else FALSE
        if isinstance(v, str):
            word = _word(v)
            if word is not None:
                return word
            f = _parse_number(v)
        else:
            f = float(v) if is_number(v) else None
        if f == 1.0:
            return TRUE
        if f == 0.0:
            return FALSE
        return UNREADABLE
    # text
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return TRUE if v else FALSE
    if is_number(v):
        return number_text(v)
    return str(v)


def _present(values: Iterable) -> list:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def column_type(values: np.ndarray) -> str:
    """The type of a canonical reference column: float64 -> number; object -> boolean when every
    present value is ``"true"`` / ``"false"``, else text."""
    v = np.asarray(values)
    if v.dtype.kind in "fiub":
        return NUMBER if v.dtype.kind != "b" else BOOLEAN
    distinct = set(v.tolist())      # few distinct values: the per-value work is one hash
    present = {x for x in distinct if x is not None and not (isinstance(x, float) and math.isnan(x))}
    return BOOLEAN if present and present <= {TRUE, FALSE} else TEXT


def _infer(present: list, from_text: bool) -> str:
    if from_text:
        if all(_parse_number(c) is not None for c in present):
            return NUMBER
        if all(read_value(BOOLEAN, c) is not UNREADABLE for c in present) and any(_word(c) for c in present):
            return BOOLEAN
        return TEXT
    if all(is_number(c) for c in present):
        return NUMBER
    if all(isinstance(c, (bool, np.bool_)) or (isinstance(c, str) and _word(c)) for c in present):
        return BOOLEAN
    return TEXT


def file_column(cells: list, from_text: bool) -> np.ndarray:
    """A reference file's column in its type's canonical form: float64 (NaN missing) for
    numbers, else an object array of str (None missing).

    ``from_text``: CSV cells are text (an empty cell is missing; a column whose present cells all
    parse as numbers is numeric); Parquet values keep their own type (bool columns are boolean,
    string columns text unless every value is a true/false word).
    """
    def missing(c: object) -> bool:
        return c is None or (from_text and c == "") or (isinstance(c, float) and math.isnan(c))

    present = [c for c in cells if not missing(c)]
    kind = _infer(present, from_text) if present else NUMBER
    if kind == NUMBER:
        return np.array([math.nan if missing(c) else float(c) for c in cells], dtype=float)
    if kind == TEXT and from_text:
        return np.array([None if missing(c) else c for c in cells], dtype=object)
    return np.array([None if missing(c) else read_value(kind, c) for c in cells], dtype=object)


def read_column(kind: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A window column (float64, or object) read as ``kind``: (canonical column, mask of the
    unreadable values, which are missing in the canonical column).

    Each distinct value is read once (a column has few distinct values, or is float64 already).
    """
    v = np.asarray(values)
    n = v.size
    none = np.zeros(n, dtype=bool)
    if kind == NUMBER and v.dtype.kind == "f":
        return v, none
    if n == 0:
        return (np.zeros(0) if kind == NUMBER else np.zeros(0, dtype=object)), none
    if v.dtype.kind == "f":
        # numbers read as boolean or text: each distinct finite number once (NaN stays missing)
        finite = np.isfinite(v)
        uniq, inv = np.unique(v[finite], return_inverse=True)
        read = [read_value(kind, float(x)) for x in uniq.tolist()]
        out = np.full(n, None, dtype=object)
        bad = np.zeros(n, dtype=bool)
        mapped = np.empty(len(read), dtype=object)
        mapped[:] = [None if r is UNREADABLE else r for r in read]
        out[finite] = mapped[inv.reshape(-1)]
        bad[finite] = np.fromiter((r is UNREADABLE for r in read), dtype=bool, count=len(read))[inv.reshape(-1)]
        return out, bad
    items = v.tolist()
    distinct = list(dict.fromkeys(items))
    table = {x: i for i, x in enumerate(distinct)}
    codes = np.fromiter(map(table.__getitem__, items), dtype=np.intp, count=n)
    read = [read_value(kind, x) for x in distinct]
    bad = np.fromiter((r is UNREADABLE for r in read), dtype=bool, count=len(read))
    if kind == NUMBER:
        mapped = np.array([math.nan if r is None or r is UNREADABLE else r for r in read], dtype=float)
    else:
        mapped = np.empty(len(read), dtype=object)
        mapped[:] = [None if r is UNREADABLE else r for r in read]
    return mapped[codes], bad[codes]
