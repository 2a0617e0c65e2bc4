"""The OTLP protobuf wire format, written directly: log records and logs export requests as bytes.

otel-ml builds its ``ml.*`` events here, without a Python object per attribute: an attribute is
a ``KeyValue`` whose key part is computed once per key (:class:`Attributes` caches it) and whose
value is packed straight into bytes. A stored record is one ``LogRecord`` framed as a
``ScopeLogs.log_records`` field, so a request is a header followed by stored records
concatenated (:func:`logs_request`): nothing is decoded or encoded again to ship it.

Field numbers are those of ``opentelemetry/proto/logs/v1/logs.proto``,
``common/v1/common.proto``, ``resource/v1/resource.proto`` and
``collector/logs/v1/logs_service.proto`` (OTLP 1.5+; ``LogRecord.event_name`` is field 12).
Values are typed as the OpenTelemetry SDK's own OTLP encoder types them: ``bool``, ``int``
(int64; a larger one is sent as a double), ``float``, ``str``, ``bytes``, sequences (arrays)
and mappings (key-value lists).

Example::

    from otel_ml.wire import Attributes, log_record, logs_request, pack_double, resource_bytes, scope_bytes

    attrs = Attributes()
    body = attrs.entry("ml.model.name", "churn") + attrs.double_prefix("ml.output.score") + pack_double(0.9)
    record = log_record(body, time_ns=1, event_name=b"ml.prediction")
    request = logs_request(resource_bytes({"service.name": "api"}), scope_bytes("otel_ml", "0.1"), [record])
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

pack_double = struct.Struct("<d").pack
pack_fixed64 = struct.Struct("<Q").pack
pack_fixed32 = struct.Struct("<I").pack

_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _varint_slow(n: int) -> bytes:
    n &= _MASK64                      # int64 as protobuf writes it: two's complement, 10 bytes if negative
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: The varints of 0 .. 4095, ready made (the lengths of nearly every field and record).
VARINTS = tuple(_varint_slow(i) for i in range(4096))


def varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    return VARINTS[n] if 0 <= n < 4096 else _varint_slow(n)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the payload's length, the payload."""
    return tag + varint(len(payload)) + payload


# Tags: (field number << 3) | wire type. 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
TAG_LOG_RECORD = b"\x12"               # ScopeLogs.log_records = 2
_TAG_TIME = b"\x09"                    # LogRecord.time_unix_nano = 1 (fixed64)
_TAG_OBSERVED = b"\x59"                # LogRecord.observed_time_unix_nano = 11 (fixed64)
_TAG_ATTRIBUTE = b"\x32"               # LogRecord.attributes = 6
_TAG_FLAGS = b"\x45"                   # LogRecord.flags = 8 (fixed32)
_TAG_TRACE_ID = b"\x4a\x10"            # LogRecord.trace_id = 9, 16 bytes
_TAG_SPAN_ID = b"\x52\x08"             # LogRecord.span_id = 10, 8 bytes
_TAG_EVENT_NAME = b"\x62"              # LogRecord.event_name = 12
_EMPTY_BODY = b"\x2a\x00"              # LogRecord.body = 5, an empty AnyValue (as the SDK's encoder sends)
_TAG_KEY = b"\x0a"                     # KeyValue.key = 1
_TAG_VALUE = b"\x12"                   # KeyValue.value = 2
_AV_STRING = b"\x0a"                   # AnyValue.string_value = 1
_AV_TRUE, _AV_FALSE = b"\x10\x01", b"\x10\x00"   # AnyValue.bool_value = 2
_AV_INT = b"\x18"                      # AnyValue.int_value = 3
_AV_DOUBLE = b"\x21"                   # AnyValue.double_value = 4 (fixed64)
_AV_ARRAY = b"\x2a"                    # AnyValue.array_value = 5
_AV_KVLIST = b"\x32"                   # AnyValue.kvlist_value = 6
_AV_BYTES = b"\x3a"                    # AnyValue.bytes_value = 7
_TAG_LIST_VALUE = b"\x0a"              # ArrayValue.values = 1, KeyValueList.values = 1


def any_value(value: Any) -> bytes:
    """The ``AnyValue`` message of ``value``; TypeError for a type OTLP cannot carry."""
    if isinstance(value, bool):
        return _AV_TRUE if value else _AV_FALSE
    if isinstance(value, str):
        return length_delimited(_AV_STRING, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return _AV_INT + varint(int(value))
        return _AV_DOUBLE + pack_double(float(value))
    if isinstance(value, float):
        return _AV_DOUBLE + pack_double(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return length_delimited(_AV_BYTES, bytes(value))
    if isinstance(value, Mapping):
        return length_delimited(_AV_KVLIST, b"".join(
            length_delimited(_TAG_LIST_VALUE, key_value(str(k), v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return length_delimited(_AV_ARRAY, b"".join(
            length_delimited(_TAG_LIST_VALUE, any_value(v)) for v in value))
    raise TypeError(f"an OTLP attribute cannot hold a {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """The ``KeyValue`` message of one attribute."""
    return length_delimited(_TAG_KEY, key.encode("utf-8", "surrogatepass")) + length_delimited(_TAG_VALUE, any_value(value))


class Attributes:
    """Encodes ``LogRecord.attributes`` entries, each key's bytes computed once (bounded cache).

    ``entry(key, value)`` is one whole attribute field; for doubles, ``double_prefix(key) +
    pack_double(v)`` is the same bytes, which lets a row of doubles be packed in one
    ``struct`` call.
    """

    def __init__(self, max_keys: int = 8192) -> None:
        self._max_keys = max_keys
        self._keys: Dict[str, bytes] = {}
        self._double: Dict[str, bytes] = {}
        self._short: Dict[tuple, bytes] = {}     # (key, short string) -> entry: names, versions, labels recur

    def key(self, key: str) -> bytes:
        """``KeyValue.key`` as a field (tag, length, UTF-8)."""
        got = self._keys.get(key)
        if got is None:
            if len(self._keys) >= self._max_keys:
                self._keys.clear()          # user-supplied names are unbounded: never grow without limit
            got = self._keys[key] = length_delimited(_TAG_KEY, key.encode("utf-8", "surrogatepass"))
        return got

    def double_prefix(self, key: str) -> bytes:
        """Everything of a double attribute's entry but its 8 value bytes."""
        got = self._double.get(key)
        if got is None:
            if len(self._double) >= self._max_keys:
                self._double.clear()
            kp = self.key(key)
            kv_len = len(kp) + 11           # value field: tag, length 9, AnyValue tag, 8 bytes
            got = self._double[key] = _TAG_ATTRIBUTE + varint(kv_len) + kp + b"\x12\x09\x21"
        return got

    def string(self, key: str, value: bytes) -> bytes:
        """The entry of a string attribute given as UTF-8 bytes."""
        kp = self._keys.get(key) or self.key(key)
        n = len(value)
        kv_len = len(kp) + n + 4
        if kv_len < 128:                     # every length fits one varint byte
            return b"".join((_TAG_ATTRIBUTE, VARINTS[kv_len], kp, _TAG_VALUE, VARINTS[n + 2], _AV_STRING, VARINTS[n],
                             value))
        av_len = 1 + len(varint(n)) + n
        kv_len = len(kp) + 1 + len(varint(av_len)) + av_len
        return b"".join((_TAG_ATTRIBUTE, varint(kv_len), kp, _TAG_VALUE, varint(av_len), _AV_STRING, varint(n), value))

    def entry(self, key: str, value: Any) -> bytes:
        """One attribute entry; TypeError for a value OTLP cannot carry."""
        t = type(value)
        if t is float:
            return (self._double.get(key) or self.double_prefix(key)) + pack_double(value)
        if t is str:
            if len(value) > 64:
                return self.string(key, value.encode("utf-8", "surrogatepass"))
            got = self._short.get((key, value))
            if got is None:
                if len(self._short) >= self._max_keys:
                    self._short.clear()
                got = self._short[(key, value)] = self.string(key, value.encode("utf-8", "surrogatepass"))
            return got
        if t is bool:
            av = _AV_TRUE if value else _AV_FALSE
        elif t is int and _INT64_MIN <= value <= _INT64_MAX:
            av = _AV_INT + varint(value)
        else:
            av = any_value(value)
        kv = self.key(key) + _TAG_VALUE + varint(len(av)) + av
        return _TAG_ATTRIBUTE + varint(len(kv)) + kv

    def entries(self, attributes: Mapping[str, Any]) -> bytes:
        """All entries of a mapping; values OTLP cannot carry are left out (as the SDK does)."""
        out = []
        for k, v in attributes.items():
            try:
                out.append(self.entry(k, v))
            except TypeError:
                continue
        return b"".join(out)


def record_head(time_ns: int, observed_ns: int) -> bytes:
    """The two timestamps of a LogRecord (``time_unix_nano``, ``observed_time_unix_nano``)."""
    return _TAG_TIME + pack_fixed64(time_ns & _MASK64) + _TAG_OBSERVED + pack_fixed64(observed_ns & _MASK64)


def trace_fields(trace_id: int = 0, span_id: int = 0, trace_flags: int = 0) -> bytes:
    """The trace flags, trace id and span id fields of a LogRecord; absent ones are left out
    (as the SDK does)."""
    out = _TAG_FLAGS + pack_fixed32(trace_flags & 0xFF) if trace_flags else b""
    if trace_id:
        out += _TAG_TRACE_ID + trace_id.to_bytes(16, "big")
    if span_id:
        out += _TAG_SPAN_ID + span_id.to_bytes(8, "big")
    return out


def record_tail(event_name: bytes, trace_id: int = 0, span_id: int = 0, trace_flags: int = 0) -> bytes:
    """Trace context, (empty) body and event name of a LogRecord."""
    return trace_fields(trace_id, span_id, trace_flags) + _EMPTY_BODY + length_delimited(_TAG_EVENT_NAME, event_name)


def frame(body: bytes) -> bytes:
    """A LogRecord's fields as a stored record: a ``ScopeLogs.log_records`` field."""
    return TAG_LOG_RECORD + varint(len(body)) + body


def log_record(attributes: bytes, *, time_ns: int, observed_ns: Optional[int] = None, event_name: bytes,
               trace_id: int = 0, span_id: int = 0, trace_flags: int = 0) -> bytes:
    """One framed LogRecord from its encoded attribute entries."""
    head = record_head(time_ns, time_ns if observed_ns is None else observed_ns)
    return frame(head + attributes + record_tail(event_name, trace_id, span_id, trace_flags))


def resource_bytes(attributes: Mapping[str, Any]) -> bytes:
    """The ``Resource`` message of a resource's attributes."""
    out = []
    for k, v in attributes.items():
        try:
            out.append(length_delimited(b"\x0a", key_value(str(k), v)))
        except TypeError:
            continue
    return b"".join(out)


def scope_bytes(name: str, version: Optional[str] = None) -> bytes:
    """The ``InstrumentationScope`` message."""
    out = length_delimited(b"\x0a", name.encode())
    if version:
        out += length_delimited(b"\x12", version.encode())
    return out


def logs_request(resource: bytes, scope: bytes, records: Sequence[bytes], schema_url: str = "") -> bytes:
    """An ``ExportLogsServiceRequest``: one resource, one scope, ``records`` (framed LogRecords,
    or runs of them) concatenated as they are."""
    body_len = sum(map(len, records))
    scope_field = length_delimited(b"\x0a", scope)                      # ScopeLogs.scope = 1
    scope_logs_len = len(scope_field) + body_len
    resource_field = length_delimited(b"\x0a", resource)                # ResourceLogs.resource = 1
    schema = length_delimited(b"\x1a", schema_url.encode()) if schema_url else b""
    resource_logs_len = len(resource_field) + 1 + len(varint(scope_logs_len)) + scope_logs_len + len(schema)
    parts = [b"\x0a", varint(resource_logs_len), resource_field,         # request.resource_logs = 1
             b"\x12", varint(scope_logs_len), scope_field]               # ResourceLogs.scope_logs = 2
    parts.extend(records)
    parts.append(schema)
    return b"".join(parts)


def record_ends(run: bytes) -> List[int]:
    """The end offset of each framed LogRecord in a run of stored bytes (walks the length prefixes)."""
    ends = []
    i, end = 0, len(run)
    while i < end:
        if run[i] != 0x12:
            raise ValueError(f"not a framed LogRecord at byte {i}")
        i += 1
        length = shift = 0
        while True:
            b = run[i]
            i += 1
            length |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        i += length
        ends.append(i)
    if i != end:
        raise ValueError("truncated LogRecord")
    return ends


def record_count(runs: Iterable[bytes]) -> int:
    """How many framed LogRecords runs of stored bytes hold."""
    return sum(len(record_ends(run)) for run in runs)
