"""Bound on the bytes of requests being processed at once (``receiver.max_inflight_bytes``).

Past it, receivers answer with OTLP's retryable "busy" code (HTTP 503 + Retry-After, gRPC
UNAVAILABLE) instead of queueing without bound.

Example::

    gate = InflightGate(256 << 20)
    if not gate.acquire(len(body)):
        return busy()
    try: ...
    finally: gate.release(len(body))
"""

from __future__ import annotations

import threading

#: Seconds a client is asked to wait after a "busy" answer.
RETRY_AFTER_SECONDS = 1


class InflightGate:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.inflight = 0
        self._lock = threading.Lock()

    def acquire(self, n: int) -> bool:
        with self._lock:
            # One request alone is always let through (it passed max_request_bytes).
            if self.inflight and self.inflight + n > self.max_bytes:
                return False
            self.inflight += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.inflight -= n
