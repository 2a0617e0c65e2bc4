"""Server-rendered HTML of the model pages: the index ``/`` and one model version's page.

Pure functions of computed snapshots (:class:`~.source.ModelSnapshot`) and :class:`PageOptions`:
no I/O, no computation beyond formatting and sorting. Aggregates only: numbers, fractions and
the reference's bins; never a row, an id, or a category name of a feature whose values
anonymization hides (``PageOptions.hidden_features``). Every user-supplied string is escaped.

Every figure links to its definition in ``docs/metrics.md`` (anchors listed in :data:`ANCHORS`;
a test holds each one against the document). The docs' base URL is the project's docs on
GitHub unless ``$OTEL_ML_DOCS_URL`` names another (a mirror on a closed network).

Example::

    from otel_ml_processor.export.pages.render import PageOptions, render_index, render_model

    html = render_model(source.latest("churn"), versions=["3", "2"], options=PageOptions())
    index = render_index(source.models(), PageOptions())
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from html import escape
from typing import Iterable, Optional
from urllib.parse import quote

from otel_ml import semconv as sc
from otel_ml_processor.export.pages.source import ModelSnapshot
from otel_ml_processor.export.pages.svg import histogram_svg, interval_svg, number
from otel_ml_processor.export.pages.theme import CSP, CSS
from otel_ml_processor.stats.multivariate import DEFAULT_THRESHOLD as MULTIVARIATE_THRESHOLD
from otel_ml_processor.stats.registry import builtin_tests

__all__ = ["PageOptions", "page_options", "hidden_features", "render_index", "render_model", "render_not_found", "drift_order", "ANCHORS",
           "DEFAULT_DOCS_URL", "docs_url_from_env", "STALE_INTERVALS", "is_stale"]

#: A snapshot older than this many compute intervals is marked stale (its computing replica may be down).
STALE_INTERVALS = 3

#: Where the docs live unless ``$OTEL_ML_DOCS_URL`` says otherwise (ends with a slash).
DEFAULT_DOCS_URL = "https://github.com/otel-ml/otel-ml/blob/main/docs/"

#: figure -> anchor in docs/metrics.md (stable: explicit ``<a id>`` in the document)
ANCHORS = {
    "window": "window", "performance": "performance", "performance_interval": "performance-interval",
    "estimated_performance": "estimated-performance", "ood": "ood", "drift": "drift",
    "estimated_performance_interval": "estimated-performance-interval",
    "drift_detected": "drift-detected", "fairness": "fairness", "group": "group-metrics",
    "histogram": "histograms", "data_quality": "data-quality", "missing": "missing",
    **{f"method:{m}": f"drift-{m}" for m in (sc.METHOD_KS, sc.METHOD_PSI, sc.METHOD_JENSENSHANNON,
                                              sc.METHOD_WASSERSTEIN, sc.METHOD_CHI2, sc.METHOD_PCA_RECONSTRUCTION,
                                              sc.METHOD_MISSING)},
}


def hidden_features(rules: Iterable) -> frozenset:
    """Features whose values anonymization hashes or masks (``anonymization.rules``): the pages
    draw their bars but never name their categories (a hash is still a pseudonymous id)."""
    return frozenset(r.attribute[len(sc.ML_FEATURE_PREFIX):] for r in rules
                     if r.attribute.startswith(sc.ML_FEATURE_PREFIX) and r.action in ("hash", "mask"))


def page_options(config, offline: bool = False) -> "PageOptions":
    """The pages' options for a processor :class:`~otel_ml_processor.config.Config`."""
    return PageOptions(docs_url=docs_url_from_env(), hidden_features=hidden_features(config.anonymization.rules),
                       offline=offline, stale_after=None if offline else STALE_INTERVALS * config.compute.interval)


def docs_url_from_env() -> str:
    base = os.environ.get(sc.ENV_DOCS_URL, "").strip() or DEFAULT_DOCS_URL
    return base if base.endswith("/") else base + "/"


@dataclass(frozen=True)
class PageOptions:
    docs_url: str = DEFAULT_DOCS_URL
    #: features whose category names are not shown (anonymization hashes or masks their values)
    hidden_features: frozenset = field(default_factory=frozenset)
    #: an offline report: no links to other pages of the processor
    offline: bool = False
    #: "now" for "computed N s ago" (None: the clock)
    now: Optional[float] = None
    #: seconds after which a snapshot is marked stale (None: never, as in an offline report)
    stale_after: Optional[float] = None


# --- small pieces ---------------------------------------------------------------------------------

def _e(s: object) -> str:
    return escape(str(s), quote=True)


def _def(o: PageOptions, key: str, text: str = "?") -> str:
    anchor = ANCHORS.get(key, ANCHORS["drift"] if key.startswith("method:") else key)
    return (f'<a class="def" href="{_e(o.docs_url)}metrics.md#{_e(anchor)}" title="definition" '
            f'rel="noreferrer">{text}</a>')


def _pct(v: Optional[float]) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.2f} %"


def _duration(seconds: float) -> str:
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200
            else f"{seconds / 3600:.1f} h")


def _when(ts: Optional[float], now: float) -> str:
    if ts is None:
        return "—"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return f'{stamp} <span class="muted">({_duration(max(0.0, now - ts))} ago)</span>'


def is_stale(s: ModelSnapshot, now: float, options: "PageOptions") -> bool:
    """Older than ``options.stale_after``: its figures are the last its replica computed, and
    that replica may be down."""
    return options.stale_after is not None and s.computed_at is not None and now - s.computed_at > options.stale_after


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(CSP)}\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>{body}"
            "<footer>otel-ml: aggregates of the window and the reference only (no row, no id).</footer>"
            "</main></body></html>\n")


def _model_href(model: str, version: Optional[str] = None, prefix: str = "") -> str:
    href = f"{prefix}models/{quote(model, safe='')}"
    return href + (f"?version={quote(version, safe='')}" if version is not None else "")


# --- drift ordering -------------------------------------------------------------------------------

def _default_threshold(method: str) -> float:
    if method == sc.METHOD_PCA_RECONSTRUCTION:
        return MULTIVARIATE_THRESHOLD
    test = builtin_tests().get(method)
    return test.default_threshold if test is not None else 1.0


def _is_pvalue(d) -> bool:
    return d.pvalue is not None


def movement(d) -> float:
    """How far a drift result moved relative to its threshold (≥ 1: at or past it).

    Distance methods: score ÷ threshold. P-value methods: log(q) ÷ log(threshold), with the
    q-value when there is one, else the p-value. Without a threshold in the result (older
    snapshots), the method's default threshold.
    """
    threshold = getattr(d, "threshold", None)
    if threshold is None or not math.isfinite(threshold) or threshold <= 0:
        threshold = _default_threshold(d.method)
    if _is_pvalue(d):
        q = getattr(d, "qvalue", None)
        p = q if q is not None else d.pvalue
        if threshold >= 1:
            return 0.0
        return math.log(max(p, 1e-300)) / math.log(threshold)
    return d.score / threshold if threshold > 0 else d.score


def drift_order(drift: Iterable) -> list:
    """Detected first, then by how far they moved (:func:`movement`), then by name."""
    return sorted(drift, key=lambda d: (not d.detected, -movement(d), d.feature))


# --- index ----------------------------------------------------------------------------------------

def _flagged(m) -> list:
    return [d for d in drift_order(m.drift) if d.detected]


def _flag_text(m, limit: int = 6) -> str:
    flagged = _flagged(m)
    if not flagged:
        return '<span class="ok">nothing</span>'
    # a missing-value detection is named as such: "zip (missing)" is a broken pipe, not a shift
    names = [d.feature + (" (missing)" if d.method == sc.METHOD_MISSING else "") for d in flagged]
    shown = ", ".join(_e(n) for n in names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f'<span class="flag">drift: {shown}</span>'


def render_index(snapshots: list, options: PageOptions = PageOptions()) -> str:
    """``/``: every model version with a computed snapshot (a model's latest version first)."""
    now = time.time() if options.now is None else options.now
    rows = []
    latest_seen: set = set()
    owners = any(s.owner for s in snapshots)   # several replicas: who computed each version
    for s in snapshots:
        m = s.metrics
        first = s.model not in latest_seen
        latest_seen.add(s.model)
        link = _model_href(s.model) if first else _model_href(s.model, s.version)
        name = f'<a href="{_e(link)}">{_e(s.model)}</a>' if not options.offline else _e(s.model)
        stale = is_stale(s, now, options)
        rows.append(
            f'<tr data-model="{_e(s.model)}" data-version="{_e(s.version)}" data-owner="{_e(s.owner or "")}" '
            f'data-stale="{int(stale)}"><td>{name}</td>'
            f"<td>{_e(s.version)}{'' if first else ' <span class=muted>(older)</span>'}</td>"
            f'<td class="num">{number(m.window_predictions)}</td><td class="num">{number(m.window_labeled)}</td>'
            f'<td class="num">{_pct(m.ood_ratio)}</td><td>{_when(s.computed_at, now)}'
            + (' <span class="flag">stale</span>' if stale else "") + "</td>"
            + (f"<td>{_e(s.owner or '—')}</td>" if owners else "") + f"<td>{_flag_text(m)}</td></tr>")
    table = ("<p class=muted>No model has been computed yet: the first predictions create a model's window; its metrics "
             "appear after the next compute cycle.</p>" if not rows else
             '<div class="scroll"><table><thead><tr><th>model</th><th>version</th>'
             f'<th class="num">window{_def(options, "window")}</th><th class="num">labeled{_def(options, "window")}</th>'
             f'<th class="num">OOD{_def(options, "ood")}</th><th>last compute</th>'
             + ("<th>computed by</th>" if owners else "")
             + f'<th>flagged now{_def(options, "drift_detected")}</th></tr></thead><tbody>'
             + "".join(rows) + "</tbody></table></div>")
    return _page("otel-ml models", f"<h1>otel-ml: models</h1>{table}")


# --- one model ------------------------------------------------------------------------------------

def _ood_sub(m: object) -> str:
    """Under the OOD ratio: the floor a stable window of this size stays under (docs/metrics.md
    "OOD floor"; absent from snapshots written before it existed)."""
    floor = getattr(m, "ood_ratio_floor", None)
    return "of the window" if floor is None else f"of the window; stable up to {_pct(floor)}"


def _collecting(m) -> Optional[str]:
    """"collecting the reference: 200 of 1000" while a first_n reference fills (None once it is
    complete, with a reference file, and in snapshots written before the counts existed)."""
    have, target = getattr(m, "reference_predictions", None), getattr(m, "reference_target", None)
    if have is None or target is None or have >= target:
        return None
    return f"collecting the reference: {number(have)} of {number(target)}"


def _cards(s: ModelSnapshot, now: float, o: PageOptions) -> str:
    m = s.metrics
    flagged = _flagged(m)
    collecting = _collecting(m)
    cards = [
        ("window", number(m.window_predictions), collecting or "predictions", "window"),
        ("labeled", number(m.window_labeled), "with a true label", "window"),
        ("OOD", _pct(m.ood_ratio), _ood_sub(m), "ood"),
        ("drift", f"{len(flagged)} flagged" if flagged else "none", f"of {len(m.drift)} tests", "drift_detected"),
    ]
    out = ['<div class="cards">']
    for title, value, sub, key in cards:
        cls = ' class="flag"' if title == "drift" and flagged else ""
        out.append(f'<div class="card"><span class="muted">{title}{_def(o, key)}</span><b{cls}>{value}</b>'
                   f'<span class="muted">{sub}</span></div>')
    out.append("</div>")
    return "".join(out)


def _drift_section(s: ModelSnapshot, o: PageOptions) -> str:
    m = s.metrics
    hist = getattr(m, "feature_histograms", {}) or {}
    ood = m.feature_ood_ratio
    rows = []
    # the missing-value tests have a section of their own (_missing_section)
    for i, d in enumerate(drift_order(x for x in m.drift if x.method != sc.METHOD_MISSING)):
        q = getattr(d, "qvalue", None)
        threshold = getattr(d, "threshold", None)
        h = hist.get(d.feature)
        chart = histogram_svg(h, hidden=d.feature in o.hidden_features) if h is not None else ""
        det = '<span class="flag">yes</span>' if d.detected else '<span class="muted">no</span>'
        rows.append(
            f'<tr id="f-{i}" data-feature="{_e(d.feature)}" data-method="{_e(d.method)}" data-score="{d.score!r}" '
            f'data-detected="{int(bool(d.detected))}"><td>{_e(d.feature)}</td><td>{det}</td><td>{chart}</td>'
            f'<td>{_e(d.method)}{_def(o, "method:" + d.method)}</td><td class="num">{number(d.score)}</td>'
            f'<td class="num">{number(threshold)}</td><td class="num">{number(d.pvalue, 3)}</td>'
            f'<td class="num">{number(q, 3)}</td><td class="num">{_pct(ood.get(d.feature))}</td></tr>')
    collecting = _collecting(m)
    if not rows and collecting:
        return (f'<h2 id="drift">Drift</h2><p class="muted" data-collecting="{m.reference_predictions}">'
                f"{_e(collecting.capitalize())}. Drift and OOD begin once it is complete; performance "
                "needs only labels.</p>")
    if not rows:
        return ('<h2 id="drift">Drift</h2><p class="muted">No drift yet: the model version has no reference '
                "(the first predictions become it) or no window.</p>")
    legend = ('<p class="legend muted">chart: the reference\'s bins<span class="ref"></span>reference'
              '<span class="win"></span>window<span class="ood"></span>window outside the reference (OOD)'
              f'{_def(o, "histogram", "how the bins are made")}</p>')
    return (f'<h2 id="drift">Drift{_def(o, "drift")}</h2>'
            '<p class="muted">Sorted by how far each test moved relative to its threshold; detected first.</p>'
            + legend + '<div class="scroll"><table><thead><tr><th>feature</th><th>detected</th>'
            '<th>reference vs window</th><th>method</th><th class="num">score</th>'
            f'<th class="num">threshold{_def(o, "drift_detected")}</th><th class="num">p-value</th>'
            f'<th class="num">q-value{_def(o, "drift_detected")}</th><th class="num">OOD{_def(o, "ood")}</th>'
            '</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _missing_section(s: ModelSnapshot, o: PageOptions) -> str:
    """Each input feature's missing share in the window beside its reference's, and the test."""
    m = s.metrics
    ratio = getattr(m, "feature_missing_ratio", None) or {}
    if not ratio:
        return ""
    ref = getattr(m, "feature_missing_reference", None) or {}
    tests = {d.feature: d for d in m.drift if d.method == sc.METHOD_MISSING}
    order = sorted(ratio, key=lambda f: (not getattr(tests.get(f), "detected", False), -ratio[f], f))
    rows = []
    for f in order:
        d = tests.get(f)
        det = '<span class="flag">yes</span>' if d is not None and d.detected else '<span class="muted">no</span>'
        rows.append(
            f'<tr data-missing-feature="{_e(f)}" data-ratio="{ratio[f]!r}" data-detected="{int(bool(d and d.detected))}">'
            f'<td>{_e(f)}</td><td>{det}</td><td class="num">{_pct(ratio[f])}</td><td class="num">{_pct(ref.get(f))}</td>'
            f'<td class="num">{number(None if d is None else d.pvalue, 3)}</td>'
            f'<td class="num">{number(None if d is None else d.qvalue, 3)}</td></tr>')
    return (f'<h2 id="missing">Missing values{_def(o, "missing")}</h2>'
            '<p class="muted">Rows with no value (absent, null, NaN), in the window and in the reference; a change '
            "of that share is tested (Fisher exact, in the drift tests' Benjamini-Hochberg family).</p>"
            '<div class="scroll"><table><thead><tr><th>feature</th><th>detected</th>'
            '<th class="num">window</th><th class="num">reference</th><th class="num">p-value</th>'
            f'<th class="num">q-value{_def(o, "drift_detected")}</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _interval_of(m, metric: str) -> tuple:
    """(lower, upper) of ``ModelMetrics.performance_interval`` when present, in either shape:
    ``{metric: (lower, upper)}`` or ``{(metric, "lower"|"upper"): value}``."""
    iv = getattr(m, "performance_interval", None) or {}
    v = iv.get(metric)
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return v[0], v[1]
    if isinstance(v, dict):
        return v.get("lower"), v.get("upper")
    return iv.get((metric, "lower")), iv.get((metric, "upper"))


def _estimate_interval(m, metric: str) -> str:
    """"lower – upper" of ``ModelMetrics.estimated_performance_interval`` ("—" when absent)."""
    iv = getattr(m, "estimated_performance_interval", None) or {}
    lo, hi = iv.get((metric, sc.BOUND_LOWER)), iv.get((metric, sc.BOUND_UPPER))
    return f"{number(lo)} – {number(hi)}" if lo is not None and hi is not None else "—"


def _performance_section(s: ModelSnapshot, o: PageOptions) -> str:
    m = s.metrics
    metrics = list(dict.fromkeys([*m.performance, *m.estimated_performance]))
    if not metrics:
        return (f'<h2 id="performance">Performance{_def(o, "performance")}</h2><p class="muted">No labeled row and no '
                "estimate yet: performance needs true labels; the label-free estimate needs a reference (with "
                "class probabilities for a multi-class model, with labels for a regression model).</p>")
    rows = []
    for k in metrics:
        v = m.performance.get(k)
        lo, hi = _interval_of(m, k)
        band = interval_svg(v, lo, hi) if v is not None and 0 <= v <= 1 else ""
        interval = f"{number(lo)} – {number(hi)}" if lo is not None or hi is not None else "—"
        rows.append(f'<tr data-metric="{_e(k)}"><td>{_e(k)}</td><td class="num">{number(v)}</td>'
                    f'<td class="num">{interval}</td><td>{band}</td>'
                    f'<td class="num">{number(m.estimated_performance.get(k))}</td>'
                    f'<td class="num">{_estimate_interval(m, k)}</td></tr>')
    return (f'<h2 id="performance">Performance{_def(o, "performance")}</h2>'
            f'<p class="muted">On the {number(m.window_labeled)} rows of the labeled window; the estimate needs no label.</p>'
            '<div class="scroll"><table><thead><tr><th>metric</th><th class="num">labeled window</th>'
            f'<th class="num">95 % interval{_def(o, "performance_interval")}</th><th></th>'
            f'<th class="num">estimated (CBPE, DLE){_def(o, "estimated_performance")}</th>'
            f'<th class="num">estimate ± 3 SE{_def(o, "estimated_performance_interval")}</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _fairness_section(s: ModelSnapshot, o: PageOptions) -> str:
    m = s.metrics
    pvalues = getattr(m, "fairness_pvalue", None) or {}
    attrs = sorted({a for a, _ in m.fairness} | {a for a, _ in m.group_predictions})
    if not attrs:
        return ""
    out = [f'<h2 id="fairness">Fairness{_def(o, "fairness")}</h2>']
    for attr in attrs:
        out.append(f"<h3>{_e(attr)}</h3>")
        fair = sorted((k, v) for (a, k), v in m.fairness.items() if a == attr)
        if fair:
            out.append('<div class="scroll"><table><thead><tr><th>metric</th><th class="num">value</th>'
                       '<th class="num">p-value</th></tr></thead><tbody>')
            for k, v in fair:
                out.append(f'<tr><td>{_e(k)}</td><td class="num">{number(v)}</td>'
                           f'<td class="num">{number(pvalues.get((attr, k)), 3)}</td></tr>')
            out.append("</tbody></table></div>")
        groups = sorted({g for a, g in m.group_predictions if a == attr})
        metrics = (sc.GROUP_SELECTION_RATE, sc.GROUP_ACCURACY, sc.GROUP_TPR, sc.GROUP_FPR)
        out.append(f'<div class="scroll"><table><thead><tr><th>group{_def(o, "group")}</th><th class="num">rows</th>'
                   + "".join(f'<th class="num">{k}</th>' for k in metrics) + "</tr></thead><tbody>")
        for g in groups:
            out.append(f"<tr><td>{_e(g)}</td><td class=\"num\">{number(m.group_predictions.get((attr, g)))}</td>"
                       + "".join(f'<td class="num">{number(m.group_performance.get((attr, g, k)))}</td>' for k in metrics)
                       + "</tr>")
        out.append("</tbody></table></div>")
    return "".join(out)


def _quality_section(s: ModelSnapshot, o: PageOptions) -> str:
    dq = s.metrics.data_quality
    if not dq:
        return ""
    rows = "".join(f'<tr><td>{_e(f)}</td><td>{_e(i)}</td><td class="num">{number(n)}</td></tr>'
                   for (f, i), n in sorted(dq.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f'<h2 id="quality">Data quality{_def(o, "data_quality")}</h2><div class="scroll"><table><thead><tr>'
            '<th>feature</th><th>issue</th><th class="num">rows in the window</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _stale_note(s: ModelSnapshot, now: float, o: PageOptions) -> str:
    if s.computed_at is None or o.stale_after is None or not is_stale(s, now, o):
        return ""
    who = (f"the replica that computed it, {_e(s.owner)}, may be down or no longer own this version"
           if s.owner else "the processor's compute cycle may be stuck or failing (see its log)")
    return (f'<p class="flag" id="stale" data-stale="1">Stale: computed {_duration(now - s.computed_at)} ago, '
            f"more than {_duration(o.stale_after)} ({STALE_INTERVALS} compute intervals): {who}. These are its last figures.</p>")


def render_model(s: ModelSnapshot, versions: Iterable[str] = (), options: PageOptions = PageOptions()) -> str:
    """One model version's page (``/models/<name>``; the same page is the offline report)."""
    now = time.time() if options.now is None else options.now
    o = options
    others = [v for v in versions if v != s.version]
    nav = ""
    if not o.offline:
        links = " ".join(f'<a href="{_e(_model_href(s.model, v, "../"))}">{_e(v)}</a>' for v in others)
        nav = ('<nav><a href="../">all models</a>' + (f' · other versions: {links}' if links else "") + "</nav>")
    owner = f' · computed by <span data-owner="{_e(s.owner)}">{_e(s.owner)}</span>' if s.owner else ""
    took = f" in {s.compute_seconds:.3f} s" if s.compute_seconds is not None else ""
    head = (f"{nav}<h1>{_e(s.model)} <span class=\"muted\">version {_e(s.version)}</span></h1>"
            f'<p class="muted">last compute: {_when(s.computed_at, now)}{took}{owner}'
            + (" · offline report" if o.offline else "") + "</p>" + _stale_note(s, now, o))
    body = (head + _cards(s, now, o) + _drift_section(s, o) + _missing_section(s, o) + _performance_section(s, o) + _fairness_section(s, o)
            + _quality_section(s, o))
    return _page(f"{s.model} {s.version} · otel-ml", body)


def render_not_found(model: str, version: Optional[str], known: list) -> str:
    what = f"model {_e(model)}" + (f" version {_e(version)}" if version is not None else "")
    items = "".join(f'<li><a href="{_e(_model_href(m, None, "../"))}">{_e(m)}</a></li>' for m in known)
    return _page("not found · otel-ml", f'<nav><a href="../">all models</a></nav><h1>No computed metrics for {what}</h1>'
                 + (f"<p>Models with metrics:</p><ul>{items}</ul>" if items else ""))
