"""Train the test servers' models in the server's own venv (its scikit-learn unpickles them).

    python make_models.py OUT_DIR [--named]      # OUT_DIR/iris.joblib (3 classes), OUT_DIR/churn.joblib (binary)
    python make_models.py OUT_DIR --bentoml      # also saved to the BentoML model store; prints the tags as JSON

``--named`` fits on a pandas DataFrame, so the models carry ``feature_names_in_`` (what MLServer
users usually serve); otherwise the features are unnamed (otel-ml calls them x0, x1, ...).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CHURN = ["age", "income", "visits"]


def train(names: list, classes: int, seed: int, named: bool):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, len(names)))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], np.linspace(-1, 1, classes + 1)[1:-1])
    if named:
        import pandas as pd

        X = pd.DataFrame(X, columns=names)
    return LogisticRegression(max_iter=500).fit(X, y)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    named = "--named" in sys.argv
    models = {"iris": train(IRIS, 3, 1, named), "churn": train(CHURN, 2, 2, named)}
    for name, model in models.items():
        joblib.dump(model, out / f"{name}.joblib")
    if "--bentoml" in sys.argv:
        import bentoml

        tags = {name: str(bentoml.sklearn.save_model(f"{name}_clf", model).tag) for name, model in models.items()}
        print(json.dumps(tags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
