"""Extract every panel query of the generated Grafana dashboards and substitute variables.

Example::

    for dash, title, ref, expr in panel_queries():
        promql = substitute(expr, {"model": "churn", "model_version": "3", "job": "model-server"})
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

GRAFANA = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
#: Grafana's built-in variables, as Grafana would expand them for a short time range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def dashboards() -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def _panels(panels: list) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels") or [])  # panels inside collapsed rows


def panel_queries() -> Iterator[tuple]:
    """(dashboard file, panel title, refId, expr) for every query target of every panel."""
    for name, dash in dashboards().items():
        for panel in _panels(dash.get("panels") or []):
            for target in panel.get("targets") or []:
                yield name, panel["title"], target.get("refId"), target["expr"]


def substitute(expr: str, values: dict) -> str:
    """Replace ``$var``, ``${var}`` and ``[[var]]`` by ``values`` (plus Grafana's built-ins);
    an unknown variable is an error, so nothing unexpanded reaches Prometheus."""
    allv = {**BUILTINS, **values}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in allv:
            raise KeyError(f"variable ${name} has no value in {expr!r}")
        return allv[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)
