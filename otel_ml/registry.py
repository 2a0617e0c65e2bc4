"""Name and version given in code to a model object (weakly held: no leak, no reset needed).

A leaf: it imports nothing of otel-ml. ``otel_ml.set_model`` (in ``otel_ml.api``) fills it
and audits the change; the recorder reads it.

Example::

    from otel_ml.registry import register, registered

    register(model, "churn", "3")
    assert registered(model) == ("churn", "3")
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Tuple

_names: "weakref.WeakKeyDictionary[Any, Tuple[str, str]]" = weakref.WeakKeyDictionary()
_by_id: dict = {}   # objects that cannot be weakly referenced (kept for the process's life)


def register(model: Any, name: str, version: str) -> None:
    """Remember ``name`` / ``version`` for ``model``."""
    info = (str(name), str(version))
    try:
        _names[model] = info
    except TypeError:
        _by_id[id(model)] = (model, info)


def registered(model: Any) -> Optional[Tuple[str, str]]:
    """The name and version set for ``model``, or None."""
    try:
        got = _names.get(model)
    except TypeError:
        got = None
    if got is None and _by_id:
        entry = _by_id.get(id(model))
        got = entry[1] if entry is not None and entry[0] is model else None
    return got
