"""A fit that runs on its own thread, so the compute cycle does not wait for it.

The label-free estimators' fits (multi-class CBPE's calibration test, DLE's two LightGBM models)
take seconds to a minute on a 100 000-row reference: far past the first cycle's budget. They run
here, started by :func:`~otel_ml_processor.compute.reference.prepare_reference`; the engine reads
:meth:`Deferred.ready` (None until done: the estimates appear from the first cycle after the
fit), and a caller that must have them (the offline report, tests) calls :meth:`Deferred.result`.
A fit that raises is logged once and gives None (no estimate), never a failed cycle.

Example::

    fit = Deferred(lambda: DLE.fit(features, prediction, label), "DLE of churn")
    fit.ready()          # None while fitting
    fit.result()         # waits: the DLE, or None if the fit failed
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, Optional, TypeVar

__all__ = ["Deferred"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Deferred(Generic[T]):
    """The value of ``fn()``, computed on a daemon thread named after ``what``."""

    def __init__(self, fn: Callable[[], Optional[T]], what: str):
        self._value: Optional[T] = None
        self._done = threading.Event()
        self.what = what

        def run() -> None:
            try:
                self._value = fn()
            except Exception:  # any failure of a third-party fit: no estimate, the cycle goes on
                log.exception("%s: the fit failed; no estimate", what)
            finally:
                self._done.set()

        threading.Thread(target=run, name=f"otel-ml-fit {what}", daemon=True).start()

    def done(self) -> bool:
        """True once the fit has ended (its value, or None if it failed)."""
        return self._done.is_set()

    def ready(self) -> Optional[T]:
        """The value if the fit is done, else None (never waits)."""
        return self._value if self._done.is_set() else None

    def result(self, timeout: Optional[float] = None) -> Optional[T]:
        """The value, waiting up to ``timeout`` seconds (None: as long as it takes)."""
        self._done.wait(timeout)
        return self._value
