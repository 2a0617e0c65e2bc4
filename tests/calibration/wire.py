"""A thin OTLP/logs encoder for the calibration test: many predictions and labels, written straight
into the protobuf wire format (ExportLogsServiceRequest), about 3x cheaper than building the
messages through the protobuf API, so that the test's own CPU stays small beside the processor's.

Only what the test sends is encoded: LogRecord ``time_unix_nano`` (1), ``attributes`` (6) and
``event_name`` (12); AnyValue ``string_value`` (1), ``bool_value`` (2), ``int_value`` (3) and
``double_value`` (4). ``tests/calibration/test_alerts_e2e.py`` checks the bytes against the
official protobuf classes.

Example::

    body = logs_request([prediction_record(...), label_record("m", "m-1", "1", t)])
    grpc_export(endpoint, body)          # tests.support
"""

from __future__ import annotations

import struct
from functools import lru_cache

from otel_ml import semconv as sc

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


@lru_cache(maxsize=4096)
def _key(key: str) -> bytes:
    return _field(b"\x0a", key.encode())


def _text_attribute(key: str, value: str) -> bytes:
    return _field(b"\x32", _key(key) + _field(b"\x12", _field(b"\x0a", value.encode())))


#: the same, kept for values that repeat (names, categories, labels); ids go uncached
_string_attribute = lru_cache(maxsize=16384)(_text_attribute)


def attribute(key: str, value: object) -> bytes:
    """One ``LogRecord.attributes`` entry (a KeyValue) for a str, bool, int or float value."""
    if isinstance(value, str):
        return _string_attribute(key, value)
    if isinstance(value, bool):
        any_value = b"\x10" + (b"\x01" if value else b"\x00")
    elif isinstance(value, int):
        any_value = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)   # int64, two's complement
    else:
        any_value = b"\x21" + _DOUBLE(value)
    return _field(b"\x32", _key(key) + _field(b"\x12", any_value))


_PREDICTION = _field(b"\x62", sc.EVENT_PREDICTION.encode())
_LABEL = _field(b"\x62", sc.EVENT_LABEL.encode())


def prediction_record(model: str, pid: str, time_ns: int, features: dict, label: str | None, score: float | None,
                      segments: dict, probabilities: dict | None = None, value: float | None = None) -> bytes:
    """One ``ml.prediction`` LogRecord (version "1"), encoded: a classifier's ``label`` and
    ``score`` (and, multi-class, its ``probabilities`` by class), or a regression's ``value``."""
    parts = [b"\x09" + _FIXED64(time_ns), _string_attribute(sc.ML_MODEL_NAME, model),
             _string_attribute(sc.ML_MODEL_VERSION, "1"), _text_attribute(sc.ML_PREDICTION_ID, pid)]
    if value is not None:
        parts += [_string_attribute(sc.ML_MODEL_TASK, sc.TASK_REGRESSION), attribute(sc.ML_OUTPUT_VALUE, float(value))]
    else:
        parts += [_string_attribute(sc.ML_OUTPUT_LABEL, label), attribute(sc.ML_OUTPUT_SCORE, score)]
    parts += [attribute(sc.probability_key(c), float(p)) for c, p in (probabilities or {}).items()]
    # a missing value (None) is an absent attribute, as an SDK sends it
    parts += [attribute(sc.feature_key(k), v) for k, v in features.items() if v is not None]
    parts += [_string_attribute(sc.segment_key(k), v) for k, v in segments.items()]
    parts.append(_PREDICTION)
    return _field(b"\x12", b"".join(parts))


def label_record(model: str, pid: str, value: str | float, time_ns: int) -> bytes:
    """One ``ml.label`` LogRecord, encoded (a class as text, a regression's truth as a double)."""
    encoded = _string_attribute(sc.ML_LABEL_VALUE, value) if isinstance(value, str) else attribute(sc.ML_LABEL_VALUE, value)
    return _field(b"\x12", b"".join((b"\x09" + _FIXED64(time_ns), _string_attribute(sc.ML_MODEL_NAME, model),
                                     _text_attribute(sc.ML_PREDICTION_ID, pid), encoded, _LABEL)))


def logs_request(records: list) -> bytes:
    """An ExportLogsServiceRequest: one ResourceLogs, one ScopeLogs holding ``records``."""
    return _field(b"\x0a", _field(b"\x12", b"".join(records)))
