"""Name and version given in code to a model object (weakly held: no leak, no reset needed).

Example::

    import otel_ml

    model = joblib.load("churn-3.joblib")
    otel_ml.set_model(model, "churn", "3")     # its predictions now carry churn / 3
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Tuple

_names: "weakref.WeakKeyDictionary[Any, Tuple[str, str]]" = weakref.WeakKeyDictionary()
_by_id: dict = {}   # objects that cannot be weakly referenced (kept for the process's life)


def set_model(model: Any, name: str, version: str) -> None:
    """Give ``model``'s predictions the name and version ``name`` / ``version``.

    Also writes an ``ml.audit`` event (``model_load``, or ``version_change`` when ``name`` was
    seen with another version) when otel-ml is active.
    """
    info = (str(name), str(version))
    from otel_ml import pipeline  # noqa: PLC0415 - avoid an import cycle

    active = pipeline.active()
    if active is not None:
        # Names are resolved on the background thread: calls made before this one keep the old name.
        active.recorder.flush()
    try:
        _names[model] = info
    except TypeError:
        _by_id[id(model)] = (model, info)
    if active is not None:
        active.recorder.note_model(info[0], info[1], f"registered {type(model).__module__}.{type(model).__qualname__}")


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
