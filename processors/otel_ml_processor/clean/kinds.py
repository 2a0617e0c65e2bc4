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


class FeatureKinds:
    def __init__(self, issues: Callable[[str, str, str], None]):
        self._issues = issues
        self.kinds: dict = {}      # model -> {feature: float | str}

    def forget(self, model: str) -> None:
        self.kinds.pop(model, None)

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
