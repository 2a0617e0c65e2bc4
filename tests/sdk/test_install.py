"""``pip install otel-ml`` on a clean virtual environment: only the SDK's dependencies, the
processor command names the extra it needs, and an instrumented model server ships its
predictions (``opentelemetry-instrument``, the package's entry point, a real OTLP/gRPC receiver).

It installs from PyPI or pip's cache (about a minute; the packages are those the suite's own
environment already installed once)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otel_ml import semconv as sc

from .conftest import parse_request
from .test_senders import GrpcReceiver

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROCESSOR_ONLY = ("numpy", "scipy", "sqlalchemy", "aiohttp", "prometheus-client", "pyyaml", "orjson")

SERVER = """
import numpy as np
from sklearn.linear_model import LogisticRegression
X = np.arange(40.0).reshape(20, 2)
model = LogisticRegression().fit(X, [0, 1] * 10)
model.predict_proba(X[:3])
"""


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def _source(dest: Path) -> Path:
    """What a clone holds for building: the project file, the readme, the two packages."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.db")
    for name in ("otel_ml", "processors"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_pip_install_otel_ml_is_the_sdk_alone(tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], check=True)       # no system site packages
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    got = _run(pip + [str(_source(tmp_path / "src"))], env=env)
    assert got.returncode == 0, got.stderr

    listed = _run([str(py), "-c", "import importlib.metadata as m; print('\\n'.join(sorted("
                   "d.metadata['Name'].lower() for d in m.distributions())))"], env=env, check=True).stdout.split()
    assert "otel-ml" in listed and "opentelemetry-sdk" in listed and "wrapt" in listed
    assert [name for name in PROCESSOR_ONLY if name in listed] == []

    requires = _run([str(py), "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('otel-ml')))"],
                    env=env, check=True).stdout.splitlines()
    for extra in ("demo", "test", "postgresql"):
        assert any(r.startswith("otel-ml[processor]") and f'extra == "{extra}"' in r for r in requires), extra

    cli = _run([str(bin_dir / "otel-ml"), "processor"], env=env)
    assert cli.returncode != 0 and "otel-ml[processor]" in cli.stderr, cli.stderr
    assert _run([str(bin_dir / "otel-ml"), "--version"], env=env).returncode == 0

    got = _run(pip + ["scikit-learn"], env=env)
    assert got.returncode == 0, got.stderr
    receiver = GrpcReceiver()
    try:
        script = tmp_path / "serve.py"
        script.write_text(SERVER)
        served = _run([str(bin_dir / "opentelemetry-instrument"), str(py), str(script)], cwd=tmp_path, env={
            **env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "fresh", sc.ENV_MODEL_NAME: "fresh", sc.ENV_MODEL_VERSION: "1",
            sc.ENV_BUFFER_PATH: str(tmp_path / "buffer.db")})
        assert served.returncode == 0, served.stderr
        deadline = time.monotonic() + 30
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        events = [e for body in receiver.bodies for e in parse_request(body) if e.event_name == sc.EVENT_PREDICTION]
        assert len(events) == 3
        assert {(e.attributes[sc.ML_MODEL_NAME], e.resource["service.name"]) for e in events} == {("fresh", "fresh")}
        assert all(e.attributes[sc.feature_key("x1")] == 1.0 + 2 * i for i, e in enumerate(events))
    finally:
        receiver.stop()
