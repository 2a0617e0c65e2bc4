"""Bearer-token check for OTLP (gRPC metadata, HTTP header) and the label endpoint.

Example::

    auth = BearerAuth.from_env("OTEL_ML_TOKEN")   # None as the name: no token required
    auth.allows(request.headers.get("Authorization"))
"""

from __future__ import annotations

import hmac
import os
from typing import Optional


class BearerAuth:
    def __init__(self, token: Optional[str]):
        self._expected = f"Bearer {token}".encode() if token else None

    @classmethod
    def from_env(cls, env_name: Optional[str], environ: Optional[dict] = None) -> "BearerAuth":
        if not env_name:
            return cls(None)
        env = os.environ if environ is None else environ
        token = env.get(env_name)
        if not token:
            raise ValueError(f"receiver.bearer_token_env names {env_name}, which is not set")
        return cls(token)

    @property
    def required(self) -> bool:
        return self._expected is not None

    def allows(self, header: Optional[str]) -> bool:
        if self._expected is None:
            return True
        # Constant-time comparison: the token must not leak through timing.
        return header is not None and hmac.compare_digest(header.encode(), self._expected)
