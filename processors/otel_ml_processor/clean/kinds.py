"""Per-model feature kinds: the part of cleaning that remembers earlier records.

A feature's kind (number or string) is fixed by the first value a model sends for it. A later
value of the other kind becomes missing (issue ``type_changed``); a feature the model sent
before and a record lacks is missing (issue ``missing``). This runs on the writer thread, after
the stateless validation, so it sees every record in order whichever worker cleaned it.

A model with a reference file has its features' types declared from that file
(:meth:`FeatureKinds.declare`): every value is then read as its feature's type, the same way as
the file (:mod:`otel_ml_processor.clean.values`: an OTLP bool ``true`` is 1.0 for a numeric
feature, the number 19 is ``"19"`` for a text one), and a value that cannot be read so is
missing with issue ``type_mismatch``, whatever the first value was.

Example::

    kinds = FeatureKinds(issue_sink)
    kinds.declare("churn", {"age": "number", "smoker": "boolean", "plan": "text"})
    kinds.check(record)        # repairs record.features in place
"""

from __future__ import annotations

from typing import Callable

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.clean.values import BOOLEAN, NUMBER, UNREADABLE, read_value

#: How a declared type's canonical values arrive from validation.
_PYTHON_TYPE = {NUMBER: float, BOOLEAN: str}


def signature(features: dict) -> tuple:
    """(names, value types) of a record's features: a batch whose records of one model all have
    the same signature can be checked at once (:meth:`FeatureKinds.accept`)."""
    return tuple(features), tuple(map(type, features.values()))


class FeatureKinds:
    def __init__(self, issues: Callable[[str, str, str], None]):
        self._issues = issues
        self.kinds: dict = {}      # model -> {feature: float | str}
        self.declared: dict = {}   # model -> {feature: "number" | "boolean" | "text"}

    def declare(self, model: str, types: dict) -> None:
        """Fix the types of ``model``'s features (those of its reference file)."""
        self.declared[model] = dict(types)
        self.kinds[model] = {f: _PYTHON_TYPE.get(t, str) for f, t in types.items()}

    def forget(self, model: str) -> None:
        self.kinds.pop(model, None)
        if model in self.declared:
            self.declare(model, self.declared[model])

    def accept(self, model: str, names: tuple, kinds: tuple) -> bool:
        """Check a whole batch of ``model`` at once, when every record of it had the features
        ``names`` with the types ``kinds`` (``Cleaner`` finds that in the worker).

        True when no record would get an issue (learning the kinds not known yet); False, with
        nothing changed, when :meth:`check` must run record by record.
        """
        known = self.kinds.get(model)
        if known is None:
            known = self.kinds[model] = {}
        if not known.keys() <= set(names):
            return False
        declared = self.declared.get(model)
        if declared and any(declared.get(name) == BOOLEAN for name in names):
            return False   # a string may not be a boolean word: read each value
        none = type(None)
        for name, t in zip(names, kinds):
            if t is not none and known.get(name, t) is not t:
                return False
        for name, t in zip(names, kinds):
            if t is not none and name not in known:
                known[name] = t
        return True

    def check(self, r: PredictionRecord) -> None:
        kinds = self.kinds.get(r.model)
        if kinds is None:
            kinds = self.kinds[r.model] = {}
        features = r.features
        declared = self.declared.get(r.model, {})
        for name, v in features.items():
            if v is None:
                continue
            kind = declared.get(name)
            if kind is not None:
                read = read_value(kind, v)
                if read is UNREADABLE:
                    self._issues(r.model, name, sc.ISSUE_TYPE_MISMATCH)
                    read = None
                if type(read) is not type(v) or read != v:
                    features[name] = read
                    r.encoded = None
                continue
            t = type(v)
            first = kinds.get(name)
            if first is None:
                kinds[name] = t
            elif first is not t:
                self._issues(r.model, name, sc.ISSUE_TYPE_CHANGED)
                features[name] = None
                r.encoded = None
        if not kinds.keys() <= features.keys():
            for name in kinds:
                if name not in features:
                    self._issues(r.model, name, sc.ISSUE_MISSING)
                    features[name] = None
                    r.encoded = None
