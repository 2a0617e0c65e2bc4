"""The processor's stages import only backward (DESIGN.md, "Shape of the code").

receive -> clean -> store -> join -> compute -> export: each stage's modules may import the
stages before it and the shared leaves (``otel_ml.semconv``, ``config``, ``counters``). The pure
``stats`` are compute's statistics ("compute: windows, then statistics"): compute and the stage
after it may import them, nothing before. The leaves and ``stats`` import no stage.
``service.py`` (and the command-line modules around it) wire the stages together and are not
checked. Every import is read from the source with ``ast``, those inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import otel_ml_processor

PACKAGE = Path(otel_ml_processor.__file__).parent
STAGES = ["receive", "clean", "store", "join", "compute", "export"]
LEAVES = {"otel_ml.semconv", "otel_ml_processor.config", "otel_ml_processor.counters"}


def _unit(module: str) -> str:
    """The stage, leaf or package a dotted module name belongs to."""
    parts = module.split(".")
    if parts[0] == "otel_ml_processor" and len(parts) > 1:
        return ".".join(parts[:2])
    return module


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(source: str, module: str, is_package: bool = False) -> list:
    """Absolute names of the otel_ml / otel_ml_processor modules that ``source`` (the text of
    ``module``) imports, anywhere in it."""
    package = module if is_package else module.rsplit(".", 1)[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # "from otel_ml_processor import stats" imports the subpackage
            names.extend([f"{name}.{a.name}" for a in node.names] if name in ("otel_ml", "otel_ml_processor") else [name])
    return [n for n in names if n.split(".")[0] in ("otel_ml", "otel_ml_processor")]


def allowed(unit: str) -> set:
    """What the modules of ``unit`` may import (besides themselves)."""
    if unit in ("otel_ml_processor.config", "otel_ml_processor.counters", "otel_ml_processor.stats"):
        return {"otel_ml.semconv"}
    stage = unit.split(".")[1]
    earlier = {f"otel_ml_processor.{s}" for s in STAGES[: STAGES.index(stage)]}
    stats = {"otel_ml_processor.stats"} if STAGES.index(stage) >= STAGES.index("compute") else set()
    return LEAVES | earlier | stats


def checked_files() -> list:
    files = [p for s in STAGES + ["stats"] for p in sorted((PACKAGE / s).rglob("*.py"))]
    return files + [PACKAGE / "config.py", PACKAGE / "counters.py"]


def forward_imports(source: str, module: str, is_package: bool = False) -> list:
    unit = _unit(module)
    ok = allowed(unit) | {unit}
    return [name for name in imported_modules(source, module, is_package) if _unit(name) not in ok and name not in ok]


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_backward(path):
    module = module_name(path)
    wrong = forward_imports(path.read_text(), module, path.name == "__init__.py")
    assert not wrong, f"{module} imports {wrong}: a stage imports only the stages before it and the leaves"


@pytest.mark.parametrize("source, module, expected", [
    ("import json\nfrom otel_ml import semconv as sc\n", "otel_ml_processor.receive.otlp", []),
    ("def f():\n    from otel_ml_processor.compute.engine import ModelSpec\n", "otel_ml_processor.receive.handlers",
     ["otel_ml_processor.compute.engine"]),
    ("from ..clean import batch\n", "otel_ml_processor.receive.handlers", ["otel_ml_processor.clean"]),
    ("from .. import pipeline\n", "otel_ml_processor.receive.handlers", ["otel_ml_processor.pipeline"]),
    ("import otel_ml_processor.stats.ks\n", "otel_ml_processor.join.labels", ["otel_ml_processor.stats.ks"]),
    ("from otel_ml_processor.stats import ks\n", "otel_ml_processor.compute.engine", []),
    ("from otel_ml_processor.store import database\n", "otel_ml_processor.counters", ["otel_ml_processor.store"]),
    ("from otel_ml.api import record_prediction\n", "otel_ml_processor.store.database", ["otel_ml.api"]),
], ids=["leaf", "in-function-forward", "relative-forward", "relative-root", "stats-before-compute",
        "stats-in-compute", "leaf-imports-stage", "sdk-module"])
def test_the_check_finds_forward_imports(source, module, expected):
    """The check itself: absolute, relative and in-function imports are all seen."""
    assert forward_imports(source, module) == expected
