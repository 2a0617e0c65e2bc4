"""``ml.prediction``, ``ml.label`` and ``ml.audit`` events as OTLP LogRecord bytes.

:meth:`EventEncoder.predictions` turns the rows of one predict call into framed LogRecords
(``otel_ml.wire``) with no Python object per attribute: the bytes of the model's name,
version and task, of each key and of each class label are computed once; the call's
timestamps and trace context once per call; and the doubles of a row (its float features,
class probabilities, score or value) are packed by one ``struct`` call whose layout is cached
per model. :meth:`EventEncoder.event` encodes any other event from a mapping of attributes.

A record carries what the OpenTelemetry SDK would put in it: ``time_unix_nano`` (the call's
start, or the API call's time), ``observed_time_unix_nano`` (when it was encoded),
``event_name``, the attributes, and the trace id, span id and flags of the span it belongs to.

Example::

    from otel_ml.events import EventEncoder

    enc = EventEncoder()
    rec = enc.event("ml.label", {"ml.model.name": "churn", "ml.prediction.id": "p1", "ml.label.value": "1"},
                    time_ns=time.time_ns())
"""

from __future__ import annotations

import operator
import struct
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

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
        self._layouts: Dict[Tuple[str, ...], Tuple[Callable[..., bytes], list]] = {}
        self._names: Dict[str, bytes] = {}
        self._id_key = self.attrs.key(sc.ML_PREDICTION_ID)

    # -- any event ----------------------------------------------------------------------------
    def event(self, event_name: str, attributes: Mapping[str, Any], *, time_ns: int,
              trace: TraceIds = NO_TRACE, observed_ns: Optional[int] = None) -> bytes:
        """One framed LogRecord; attribute values OTLP cannot carry are left out."""
        return wire.frame(b"".join((
            wire.record_head(time_ns, time_ns if observed_ns is None else observed_ns),
            self.attrs.entries(attributes),
            self._tail(event_name, trace))))

    def _tail(self, event_name: str, trace: TraceIds) -> bytes:
        name = self._names.get(event_name)
        if name is None:
            name = _bounded(self._names)[event_name] = event_name.encode()
        return wire.record_tail(name, trace.trace_id, trace.span_id, trace.flags)

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

    def _layout(self, keys: Tuple[str, ...]) -> Tuple[Callable[..., bytes], list]:
        """A struct packing ``keys``' entries from their double values, and its argument list
        with the prefixes in place (values go in at the odd positions)."""
        got = self._layouts.get(keys)
        if got is None:
            prefixes = [self.attrs.double_prefix(k) for k in keys]
            fmt = "<" + "".join(f"{len(p)}sd" for p in prefixes)
            template: list = []
            for p in prefixes:
                template += (p, 0.0)
            got = _bounded(self._layouts)[keys] = (struct.Struct(fmt).pack, template)
        return got

    def _id(self, pid: str) -> bytes:
        b = pid.encode("utf-8", "surrogatepass")
        n = len(b)
        if n < 120:                               # every length below fits one varint byte
            kp = self._id_key
            small = wire._SMALL
            return b"".join((b"\x32", small[len(kp) + n + 4], kp, b"\x12", small[n + 2], b"\x0a", small[n], b))
        return self.attrs.string(sc.ML_PREDICTION_ID, b)

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
        head = [wire.record_head(time_ns, time.time_ns() if observed_ns is None else observed_ns),
                self._model(model_name, model_version, result.task)]
        seg_rows = None
        if isinstance(segments, Mapping):
            head.append(A.entries({sc.segment_key(str(k)): v for k, v in segments.items()}))
        elif isinstance(segments, (list, tuple)):
            seg_rows = segments
        if attributes:
            head.append(A.entries(attributes))
        head_b = b"".join(head)
        tail = self._tail(sc.EVENT_PREDICTION, trace)

        features = result.features
        feat_rows = features.rows
        n_feat = len(feat_rows)
        dict_rows = features.keys is None
        keys = features.keys or []
        float_idx = [j for j, f in enumerate(features.float_columns) if f] if not dict_rows else []
        other_idx = [j for j in range(len(keys)) if j not in set(float_idx)]
        all_float = not dict_rows and len(float_idx) == len(keys)
        pick = (None if all_float or not float_idx else
                operator.itemgetter(*float_idx) if len(float_idx) > 1 else (lambda r, j=float_idx[0]: (r[j],)))

        labels, values, scores = result.labels, result.values, result.scores
        classes, probs = result.classes, result.probabilities
        # The doubles packed together: float features, probabilities, score, value.
        packed_keys = [keys[j] for j in float_idx]
        if probs is not None:
            packed_keys += [sc.probability_key(c) for c in classes]
        if scores is not None:
            packed_keys.append(sc.ML_OUTPUT_SCORE)
        if values is not None:
            packed_keys.append(sc.ML_OUTPUT_VALUE)
        pack, template = self._layout(tuple(packed_keys))
        label_entry = self._label

        out: List[bytes] = []
        append = out.append
        small = wire._SMALL
        for i in indices:
            has_features = i < n_feat
            row = feat_rows[i] if has_features else None
            if has_features and not dict_rows:
                vals = list(row) if all_float else (list(pick(row)) if pick is not None else [])
            else:
                vals = []
            if probs is not None:
                vals += probs[i]
            if scores is not None:
                vals.append(scores[i])
            if values is not None:
                vals.append(values[i])
            parts = [head_b, self._id(ids[i])]
            args = template.copy()
            try:
                if not has_features or dict_rows:
                    raise struct.error("features are not packed")
                args[1::2] = vals
                parts.append(pack(*args))
            except (struct.error, ValueError):
                # A None (missing probability, non-finite score) or a non-float: one by one.
                parts.append(self._one_by_one(result, i, row if has_features else None, float_idx, keys,
                                              dict_rows, max_text))
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

    def _one_by_one(self, result: Any, i: int, row: Any, float_idx: List[int], keys: List[str], dict_rows: bool,
                    max_text: int) -> bytes:
        A = self.attrs
        parts = []
        if row is not None:
            items = row.items() if dict_rows else zip(keys, row)
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
