"""SDK -> rotel (a real OTLP collector, Rust, from the ``rotel`` PyPI package) -> processor.

The collector is configured through rotel's own Python API (``rotel.config.Config`` builds
the agent's environment) and its ``rotel-agent`` binary runs in the foreground as a child of
the test (not ``--daemon``: the test owns and stops exactly its own process; rotel's default
pid file in /tmp would be shared with other runs). It receives OTLP/gRPC on a free port,
batches log records from several model servers (different OTel resources) into requests of up
to 500 records and forwards them gzip-compressed over OTLP/gRPC to the processor — the traffic
shape of a real collector hop. Between rotel and the processor sits a recording relay (a
gRPC server in the test that forwards each request's bytes unchanged), so the test sees that
rotel really sent multi-resource batches. The processor must count and window every prediction.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import rotel
from rotel.config import Config

import otel_ml
from tests.support import ProcessorProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

SERVERS, PER_SERVER = 4, 150
AGENT = Path(rotel.__file__).with_name("rotel-agent")


def _provider(endpoint: str, service: str):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": service, "service.instance.id": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"http://{endpoint}", insecure=True)))
    return provider


class RecordingRelay:
    """OTLP/gRPC logs relay: records each request's shape, forwards its bytes to ``target``."""

    def __init__(self, target: str) -> None:
        import grpc
        from concurrent import futures

        from tests.support import grpc_export

        self.requests: list = []  # (resources, log records) per request

        def export(body: bytes, context) -> bytes:
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

            req = ExportLogsServiceRequest.FromString(body)
            self.requests.append((len(req.resource_logs),
                                  sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)))
            return grpc_export(target, body).SerializeToString()

        handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService", {
            "Export": grpc.unary_unary_rpc_method_handler(export)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "RecordingRelay":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)


class RotelAgent:
    def __init__(self, tmp: Path, processor_grpc: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.tmp = tmp
        options = {
            "pid_file": str(tmp / "rotel.pid"),
            "log_file": str(tmp / "rotel.log"),
            "otlp_grpc_endpoint": f"127.0.0.1:{self.grpc_port}",
            "otlp_http_endpoint": f"127.0.0.1:{self.http_port}",
            "batch_max_size": 500,
            "batch_timeout": "200ms",
            "exporter": Config.otlp_exporter(endpoint=f"http://{processor_grpc}", protocol="grpc", compression="gzip"),
        }
        self.env = Config(options).build_agent_environment()
        self.proc = None

    def __enter__(self) -> "RotelAgent":
        self._out = open(self.tmp / "rotel.stdout", "ab")
        self.proc = subprocess.Popen([str(AGENT), "start"], env=self.env, stdout=self._out, stderr=subprocess.STDOUT)

        def listening() -> bool:
            assert self.proc.poll() is None, (self.tmp / "rotel.stdout").read_text(errors="replace")
            import socket

            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.grpc_port)) == 0

        wait_for(listening, timeout=30, what="rotel listening")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._out.close()


def test_predictions_through_rotel_reach_the_processor(tmp_path):
    models = [{"name": "churn", "task": "classification", "reference": {"first_n": 100},
               "drift": {"default": {"method": "ks"}}}]
    with ProcessorProcess(tmp_path, models=models) as proc, RecordingRelay(proc.grpc_endpoint) as relay, \
            RotelAgent(tmp_path, relay.endpoint) as agent:
        endpoint = f"127.0.0.1:{agent.grpc_port}"
        providers = [_provider(endpoint, f"model-server-{k}") for k in range(SERVERS)]
        ids = []
        for i in range(PER_SERVER):
            for k, provider in enumerate(providers):  # interleaved: the agent's batches mix resources
                ids.append(otel_ml.record_prediction("churn", "3", {"x": float(i), "server": k}, label=str(i % 2),
                                                     score=0.7, logger_provider=provider))
        for provider in providers:
            provider.shutdown()
        total = SERVERS * PER_SERVER
        wait_for(lambda: proc.sample("ml_records_received_total", {"model": "churn", "signal": "prediction"}) == total,
                 timeout=60, what=f"{total} predictions received through rotel (log: {proc.log()[-2000:]})")
        # the window holds every prediction but the first_n reference (DESIGN.md, "Reference")
        wait_for(lambda: proc.sample("ml_window_predictions", {"model": "churn", "model_version": "3"}) == total - 100,
                 timeout=60, what="window holds every prediction after the reference")
        assert len(set(ids)) == total
        # rotel batched: fewer requests than the SDK sent, and requests holding several resources.
        print("relay requests (resources, records):", relay.requests)
        assert sum(n for _, n in relay.requests) == total
        assert max(r for r, _ in relay.requests) > 1
        assert max(n for _, n in relay.requests) > PER_SERVER
        assert proc.sample("ml_records_rejected_total", {"reason": "malformed"}) == 0
        assert proc.sample("ml_records_rejected_total", {"reason": "duplicate"}) == 0
        assert proc.sample("ml_drift_score", {"model": "churn", "feature": "x", "method": "ks"}) is not None
