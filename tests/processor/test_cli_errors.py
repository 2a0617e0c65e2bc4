"""Bad input to every ``otel-ml`` command gets one line naming the argument and the problem
(issue 22): exit status 2 for usage errors, 1 for the rest, never a traceback.

Each case runs the installed console script (``otel-ml``, importing this checkout through
PYTHONPATH) as a user would: a real missing file, a real non-Parquet file, a real port held by
another socket, a real PostgreSQL URL on a port where nothing listens.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import yaml

from tests.support import free_port, otel_ml_command

pytestmark = pytest.mark.e2e


def _closed_port_url() -> str:
    return f"postgresql://nobody@127.0.0.1:{free_port()}/otelml"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "good.csv").write_text("model,prediction_id,value\nchurn,p1,1\n")
    (d / "columns.csv").write_text("id,label\np1,1\n")
    (d / "binary.csv").write_bytes(b"PAR1\x15\x04\x15\x10\xff\xfe\x00\x81")
    (d / "fake.parquet").write_text("this is not parquet\n")

    def config(name: str, **sections) -> str:
        sections.setdefault("storage", {"url": f"sqlite:///{d / 'otel-ml.db'}"})
        sections.setdefault("receiver", {"grpc_endpoint": f"127.0.0.1:{free_port()}",
                                         "http_endpoint": f"127.0.0.1:{free_port()}"})
        sections.setdefault("prometheus", {"endpoint": f"127.0.0.1:{free_port()}"})
        (d / name).write_text(yaml.safe_dump(sections))
        return str(d / name)

    return d, config


def run(args: list, cwd) -> subprocess.CompletedProcess:
    if args[0] == "processor":
        args = [*args, "--log-level", "warning"]     # (its start-up log is on stderr at info)
    env = {k: v for k, v in os.environ.items() if k != "OTEL_ML_LABELS_URL"}
    env["OTEL_ML_HASH_KEY"] = "test-hash-key"
    return subprocess.run(otel_ml_command() + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=180)


def check(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    err = result.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert result.returncode == status, (result.returncode, err)
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_labels_import_bad_files_and_urls(files):
    d, _ = files
    check(run(["labels", "import", "missing.csv"], d), 1, "missing.csv", "no such file")
    check(run(["labels", "import", str(d)], d), 1, "is a directory")
    check(run(["labels", "import", "columns.csv"], d), 1, "columns.csv", "without the columns model,prediction_id,value")
    check(run(["labels", "import", "binary.csv"], d), 1, "binary.csv", "not a UTF-8 CSV")
    check(run(["labels", "import", "good.csv", "--model", "churn"], d), 1, "good.csv", "without --model")
    check(run(["labels", "import", "good.csv", "--url", "localhost:4318"], d), 2, "--url", "not an http")
    nobody = f"http://127.0.0.1:{free_port()}/v1/labels"
    check(run(["labels", "import", "good.csv", "--url", nobody], d), 1, f"--url {nobody}", "cannot reach")
    check(run(["labels", "import", "good.csv", "--token-env", "OTEL_ML_TEST_UNSET_TOKEN"], d), 2,
          "--token-env OTEL_ML_TEST_UNSET_TOKEN", "not set")


def test_db_export_and_report_bad_arguments(files):
    d, config = files
    cfg = config("ok.yaml")
    check(run(["db", "export", "--config", cfg, "--model", "nope"], d), 1, "--model 'nope'", "no such model")
    check(run(["db", "export", "--config", cfg, "--model", "m", "--format", "parquet"], d), 2, "--format parquet",
          "--output")
    check(run(["db", "export", "--config", cfg, "--model", "m", "--output", str(d / "no" / "x.csv")], d), 1,
          "--output", "does not exist")
    check(run(["db", "export", "--config", cfg, "--model", "m", "--since", "5 parsecs"], d), 2, "--since")
    check(run(["db", "export", "--config", "missing.yaml", "--model", "m"], d), 2, "missing.yaml")
    pg = config("pg.yaml", storage={"url": _closed_port_url()})
    check(run(["db", "export", "--config", pg, "--model", "m"], d), 1, "storage.url", "cannot use the database")
    check(run(["report", "--config", cfg, "--model", "nope"], d), 1, "--model 'nope'")
    check(run(["report", "--config", cfg, "--model", "m", "--output", str(d / "no" / "m.html")], d), 1, "--output")
    check(run(["report", "--config", pg, "--model", "m"], d), 1, "storage.url", "cannot use the database")
    check(run(["demo", "--duration", "-5"], d), 2, "--duration")


def test_processor_bad_files_database_and_ports(files):
    d, config = files
    check(run(["processor", "--config", "missing.yaml"], d), 2, "missing.yaml")
    fake = config("fake.yaml", models=[{"name": "m", "reference": {"path": "fake.parquet"}}])
    check(run(["processor", "--config", fake], d), 2, "fake.parquet", "Parquet")     # the configuration's file
    gone = config("gone.yaml", models=[{"name": "m", "reference": {"path": "gone.csv"}}])
    check(run(["processor", "--config", gone], d), 2, "gone.csv", "does not exist")
    pg = config("pg.yaml", storage={"url": _closed_port_url()})
    check(run(["processor", "--config", pg], d), 1, "storage.url", "cannot use the database")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = config("busy.yaml", prometheus={"endpoint": f"127.0.0.1:{port}"})
        check(run(["processor", "--config", busy], d), 1, f"prometheus.endpoint 127.0.0.1:{port}", "cannot listen")
        grpc_busy = config("grpc-busy.yaml", receiver={"grpc_endpoint": f"127.0.0.1:{port}",
                                                        "http_endpoint": f"127.0.0.1:{free_port()}"})
        check(run(["processor", "--config", grpc_busy], d), 1, f"receiver.grpc_endpoint 127.0.0.1:{port}",
              "cannot listen")
