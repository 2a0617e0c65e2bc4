"""``ml.prediction``, ``ml.label`` and ``ml.audit`` events as OTLP LogRecord bytes.

:meth:`EventEncoder.predictions` turns the rows of one predict call into framed LogRecords
(``otel_ml.wire``) with no Python object per attribute: the bytes of the model's name,
version and task, of each key and of each class label are computed once; the call's
timestamps and trace context once per call; and the doubles of a row (its float features,
class probabilities, score or value) are packed by one ``struct`` call whose layout is cached
per shape of call (feature columns, classes). :meth:`EventEncoder.event` encodes any other event from a mapping of attributes.

A record carries what the OpenTelemetry SDK would put in it: ``time_unix_nano`` (the call's
start, or the API call's time), ``observed_time_unix_nano`` (when it was encoded),
``event_name``, the attributes, an empty body (as the SDK's encoder writes one), and the trace
id, span id and flags of the span it belongs to.

Example::

    from otel_ml.events import EventEncoder

    enc = EventEncoder()
    rec = enc.event("ml.label", {"ml.model.name": "churn", "ml.prediction.id": "p1", "ml.label.value": "1"},
                    time_ns=time.time_ns())
"""

from __future__ import annotations

import hashlib
import operator
import struct
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from otel_ml import semconv as sc
from otel_ml import wire
from otel_ml.convert import feature_entries

_MAX_CACHED = 4096


class TraceIds:
    """Trace id, span id and flags a record carries (zeros: none)."""

    __slots__ = ("trace_id", "span_id", "flags")

    def __init__(self, trace_id: int = 0, span_id: int = 0, flags: int = 0) -> None:
        self.trace_id, self.span_id, self.flags = trace_id, span_id, flags

    @classmethod
    def of(cls, span_context: Any) -> "TraceIds":
        """The ids of an OpenTelemetry ``SpanContext`` (none when it is invalid)."""
        if span_context is None or not span_context.is_valid:
            return NO_TRACE
        return cls(span_context.trace_id, span_context.span_id, int(span_context.trace_flags))


NO_TRACE = TraceIds()


def audit_id(attributes: Mapping[str, Any], time_ns: int) -> str:
    """The ``ml.audit.id`` of an audit event: a hash of its attributes and time (128 bits, hex).

    It is written into the stored record, so a resent or twice-shipped event carries the same id
    and the processor keeps it once; two events differ in time or content."""
    h = hashlib.blake2b(str(time_ns).encode(), digest_size=16)
    for key in sorted(attributes):
        h.update(b"\0" + str(key).encode() + b"=" + str(attributes[key]).encode())
    return h.hexdigest()


def _bounded(cache: dict) -> dict:
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    return cache


class EventEncoder:
    """Encodes otel-ml's events; caches key bytes, model bytes and row layouts (bounded)."""

    def __init__(self) -> None:
        self.attrs = wire.Attributes()
        self._models: Dict[Tuple[str, str, str], bytes] = {}
        self._labels: Dict[str, bytes] = {}
        self._plans: Dict[tuple, "_Plan"] = {}
        self._names: Dict[str, bytes] = {}

    # -- any event ----------------------------------------------------------------------------
    def event(self, event_name: str, attributes: Mapping[str, Any], *, time_ns: int,
              trace: TraceIds = NO_TRACE, observed_ns: Optional[int] = None) -> bytes:
        """One framed LogRecord; attribute values OTLP cannot carry are left out."""
        return wire.frame(b"".join((
            wire.record_head(time_ns, time_ns if observed_ns is None else observed_ns),
            self.attrs.entries(attributes),
            self._tail(event_name, trace))))

    def _tail(self, event_name: str, trace: TraceIds) -> bytes:
        # The empty body and the event name: the same bytes for every event of that name.
        fixed = self._names.get(event_name)
        if fixed is None:
            fixed = _bounded(self._names)[event_name] = wire.record_tail(event_name.encode())
        if not trace.trace_id:
            return fixed
        return wire.trace_fields(trace.trace_id, trace.span_id, trace.flags) + fixed

    # -- prediction rows ----------------------------------------------------------------------
    def _model(self, name: str, version: str, task: str) -> bytes:
        key = (name, version, task)
        got = self._models.get(key)
        if got is None:
            got = _bounded(self._models)[key] = self.attrs.entries(
                {sc.ML_MODEL_NAME: name, sc.ML_MODEL_VERSION: version, sc.ML_MODEL_TASK: task})
        return got

    def _label(self, label: str) -> bytes:
        got = self._labels.get(label)
        if got is None:
            got = _bounded(self._labels)[label] = self.attrs.entry(sc.ML_OUTPUT_LABEL, label)
        return got

    def _plan(self, features: Any, classes: Optional[Sequence[str]], scores: bool, values: bool) -> "_Plan":
        """How rows of this shape are encoded, kept per shape (columns and classes by identity)."""
        cols = features.columns
        key = (id(cols), id(classes), scores, values)
        plan = self._plans.get(key)
        if plan is None or plan.columns is not cols or plan.classes is not classes:
            plan = _bounded(self._plans)[key] = _Plan(self.attrs, cols, classes, scores, values)
        return plan

    def _id(self, pid: str) -> bytes:
        return self.attrs.string(sc.ML_PREDICTION_ID, pid.encode("utf-8", "surrogatepass"))

    def predictions(
        self, result: Any, *, model_name: str, model_version: str, ids: Sequence[str], time_ns: int,
        trace: TraceIds = NO_TRACE, segments: Any = None, attributes: Optional[Mapping[str, Any]] = None,
        max_text: int = 256, rows: Optional[Sequence[int]] = None, observed_ns: Optional[int] = None,
    ) -> List[bytes]:
        """One framed ``ml.prediction`` LogRecord per row of ``result`` (an
        :class:`~otel_ml.instrumentation.adapters.Interpretation`) that has an id; ``rows``
        selects some of them (sampling). ``segments`` is one mapping for every row or one per
        row; ``attributes`` are added to every row."""
        A = self.attrs
        n = min(result.n, len(ids))
        indices = range(n) if rows is None else [i for i in rows if i < n]
        head = wire.record_head(time_ns, time.time_ns() if observed_ns is None else observed_ns) + self._model(
            model_name, model_version, result.task)
        seg_rows = None
        if segments is not None:
            if isinstance(segments, Mapping):
                head += A.entries({sc.segment_key(str(k)): v for k, v in segments.items()})
            elif isinstance(segments, (list, tuple)):
                seg_rows = segments
        if attributes:
            head += A.entries(attributes)
        tail = self._tail(sc.EVENT_PREDICTION, trace)

        labels, values, scores, probs = result.labels, result.values, result.scores, result.probabilities
        features = result.features
        plan = self._plan(features, result.classes if probs is not None else None, scores is not None,
                          values is not None)
        feat_rows = features.rows
        n_feat = len(feat_rows)
        pick, other_idx, keys = plan.pick, plan.other_idx, plan.keys
        pack, template = plan.pack, plan.template
        encode_id, label_entry = self._id, self._label

        out: List[bytes] = []
        append = out.append
        small = wire.VARINTS
        for i in indices:
            row = feat_rows[i] if i < n_feat else None
            if row is not None and pick is not None:
                vals = list(row) if pick is True else list(pick(row))
            else:
                vals = []
            if probs is not None:
                vals += probs[i]
            if scores is not None:
                vals.append(scores[i])
            if values is not None:
                vals.append(values[i])
            parts = [head, encode_id(ids[i])]
            args = template.copy()
            try:
                if row is None or keys is None:
                    raise struct.error("features are not packed")
                args[1::2] = vals
                parts.append(pack(*args))
            except (struct.error, ValueError):
                # A None (missing probability, non-finite score) or a non-float: one by one.
                parts.append(self._one_by_one(result, i, row, keys, max_text))
            else:
                for j in other_idx:
                    parts.append(feature_entries(A, keys[j], row[j], max_text))
            if labels is not None:
                parts.append(label_entry(labels[i]))
            if seg_rows is not None and i < len(seg_rows) and seg_rows[i]:
                parts.append(A.entries({sc.segment_key(str(k)): v for k, v in seg_rows[i].items()}))
            parts.append(tail)
            body = b"".join(parts)
            size = len(body)
            append(b"".join((b"\x12", small[size] if size < 4096 else wire.varint(size), body)))
        return out

    def _one_by_one(self, result: Any, i: int, row: Any, keys: Optional[List[str]], max_text: int) -> bytes:
        A = self.attrs
        parts = []
        if row is not None:
            items = row.items() if keys is None else zip(keys, row)
            for k, v in items:
                parts.append(feature_entries(A, k, v, max_text))
        if result.probabilities is not None:
            for c, p in zip(result.classes, result.probabilities[i]):
                if p is not None:
                    parts.append(A.entry(sc.probability_key(c), float(p)))
        if result.scores is not None and result.scores[i] is not None:
            parts.append(A.entry(sc.ML_OUTPUT_SCORE, float(result.scores[i])))
        if result.values is not None and result.values[i] is not None:
            parts.append(A.entry(sc.ML_OUTPUT_VALUE, float(result.values[i])))
        return b"".join(parts)


class _Plan:
    """The encoding of rows of one shape: which feature columns are packed with the outputs'
    doubles (float features, class probabilities, score, value) in one ``struct`` call, and the
    argument list of that call with the key prefixes in place (values go at the odd positions)."""

    __slots__ = ("columns", "classes", "keys", "pick", "other_idx", "pack", "template")

    def __init__(self, attrs: wire.Attributes, columns: Any, classes: Optional[Sequence[str]], scores: bool,
                 values: bool) -> None:
        self.columns, self.classes = columns, classes
        if columns is None:                       # rows of dicts: every feature one by one
            self.keys, float_idx, self.other_idx = None, [], []
        else:
            self.keys, float_idx, self.other_idx = columns.keys, columns.float_idx, columns.other_idx
        if float_idx and not self.other_idx:
            self.pick: Any = True                 # the whole row
        elif not float_idx:
            self.pick = None
        elif len(float_idx) == 1:
            j0 = float_idx[0]
            self.pick = lambda r: (r[j0],)
        else:
            self.pick = operator.itemgetter(*float_idx)
        packed = [columns.keys[j] for j in float_idx]   # none when columns is None
        if classes is not None:
            packed += [sc.probability_key(c) for c in classes]
        if scores:
            packed.append(sc.ML_OUTPUT_SCORE)
        if values:
            packed.append(sc.ML_OUTPUT_VALUE)
        prefixes = [attrs.double_prefix(k) for k in packed]
        self.pack = struct.Struct("<" + "".join(f"{len(p)}sd" for p in prefixes)).pack
        self.template: list = []
        for p in prefixes:
            self.template += (p, 0.0)
