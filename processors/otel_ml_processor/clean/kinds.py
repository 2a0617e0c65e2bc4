"""Per-model feature kinds: the part of cleaning that remembers earlier records.

A feature's kind (number or string) is fixed by the first value a model sends for it. A later
value of the other kind becomes missing (issue ``type_changed``); a feature the model sent
before and a record lacks is missing (issue ``missing``). This runs on the writer thread, after
the stateless validation, so it sees every record in order whichever worker cleaned it.

Example::

    kinds = FeatureKinds(issue_sink)
    kinds.check(record)        # repairs record.features in place
"""

from __future__ import annotations

from typing import Callable

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import PredictionRecord


def signature(features: dict) -> tuple:
    """(names, value types) of a record's features: a batch whose records of one model all have
    the same signature can be checked at once (:meth:`FeatureKinds.accept`)."""
    return tuple(features), tuple(map(type, features.values()))


class FeatureKinds:
    def __init__(self, issues: Callable[[str, str, str], None]):
        self._issues = issues
        self.kinds: dict = {}      # model -> {feature: float | str}

    def forget(self, model: str) -> None:
        self.kinds.pop(model, None)

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
        for name, v in features.items():
            if v is None:
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
