"""The pages' one stylesheet (dark by default, light for ``prefers-color-scheme: light``) and
the Content-Security-Policy that allows exactly it: no script, no font, no external resource.

Example::

    f"<style>{CSS}</style>"          # in the page's <head>
    headers["Content-Security-Policy"] = CSP
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSS", "CSP", "WINDOW_COLOUR_DARK", "OOD_COLOUR_DARK", "REFERENCE_COLOUR_DARK"]

#: Colours of the chart bars in the dark palette (the browser test looks for them).
WINDOW_COLOUR_DARK = "#4aa8ff"
OOD_COLOUR_DARK = "#ff6b5a"
REFERENCE_COLOUR_DARK = "#5d6875"

CSS = f"""
:root{{color-scheme:dark light;--bg:#0f1318;--fg:#e3e7ec;--muted:#98a3af;--card:#171c23;--line:#2b323b;
--ref:{REFERENCE_COLOUR_DARK};--win:{WINDOW_COLOUR_DARK};--ood:{OOD_COLOUR_DARK};--ok:#3ecf8e;--band:#2f5f8f}}
@media (prefers-color-scheme:light){{:root{{--bg:#ffffff;--fg:#1b1f24;--muted:#57606a;--card:#f6f8fa;
--line:#d0d7de;--ref:#aab3bd;--win:#0969da;--ood:#cf222e;--ok:#1a7f37;--band:#b6d3f5}}}}
*{{box-sizing:border-box}}
body{{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;-webkit-text-size-adjust:100%}}
main{{max-width:1180px;margin:0 auto;padding:12px 14px 40px}}
h1{{font-size:1.35rem;margin:.4rem 0}}h2{{font-size:1.1rem;margin:1.6rem 0 .5rem;padding-top:.4rem;
border-top:1px solid var(--line)}}h3{{font-size:1rem;margin:1rem 0 .3rem}}
a{{color:var(--win)}}a.def{{color:var(--muted);text-decoration:none;font-size:.8em;margin-left:.25em}}
a.def:hover{{text-decoration:underline}}
.muted{{color:var(--muted)}}.flag{{color:var(--ood);font-weight:600}}.ok{{color:var(--ok)}}
.cards{{display:flex;flex-wrap:wrap;gap:8px;margin:.6rem 0}}
.card{{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:8.5rem}}
.card b{{display:block;font-size:1.15rem}}
.scroll{{overflow-x:auto;-webkit-overflow-scrolling:touch}}
table{{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}}
th,td{{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle;white-space:nowrap}}
th{{color:var(--muted);font-weight:600;font-size:.85rem}}
.num{{text-align:right}}
svg text{{fill:var(--muted);font-size:10px;font-family:inherit}}
svg .ref{{fill:var(--ref)}}svg .win{{fill:var(--win)}}svg .ood{{fill:var(--ood)}}
svg .axis{{stroke:var(--line)}}svg .band{{fill:var(--band)}}svg .tick{{fill:var(--fg)}}
svg.hist{{display:block;max-width:100%;height:auto}}
.legend span{{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em;vertical-align:-.05em}}
.legend .ref{{background:var(--ref)}}.legend .win{{background:var(--win)}}.legend .ood{{background:var(--ood)}}
nav{{font-size:.9rem;margin:.2rem 0}}footer{{margin-top:2rem;font-size:.85rem;color:var(--muted)}}
@media (max-width:600px){{body{{font-size:14px}}main{{padding:8px}}th,td{{padding:4px 5px}}svg.hist{{width:150px}}}}
""".strip()

_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

#: Only the stylesheet above may apply; nothing may load, run or submit.
CSP = (f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src data:; base-uri 'none'; "
       "form-action 'none'")
