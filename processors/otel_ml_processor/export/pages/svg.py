"""Small inline SVG charts for the model pages: no script, no external resource.

Colours come from CSS classes (``ref``, ``win``, ``ood``, ``axis``, ``band``, ``tick``) that the
page's stylesheet maps to its light or dark palette (:mod:`.theme`).

Example::

    from otel_ml_processor.compute.histograms import numeric_histogram
    svg = histogram_svg(numeric_histogram("age", ref_values, window_values))
    bar = interval_svg(0.81, 0.77, 0.85)
"""

from __future__ import annotations

import math
from html import escape
from typing import Optional

from otel_ml_processor.compute.histograms import NUMERIC, FeatureHistogram

__all__ = ["histogram_svg", "interval_svg", "number"]

WIDTH, PLOT, AXIS = 240, 44, 14


def number(v: Optional[float], digits: int = 4) -> str:
    """A number for a person: ``—`` when undefined, 4 significant digits, thousands spaced."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, int) or (abs(v) >= 1000 and float(v).is_integer()):
        return f"{int(v):,}".replace(",", "\u202f")
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        return f"{v:.{max(1, digits - 1)}e}"
    return f"{v:.{digits}g}"


def _pct(f: float) -> str:
    return f"{100 * f:.1f} %"


def _bar_names(h: FeatureHistogram, hidden: bool) -> list:
    if h.kind == NUMERIC:
        e = h.edges
        inner = [f"[{number(e[i])}, {number(e[i + 1])}{']' if i == len(e) - 2 else ')'}" for i in range(len(e) - 1)]
        return [f"below {number(e[0])} (outside the reference)", *inner, f"above {number(e[-1])} (outside the reference)"]
    cats = [f"category {i + 1} (hidden by anonymization)" for i in range(len(h.categories))] if hidden \
        else list(h.categories)
    return [*cats, "other reference categories", "unseen in the reference"]


def histogram_svg(h: FeatureHistogram, hidden: bool = False) -> str:
    """Reference (grey) against window (coloured) on the reference's bars; window bars outside
    the reference in the OOD colour. ``hidden``: category names replaced (anonymized feature)."""
    n = len(h.reference)
    if not n:
        return ""
    slot = WIDTH / n
    top = max(max(h.reference), max(h.window), 1e-12)
    names = _bar_names(h, hidden)
    ood = {0, n - 1} if h.kind == NUMERIC else {n - 1}
    out = [f'<svg class="hist" viewBox="0 0 {WIDTH} {PLOT + AXIS}" width="{WIDTH}" height="{PLOT + AXIS}" '
           f'role="img" aria-label="{escape(h.feature)}: reference against window">']
    for i, (r, w) in enumerate(zip(h.reference, h.window)):
        if r <= 0 and w <= 0:
            continue
        x = i * slot
        out.append(f"<g><title>{escape(names[i])}: reference {_pct(r)}, window {_pct(w)}</title>")
        if r > 0:
            hr = max(0.8, PLOT * r / top)
            out.append(f'<rect class="ref" x="{x + 0.5:.1f}" y="{PLOT - hr:.1f}" width="{slot - 1:.1f}" height="{hr:.1f}"/>')
        if w > 0:
            hw = max(0.8, PLOT * w / top)
            cls = "ood" if i in ood else "win"
            out.append(f'<rect class="{cls}" x="{x + slot * 0.25:.1f}" y="{PLOT - hw:.1f}" width="{slot * 0.5:.1f}" '
                       f'height="{hw:.1f}"/>')
        out.append("</g>")
    out.append(f'<line class="axis" x1="0" y1="{PLOT + 0.5}" x2="{WIDTH}" y2="{PLOT + 0.5}"/>')
    if h.kind == NUMERIC:
        out.append(f'<text x="{slot:.1f}" y="{PLOT + AXIS - 2}">{escape(number(h.edges[0]))}</text>'
                   f'<text x="{WIDTH - slot:.1f}" y="{PLOT + AXIS - 2}" text-anchor="end">{escape(number(h.edges[-1]))}</text>')
    else:
        shown = len(h.categories)
        out.append(f'<text x="0" y="{PLOT + AXIS - 2}">{shown} categor{"y" if shown == 1 else "ies"}, other, unseen</text>')
    out.append("</svg>")
    return "".join(out)


def interval_svg(value: Optional[float], lower: Optional[float], upper: Optional[float]) -> str:
    """A [0, 1] track with the interval as a band and the value as a tick."""
    w, hgt = 120, 14

    def x(v: float) -> float:
        return max(0.0, min(1.0, v)) * w

    out = [f'<svg class="ci" viewBox="0 0 {w} {hgt}" width="{w}" height="{hgt}" role="img" aria-label="95 % interval">',
           f'<line class="axis" x1="0" y1="7" x2="{w}" y2="7"/>']
    if lower is not None and upper is not None and math.isfinite(lower) and math.isfinite(upper):
        out.append(f'<rect class="band" x="{x(lower):.1f}" y="3" width="{max(1.0, x(upper) - x(lower)):.1f}" height="8"/>')
    if value is not None and math.isfinite(value):
        out.append(f'<rect class="tick" x="{x(value) - 1:.1f}" y="1" width="2" height="12"/>')
    out.append("</svg>")
    return "".join(out)
