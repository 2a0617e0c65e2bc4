"""One type per feature through a real processor: a reference file in the shape of a public data
set (Kaggle's Spaceship Titanic: booleans written True/False, ages written 39.0, text with spaces,
slashes and digits), live OTLP values as a model server sends them (bools, ints, strings)."""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml import semconv as sc
from tests.support import ProcessorProcess, grpc_export, otlp_logs_request, prediction, wait_for

pytestmark = pytest.mark.e2e

PLANETS = ["Earth", "Europa", "Mars"]
DESTINATIONS = ["TRAPPIST-1e", "55 Cancri e", "PSO J318.5-22"]


def passengers(rng: np.random.Generator, n: int) -> dict:
    return {
        "HomePlanet": rng.choice(PLANETS, n, p=[0.54, 0.25, 0.21]),
        "CryoSleep": rng.uniform(size=n) < 0.36,
        "Destination": rng.choice(DESTINATIONS, n, p=[0.69, 0.21, 0.10]),
        "Age": rng.integers(0, 80, n),
        "VIP": rng.uniform(size=n) < 0.03,
        "RoomService": np.where(rng.uniform(size=n) < 0.65, 0, rng.integers(1, 3000, n)),
        "Deck": rng.choice(["B/0/P", "F/1/S", "G/3/S"], n),
    }


def test_a_public_dataset_reference_matches_live_otlp_values(tmp_path):
    rng = np.random.default_rng(2026)
    ref = passengers(rng, 2000)
    rows = ["HomePlanet,CryoSleep,Destination,Age,VIP,RoomService,Deck"]
    for i in range(2000):
        rows.append(",".join([ref["HomePlanet"][i], str(bool(ref["CryoSleep"][i])), ref["Destination"][i],
                              f"{float(ref['Age'][i])!r}", str(bool(ref["VIP"][i])),
                              f"{float(ref['RoomService'][i])!r}", ref["Deck"][i]]))
    (tmp_path / "reference.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    models = [{"name": "titanic", "reference": {"path": "reference.csv"}}]
    live = passengers(rng, 600)
    records = []
    for i in range(600):
        features = {"HomePlanet": str(live["HomePlanet"][i]), "CryoSleep": bool(live["CryoSleep"][i]),
                    "Destination": str(live["Destination"][i]), "Age": float(int(live["Age"][i])),
                    "VIP": bool(live["VIP"][i]), "RoomService": float(int(live["RoomService"][i])),
                    "Deck": str(live["Deck"][i])}
        if i < 7:
            features["VIP"] = "unknown"          # cannot be read as a boolean: a data-quality issue
        records.append(prediction("titanic", f"p{i}", features))
    with ProcessorProcess(tmp_path, models=models) as proc:
        grpc_export(proc.grpc_endpoint, otlp_logs_request(records))
        model = {"model": "titanic"}
        wait_for(lambda: proc.sample(sc.M_WINDOW_PREDICTIONS, model) == 600, what="600 predictions in the window")
        for feature in ("CryoSleep", "VIP", "HomePlanet", "Destination", "Deck", "Age", "RoomService"):
            assert proc.sample(sc.M_FEATURE_OOD_RATIO, {**model, "feature": feature}) == 0.0, feature
        assert proc.sample(sc.M_OOD_RATIO, model) == 0.0
        # stable data: nothing detected, and every decision has its threshold beside it
        for feature in ("CryoSleep", "VIP", "HomePlanet", "Destination", "Deck", "Age", "RoomService"):
            detected = proc.sample(sc.M_DRIFT_DETECTED, {**model, "feature": feature})
            assert detected == 0.0, feature
            assert proc.sample(sc.M_DRIFT_THRESHOLD, {**model, "feature": feature}) is not None
        assert proc.sample(sc.M_DRIFT_SCORE, {**model, "feature": "CryoSleep", "method": "jensenshannon"}) < 0.1
        assert proc.sample(sc.M_DATA_QUALITY_ISSUES + "_total",
                           {**model, "feature": "VIP", "issue": sc.ISSUE_TYPE_MISMATCH}) == 7
