"""Reference data of a model version (stand-in until the full engine lands)."""

from __future__ import annotations

from dataclasses import dataclass

from otel_ml_processor.compute.window import WindowData


class ReferenceError(ValueError):
    pass


@dataclass
class ReferenceData:
    features: dict


@dataclass
class PreparedReference:
    data: ReferenceData


def reference_from_window(window: WindowData, first_n: int) -> ReferenceData:
    return ReferenceData(features={k: v[:first_n] for k, v in window.features.items()})


def load_reference_file(path: str, features=None) -> ReferenceData:
    import csv
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
    import numpy as np
    out = {}
    for k, vals in cols.items():
        try:
            out[k] = np.array([float(v) for v in vals])
        except ValueError:
            out[k] = np.array(vals, dtype=object)
    return ReferenceData(features=out)


def prepare_reference(ref: ReferenceData, spec) -> PreparedReference:
    return PreparedReference(ref)
