"""Faults in the Collector chain: nothing acknowledged to the model server is lost, nothing stored twice.

The chain is tests/collector/chain.py's (SDK -> agent -> gateway with load_balancing -> two
replicas on PostgreSQL), every part a real process running its shipped config. The model
server is the public ``otel_ml`` API with its disk buffer: what the agent did not acknowledge
it resends, so anything missing at the end was lost after an acknowledgement.

- The agent is SIGKILLed mid-stream and restarted; then, with the gateway stopped, the agent
  acknowledges a whole stream (its only copy is the agent's disk queue), is SIGKILLed, restarted,
  and the gateway restarted: every record comes back from the disk queue.
- A replica is SIGKILLed mid-stream; the gateway holds that replica's models in its persistent
  queue (acknowledged to the agent), is SIGKILLed and restarted itself, then the replica restarts
  and takes compute leases again.
- The counter-examples: the same agent with a ``batch`` processor in front of its queue
  acknowledges records it only holds in memory, and a SIGKILL loses them; the same gateway
  with the load balancer's per-replica sub-exporters on their default in-memory queues empties
  its persistent queue into them while a replica is down, and a SIGKILL loses those records.

Each ends with every prediction id stored exactly once (row counts in PostgreSQL).
"""

from __future__ import annotations

import signal

import pytest
import yaml

from tests.collector.chain import MODELS, Chain, ModelServerProcess
from tests.support import COLLECTOR_CONFIGS, COLLECTOR_ENV, CollectorProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

N = 300          # predictions per model and stream
STREAM = MODELS[:4]
RATE = 150.0     # predictions/s: a stream lasts 8 s, long enough to strike mid-stream on a busy machine


def _queued(col: CollectorProcess) -> float:
    """Log records in the Collector's exporter queues (its own telemetry)."""
    return col.telemetry("otelcol_exporter_queue_size", {"data_type": "logs"})


def _mid_stream(chain: Chain, server: ModelServerProcess, total: int) -> None:
    """Wait until a quarter of the stream is recorded and the agent has accepted some of it."""
    wait_for(lambda: server.progress() >= total // 4
             and chain.agent.telemetry("otelcol_receiver_accepted_log_records") > 0,
             timeout=120, what="the stream under way")
    assert server.running(), "the stream ended before the fault: not mid-stream"


def test_agent_killed_mid_stream_and_holding_acknowledged_data(tmp_path, pg_url):
    with Chain(tmp_path, pg_url) as chain:
        # 1. SIGKILL mid-stream, restart at once.
        server = chain.model_server(STREAM, 0, N, rate=RATE, name="stream1").start()
        _mid_stream(chain, server, N * len(STREAM))
        assert chain.agent.stop(signal.SIGKILL) == -signal.SIGKILL
        chain.agent.start()
        server.wait()
        chain.wait_stored({m: N for m in STREAM})

        # 2. The gateway stops (a restart): the agent acknowledges a whole stream it cannot forward.
        chain.gateway.stop()
        chain.model_server(STREAM, N, N, name="stream2").start().wait()   # shut down: all acknowledged
        assert _queued(chain.agent) == N * len(STREAM)
        assert chain.agent.stop(signal.SIGKILL) == -signal.SIGKILL
        chain.agent.start()
        assert _queued(chain.agent) == N * len(STREAM), "the agent's queue did not survive SIGKILL"
        chain.gateway.start()
        chain.wait_stored({m: 2 * N for m in STREAM})
        wait_for(lambda: _queued(chain.agent) == 0, what="the agent's queue drained")


@pytest.fixture(scope="module")
def replica_killed(tmp_path_factory, module_pg_url):
    """A replica SIGKILLed mid-stream, the gateway SIGKILLed while it holds that replica's
    models, both restarted; yields the chain, the owners and the killed replica's index."""
    tmp = tmp_path_factory.mktemp("replica-killed")
    with Chain(tmp, module_pg_url) as chain:
        owners = chain.probe()
        victim = owners[STREAM[0]]
        server = chain.model_server(STREAM, 0, N, rate=RATE, name="stream").start()
        _mid_stream(chain, server, N * len(STREAM))
        chain.replicas[victim].stop(signal.SIGKILL)
        server.wait()                                   # every record acknowledged by the agent
        wait_for(lambda: _queued(chain.agent) == 0, timeout=120, what="the agent handed everything to the gateway")
        assert _queued(chain.gateway) > 0, "the gateway holds nothing for the dead replica"
        assert chain.gateway.stop(signal.SIGKILL) == -signal.SIGKILL
        chain.gateway.start()
        chain.replicas[victim].start()
        chain.wait_stored({m: N + 1 for m in STREAM})   # + the probe's one
        yield chain, owners, victim


def test_replica_and_gateway_killed_lose_nothing(replica_killed):
    chain, owners, victim = replica_killed
    for model in STREAM:
        assert chain.stored()[model] == (N + 1, N + 1)
        # Resent batches went to the same replica: a model's records never reached the other one.
        other = chain.replicas[1 - owners[model]]
        assert chain.received(other, model) == 0
    wait_for(lambda: _queued(chain.gateway) == 0, what="the gateway's queue drained")


def test_restarted_replica_exports_only_the_models_it_holds(replica_killed):
    """Back after its SIGKILL, the replica takes leases again and exports those models, and no other."""
    chain, owners, victim = replica_killed
    replica = chain.replicas[victim]
    from prometheus_client.parser import text_string_to_metric_families

    def exported() -> set:
        return {s.labels["model"] for fam in text_string_to_metric_families(replica.metrics_text())
                for s in fam.samples if s.name == "ml_window_predictions"}

    def settled():
        mine = {m for m, k in chain.holders().items() if k == victim}
        return mine if mine and exported() == mine else None

    wait_for(settled, timeout=60, what="the restarted replica exports exactly the models it holds")


def test_counter_example_batch_processor_loses_acknowledged_records(tmp_path):
    """The agent with ``batch`` in front of its persistent queue: acknowledged, killed, gone."""
    cfg = yaml.safe_load((COLLECTOR_CONFIGS / "agent.yaml").read_text())
    cfg["processors"]["batch"] = {"timeout": "60s", "send_batch_size": 100000}
    for pipeline in cfg["service"]["pipelines"].values():
        pipeline["processors"].append("batch")
    (tmp_path / "agent-batch.yaml").write_text(yaml.safe_dump(cfg))
    nowhere = {COLLECTOR_ENV["gateway"]: f"127.0.0.1:{free_port()}"}   # no gateway: nothing leaves the agent
    results = {}
    for name, config in (("shipped", "agent.yaml"), ("batch", str(tmp_path / "agent-batch.yaml"))):
        agent = CollectorProcess(tmp_path / name, config, env=nowhere, name="agent").start()
        ModelServerProcess(tmp_path / name, agent.grpc_endpoint, STREAM, 0, 50, name="server").start().wait()
        agent.stop(signal.SIGKILL)
        agent.start()
        results[name] = _queued(agent)
        agent.stop()
    assert results == {"shipped": 50 * len(STREAM), "batch": 0}


def test_counter_example_in_memory_sub_exporter_queues_lose_acknowledged_records(tmp_path, pg_url):
    """The gateway with the sub-exporters' default in-memory queues: the persistent queue hands a
    dead replica's records to memory and forgets them; a SIGKILL of the gateway loses them."""
    cfg = yaml.safe_load((COLLECTOR_CONFIGS / "gateway-loadbalancing.yaml").read_text())
    cfg["exporters"]["load_balancing/otel_ml"]["protocol"]["otlp"]["sending_queue"] = {"enabled": True}
    (tmp_path / "gateway-memory.yaml").write_text(yaml.safe_dump(cfg))
    with Chain(tmp_path, pg_url, gateway_config=str(tmp_path / "gateway-memory.yaml")) as chain:
        owners = chain.probe()
        victim = owners[STREAM[0]]
        chain.replicas[victim].stop(signal.SIGKILL)
        chain.model_server(STREAM, 0, 50, name="stream").start().wait()
        wait_for(lambda: _queued(chain.agent) == 0, timeout=120, what="the agent handed everything to the gateway")
        wait_for(lambda: _queued(chain.gateway) == 0, timeout=120, what="the persistent queue emptied into memory")
        chain.gateway.stop(signal.SIGKILL)
        chain.gateway.start()
        chain.replicas[victim].start()
        assert _queued(chain.gateway) == 0          # nothing left anywhere to resend
        lost = [m for m in STREAM if owners[m] == victim]
        assert all(chain.stored()[m][0] == 1 for m in lost), chain.stored()   # only the probe's row
