"""``otel-ml report``: a model version's page written from the database alone, to attach to an incident.

It needs no running processor: it rebuilds the model's windows from the database exactly as the
processor does at start (``ModelWindows.rebuild``), prepares the reference the same way (the
config's file, or the first N predictions), runs the same engine (``compute_model_metrics``,
which also makes the per-feature histograms), and renders the same page as ``/models/<name>``,
without links to the processor's other pages. It only reads the database (no label expiry, no
retention). On a terminal (stderr is a tty) a progress bar appears once it takes more than a moment.

Example::

    otel-ml report --config otel-ml.yaml --model churn                  # latest version -> churn-<v>.html
    otel-ml report --config otel-ml.yaml --model churn --version 3 --output incident-42.html
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Optional

from otel_ml_processor.config import Config

__all__ = ["write_report", "build_report", "Progress", "ReportError"]


class ReportError(Exception):
    """Nothing to report (unknown model or version); the message says what exists."""


class Progress:
    """Stages as a bar on a terminal, drawn only once the work takes longer than ``delay`` seconds.

    Nothing is written when ``stream`` is not a terminal (a pipe, a file, CI logs).
    """

    BAR = 24

    def __init__(self, stages: list, stream: IO = sys.stderr, delay: float = 0.5, interval: float = 0.1):
        self.stages, self.stream, self.delay, self.interval = stages, stream, delay, interval
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.index, self.started = 0, time.monotonic()
        self.drawn = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._thread = threading.Thread(target=self._tick, name="otel-ml-progress", daemon=True)
            self._thread.start()
        return self

    def stage(self, name: str) -> None:
        """Start stage ``name`` (one of ``stages``)."""
        with self._lock:
            self.index = self.stages.index(name)
        self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        if elapsed < self.delay and not self.drawn:
            return
        with self._lock:
            done = len(self.stages) if final else self.index
            filled = int(self.BAR * done / len(self.stages))
            name = "done" if final else self.stages[self.index]
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.BAR - filled)}] {done}/{len(self.stages)} "
                              f"{name:<28} {elapsed:5.1f}s")
            self.stream.flush()
            self.drawn = True

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.drawn:
            self._draw(final=exc[0] is None)
            self.stream.write("\n")
            self.stream.flush()


STAGES = ["reading the database", "rebuilding the window", "preparing the reference", "computing the metrics",
          "rendering the page"]


def build_report(config: Config, model: str, version: Optional[str] = None, progress: Optional[Progress] = None,
                 now: Optional[float] = None) -> tuple:
    """(version, html) of ``model``'s page computed from the database (the latest version by default)."""
    from otel_ml_processor.compute.engine import compute_model_metrics
    from otel_ml_processor.compute.manager import ModelWindows
    from otel_ml_processor.counters import Caps, Counters
    from otel_ml_processor.export.pages.render import page_options, render_model
    from otel_ml_processor.export.pages.source import ModelSnapshot, latest_version, version_key
    from otel_ml_processor.store.database import Database

    step = progress.stage if progress is not None else (lambda _name: None)
    step(STAGES[0])
    db = Database(config.storage.url)
    try:
        stored = db.model_versions()
        versions = sorted({v for m, v, _ in stored if m == model}, key=version_key, reverse=True)
        if not versions:
            models = sorted({m for m, _, _ in stored})
            raise ReportError(f"model {model!r} has no predictions in {config.storage.url}"
                              + (f" (models: {', '.join(models)})" if models else " (the database is empty)"))
        if version is None:
            version = latest_version(versions)
        if version is None or version not in versions:
            raise ReportError(f"model {model!r} has no version {version!r} (versions: {', '.join(versions)})")
        step(STAGES[1])
        now = time.time() if now is None else now
        caps = Caps(config.limits.max_models, config.limits.max_features_per_model, Counters(),
                    initial_models=[m.name for m in config.models])
        windows = ModelWindows(config, db, caps)
        loaded = windows.load(model, version, now)
        if loaded is None:
            raise ReportError(f"model {model!r} version {version!r} has no stored predictions")
        window, labeled = loaded
        step(STAGES[2])
        ref = windows.reference(model, version, window.task, sorted(window.features))
        for fit in (ref.multiclass, ref.dle) if ref is not None else ():
            if fit is not None:
                fit.result()     # a report shows the label-free estimates: wait for their fit
        step(STAGES[3])
        t0 = time.perf_counter()
        metrics = compute_model_metrics(window, ref, windows.spec(model), labeled=labeled)
        took = time.perf_counter() - t0
        step(STAGES[4])
        snap = ModelSnapshot(model, version, metrics, time.time(), took)
        return version, render_model(snap, versions, page_options(config, offline=True))
    finally:
        db.close()


def write_report(config: Config, model: str, version: Optional[str], output: Optional[str],
                 stream: IO = sys.stderr) -> str:
    """Write the report; returns the path written (default ``<model>-<version>.html``)."""
    with Progress(STAGES, stream) as progress:
        version, html = build_report(config, model, version, progress)
    path = output or f"{_safe(model)}-{_safe(version)}.html"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"
