"""Lint and type check, as configured in pyproject.toml ([tool.ruff], [tool.mypy]).

Both run from the repository root with no arguments, as a contributor runs them
(CONTRIBUTING.md), so the README's test command checks them too::

    python -m ruff check
    python -m mypy

mypy keeps its cache in .mypy_cache/ (ignored by git): about 35 s cold, under a second warm.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool", [["ruff", "check"], ["mypy"]], ids=["ruff", "mypy"])
def test_clean(tool: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{' '.join(tool)} found problems:\n{result.stdout}{result.stderr}"
