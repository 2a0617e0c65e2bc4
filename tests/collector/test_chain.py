"""SDK -> agent otelcol -> gateway otelcol (load_balancing by ml.model.name) -> two replicas on PostgreSQL.

Every part is real and runs as shipped: the model server is the public ``otel_ml`` API with its
disk buffer, in its own process; the agent and the gateway are otelcol (built from the pinned
release) running collector-config/agent.yaml and gateway-loadbalancing.yaml; the replicas are
``otel-ml processor`` processes sharing one PostgreSQL 15.

One OTLP request that mixes sixteen models (the probe) shows where each model hashes; two
models per replica then get predictions from the SDK, which mixes models in its requests too.
Half of the labels travel with the predictions (OTLP, through both Collectors), the other half
are posted to ``POST /v1/labels`` of the replica that does NOT own the model.
"""

from __future__ import annotations

import math

import pytest
import requests
from sklearn.metrics import accuracy_score
from sqlalchemy import text

from tests.collector.chain import FIRST_N, MODELS, VERSION, Chain, label_by_otlp, prediction_id, row
from tests.support import wait_for

pytestmark = pytest.mark.e2e

N = 200  # predictions per model


def _pick(owners: dict, per_replica: int = 2) -> list:
    chosen = []
    for k in (0, 1):
        mine = [m for m in MODELS if owners[m] == k]
        assert mine, f"the probe put no model on replica {k}: {owners}"
        chosen += mine[:per_replica]
    return chosen


@pytest.fixture(scope="module")
def run(tmp_path_factory, module_pg_url):
    tmp = tmp_path_factory.mktemp("chain")
    with Chain(tmp, module_pg_url) as chain:
        owners = chain.probe()
        chosen = _pick(owners)
        chain.model_server(chosen, 0, N, labels=True).start().wait()
        chain.wait_stored({m: N + 1 for m in chosen})   # + the probe's one
        for model in chosen:
            other = chain.replicas[1 - owners[model]]
            body = [{"model": model, "prediction_id": prediction_id(model, i), "value": row(model, i)[2]}
                    for i in range(N) if not label_by_otlp(i)]
            requests.post(f"{other.http_url}/v1/labels", json=body, timeout=60).raise_for_status()
        yield chain, owners, chosen


def test_each_models_predictions_land_on_exactly_one_replica(run):
    chain, owners, chosen = run
    for model in MODELS:   # the probe: one request, sixteen models
        counts = [chain.received(r, model) for r in chain.replicas]
        assert sorted(counts)[0] == 0 and sorted(counts)[1] >= 1, f"{model}: {counts}"
    for model in chosen:   # the SDK's stream
        owner, other = chain.replicas[owners[model]], chain.replicas[1 - owners[model]]
        assert chain.received(owner, model) == N + 1
        assert chain.received(other, model) == 0


def test_nothing_lost_nothing_stored_twice(run):
    chain, owners, chosen = run
    stored = chain.stored()
    for model in chosen:
        assert stored[model] == (N + 1, N + 1)
        assert chain.ids(model) == {prediction_id(model, i) for i in range(-1, N)}
    with chain.engine.connect() as conn:
        labels = dict(conn.execute(text("select model, count(*) from labels group by model")).all())
    assert {m: labels.get(m) for m in chosen} == {m: N for m in chosen}


def test_labels_join_in_the_owners_window(run):
    """Both halves of the labels, OTLP through the gateway and POST on the other replica, reach the
    owner's window: its accuracy equals scikit-learn's on every labeled row, those of the model's
    first_n reference included (the labeled window does not wait for the reference); the
    baseline's count, the labeled rows after that reference (the first FIRST_N predictions
    stored, the probe's among them), is what the database says."""
    chain, owners, chosen = run
    for model in chosen:
        with chain.engine.connect() as conn:
            after_reference = conn.execute(text(
                "select prediction_id from predictions where model = :m order by id offset :n"),
                {"m": model, "n": FIRST_N}).scalars().all()
        index = {prediction_id(model, i): i for i in range(N)}
        after = [index[pid] for pid in after_reference if pid in index]   # the probe's is unlabeled
        assert len(after) == N + 1 - FIRST_N
        rows = list(range(N))
        expected = accuracy_score([row(model, i)[2] for i in rows], [row(model, i)[1] for i in rows])
        labels = {"model": model, "model_version": VERSION}

        def joined():
            holder = chain.holders().get(model)     # whichever replica holds its lease now
            if holder is None:
                return False
            owner = chain.replicas[holder]
            if owner.sample("ml_window_labeled", labels) != len(rows):
                return False
            if owner.sample("ml_window_labeled_after_reference", labels) != len(after):
                return False
            value = owner.sample("ml_performance", {**labels, "metric": "accuracy"})
            return value is not None and math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)

        wait_for(joined, timeout=60, what=f"{model}: {len(rows)} labels in the holder's window, accuracy {expected}")


def test_each_model_is_exported_by_its_lease_holder_only(run):
    """Routing put each model on one replica; compute belongs to the lease holder, whichever that
    is, and only it exports the model's computed series (each replica holds some)."""
    chain, owners, chosen = run
    from prometheus_client.parser import text_string_to_metric_families

    def exported(replica) -> set:
        return {s.labels["model"] for fam in text_string_to_metric_families(replica.metrics_text())
                for s in fam.samples if s.name == "ml_window_predictions"}

    def settled():
        holders = chain.holders()
        on = [exported(r) for r in chain.replicas]
        mine = [{m for m, k in holders.items() if k == i} for i in range(len(chain.replicas))]
        return on if set(holders) == set(MODELS) and on == mine and all(on) else None

    wait_for(settled, timeout=60, what="each model exported by its lease holder only, each replica holding some")
