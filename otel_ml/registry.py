"""Name and version given to a model object (weakly held: no leak, no reset needed).

Two kinds: given in code (``register``, filled by ``otel_ml.set_model`` in ``otel_ml.api``,
which audits the change), and given by the model server that loaded it (``serve``, filled by
the server integrations such as ``otel_ml.instrumentation.bentoml``), which
``OTEL_ML_MODEL_NAME``/``_VERSION`` override. A leaf: it imports nothing of otel-ml; the
recorder reads it.

Example::

    from otel_ml.registry import register, registered, serve, served

    register(model, "churn", "3")
    assert registered(model) == ("churn", "3")
    serve(other, "iris", "v1")                 # e.g. a BentoML model store tag
    assert served(other) == ("iris", "v1")
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Tuple

class _Names:
    def __init__(self) -> None:
        self.weak: "weakref.WeakKeyDictionary[Any, Tuple[str, Optional[str]]]" = weakref.WeakKeyDictionary()
        self.by_id: dict = {}   # objects that cannot be weakly referenced (kept for the process's life)

    def put(self, model: Any, info: Tuple[str, Optional[str]]) -> None:
        try:
            self.weak[model] = info
        except TypeError:
            self.by_id[id(model)] = (model, info)

    def get(self, model: Any) -> Optional[Tuple[str, Optional[str]]]:
        try:
            got = self.weak.get(model)
        except TypeError:
            got = None
        if got is None and self.by_id:
            entry = self.by_id.get(id(model))
            got = entry[1] if entry is not None and entry[0] is model else None
        return got


_code = _Names()
_server = _Names()


def register(model: Any, name: str, version: str) -> None:
    """Remember ``name`` / ``version`` for ``model``."""
    _code.put(model, (str(name), str(version)))


def registered(model: Any) -> Optional[Tuple[str, str]]:
    """The name and version set for ``model``, or None."""
    return _code.get(model)  # type: ignore[return-value]  # register() always stores a version


def serve(model: Any, name: str, version: Optional[str]) -> None:
    """Remember the name and version (None: the server gives none) a model server gave ``model``."""
    _server.put(model, (str(name), None if version is None else str(version)))


def served(model: Any) -> Optional[Tuple[str, Optional[str]]]:
    """The name and version a model server gave ``model``, or None."""
    return _server.get(model)
