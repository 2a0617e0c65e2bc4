"""Anonymization: applied to every record before anything is stored or logged.

Configured rules (``anonymization.rules``) name a full attribute key (``enduser.id``,
``ml.feature.zip``, ``ml.segment.age``) and an action:

- ``drop``: the attribute is removed.
- ``hash``: ``HMAC-SHA256(key, value)`` in hex, the key from the environment variable named by
  ``anonymization.hash_key_env``; equal values give equal hashes (joins and group counts
  still work), and a dictionary attack needs the key. Without the variable a random key is
  drawn per process (hashes then differ across restarts) and a warning is logged.
- ``mask``: every character but the last ``keep_chars`` (default 0) becomes ``*``.
- ``generalize``: a string keeps its first ``keep_chars`` characters (default 3) and ``*``; a
  number becomes the lower edge of its bucket of width ``bucket`` (default 10).

Built-in rules that always apply on top: string values of features and segments that look like
an e-mail address or a phone number are replaced by ``[email]`` / ``[phone]``; client address
attributes (``client.address``, ``net.peer.ip``, ``source.address``, ...) are hashed.

Example::

    anonymizer = Anonymizer(config.anonymization)
    anonymizer.prediction(record)          # in place
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import secrets
from typing import Optional

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import AuditRecord, PredictionRecord
from otel_ml_processor.config import AnonymizationConfig, AnonymizationRule

log = logging.getLogger(__name__)

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+?\(?\d[\d\s().-]{5,18}\d")
#: Distinct strings whose detector result is remembered (categorical values repeat).
DETECT_CACHE_SIZE = 100_000
#: Longer strings are not remembered (free text rarely repeats, and the cache must stay small).
DETECT_CACHE_MAX_LENGTH = 256
CLIENT_ADDRESS_ATTRIBUTES = (
    sc.CLIENT_ADDRESS, "net.peer.ip", "net.sock.peer.addr", "source.address", "http.client_ip",
)


class Anonymizer:
    def __init__(self, config: AnonymizationConfig, environ: Optional[dict] = None):
        env = os.environ if environ is None else environ
        key = env.get(config.hash_key_env)
        if not key:
            log.warning("%s is not set: hashing with a random per-process key", config.hash_key_env)
            key = secrets.token_hex(32)
        self._key = key.encode()
        self._rules: dict[str, AnonymizationRule] = {r.attribute: r for r in config.rules}
        self._detected: dict = {}
        for attr in CLIENT_ADDRESS_ATTRIBUTES:
            self._rules.setdefault(attr, AnonymizationRule(attr, "hash"))
        self._ruled_prefixes = {prefix for prefix in (sc.ML_FEATURE_PREFIX, sc.ML_SEGMENT_PREFIX)
                                if any(k.startswith(prefix) for k in self._rules)}

    def hash(self, value: object) -> str:
        return hmac.new(self._key, str(value).encode(), hashlib.sha256).hexdigest()

    def _apply(self, rule: AnonymizationRule, value: object) -> object:
        if value is None:
            return None
        if rule.action == "hash":
            return self.hash(value)
        if rule.action == "mask":
            s = str(value)
            keep = rule.keep_chars or 0
            return "*" * max(len(s) - keep, 0) + (s[-keep:] if keep else "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            width = rule.bucket or 10.0
            return math.floor(value / width) * width if math.isfinite(value) else None
        keep = 3 if rule.keep_chars is None else rule.keep_chars
        return str(value)[:keep] + "*"

    def _detect(self, value: object) -> object:
        if type(value) is not str:
            return value
        # Categorical values repeat: the regexes run once per distinct string (bounded cache).
        cached = self._detected.get(value)
        if cached is not None:
            return cached
        result = self._detect_uncached(value)
        if len(self._detected) < DETECT_CACHE_SIZE and len(value) <= DETECT_CACHE_MAX_LENGTH:
            self._detected[value] = result
        return result

    @staticmethod
    def _detect_uncached(value: object) -> object:
        if isinstance(value, str):
            if EMAIL.search(value):
                return "[email]"
            for m in PHONE.finditer(value):
                if sum(c.isdigit() for c in m.group()) >= 7:
                    return "[phone]"
        return value

    def _section(self, values: dict, prefix: str) -> dict:
        if prefix not in self._ruled_prefixes:
            # No rule names a key of this section (the common case): only the detectors run,
            # in place, on string values.
            detect = self._detect
            for name, v in values.items():
                if type(v) is str:
                    values[name] = detect(v)
            return values
        out = {}
        rules = self._rules
        for name, v in values.items():
            rule = rules.get(prefix + name) if rules else None
            if rule is not None:
                if rule.action == "drop":
                    continue
                v = self._apply(rule, v)
            # A hash is hex: its digit runs must not be taken for a phone number (that would
            # replace every hashed id by "[phone]" and break the joins hashing keeps).
            out[name] = v if rule is not None and rule.action == "hash" else self._detect(v)
        return out

    def prediction(self, record: PredictionRecord) -> PredictionRecord:
        """Anonymize ``record`` in place and return it."""
        record.features = self._section(record.features, sc.ML_FEATURE_PREFIX)
        record.segments = self._section(record.segments, sc.ML_SEGMENT_PREFIX)
        extra = {}
        for key, v in record.extra.items():
            rule = self._rules.get(key)
            if rule is not None:
                if rule.action == "drop":
                    continue
                v = self._apply(rule, v)
            if isinstance(v, (list, dict, bytes)):
                continue  # not kept: structured values are not stored
            extra[key] = v if rule is not None and rule.action == "hash" else self._detect(v)
        record.extra = extra
        return record

    def audit(self, record: AuditRecord) -> AuditRecord:
        rule = self._rules.get(sc.ML_AUDIT_ACTOR)
        if rule is not None and rule.action != "drop":
            record.actor = str(self._apply(rule, record.actor))
        elif rule is not None:
            record.actor = ""
        record.detail = str(self._detect(record.detail))
        return record
