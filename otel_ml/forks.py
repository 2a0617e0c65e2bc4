"""After ``fork()``, a child process gets no threads and must not reuse its parent's connections.

Pre-fork servers (gunicorn) instrument in the parent; each child then needs its own recorder
thread, shipper thread, SQLite connections and gRPC channel. :func:`call_in_child` registers a
method to run in every child, holding its object weakly (no leak, nothing to unregister).

Example::

    from otel_ml.forks import call_in_child

    class Shipper:
        def __init__(self):
            call_in_child(self, "_after_fork")     # restart threads, forget connections
"""

from __future__ import annotations

import os
import weakref
from typing import Any


def call_in_child(obj: Any, method: str) -> None:
    """Call ``obj.<method>()`` in each forked child while ``obj`` is alive."""
    ref = weakref.ref(obj)

    def after_in_child() -> None:
        target = ref()
        if target is not None:
            getattr(target, method)()

    os.register_at_fork(after_in_child=after_in_child)
