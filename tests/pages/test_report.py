"""``otel-ml report`` pieces: the progress bar (only on a terminal, only after a moment) and the
report on a database written by the processor's own store (no processor running). The command
itself, with a real processor's database, is in test_pages_e2e.py."""

from __future__ import annotations

import io
import time

from otel_ml import semconv as sc
from otel_ml_processor.clean.records import PredictionRecord
from otel_ml_processor.config import parse_config
from otel_ml_processor.report import STAGES, Progress, ReportError, build_report
from otel_ml_processor.store.database import Database


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_only_after_a_moment():
    term = _Terminal()
    with Progress(STAGES, term, delay=0.0, interval=0.01) as p:
        for s in STAGES:
            p.stage(s)
    out = term.getvalue()
    assert "\r[" in out and "computing the metrics" in out and f"{len(STAGES)}/{len(STAGES)} done" in out
    quick = _Terminal()
    with Progress(STAGES, quick, delay=60) as p:       # done before the delay: nothing drawn
        p.stage(STAGES[1])
    assert quick.getvalue() == ""
    pipe = io.StringIO()                                # not a terminal: never drawn
    with Progress(STAGES, pipe, delay=0.0) as p:
        p.stage(STAGES[1])
        time.sleep(0.05)
    assert pipe.getvalue() == ""


def _config(tmp_path, **model):
    return parse_config({"storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
                         "models": [{"name": "m", "reference": {"first_n": 50}, **model}]}, base_dir=str(tmp_path))


def _store(tmp_path, versions=("1", "2")):
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    records = [PredictionRecord(model="m", model_version=v, prediction_id=f"{v}-{i}", task="classification",
                                time=1000.0 + i, features={"x": float(i % 17) + (5.0 if i >= 50 else 0.0),
                                                           # after the 50-row reference, zip goes a third empty
                                                           **({} if i >= 50 and i % 3 == 0 else {"zip": "123"})},
                                output_label="1", score=0.9, extra={sc.ENDUSER_ID: "hashed"})
               for v in versions for i in range(120)]
    db.insert_predictions(records)
    db.close()


def test_report_of_the_latest_version_and_clear_errors(tmp_path):
    _store(tmp_path, versions=("2", "10"))
    config = _config(tmp_path)
    version, html = build_report(config, "m")
    assert version == "10" and "version 10" in html and 'data-feature="x"' in html and '<svg class="hist"' in html
    # the missing-value test: 23 of the window's 70 rows have no zip, none of the reference's 50
    assert '<h2 id="missing">' in html
    assert f'data-missing-feature="zip" data-ratio="{23 / 70!r}" data-detected="1"' in html
    assert '<td class="num">32.86 %</td><td class="num">0.00 %</td>' in html
    assert build_report(config, "m", "2")[0] == "2"
    for model, v, expected in (("m", "7", "versions: 10, 2"), ("nope", None, "models: m")):
        try:
            build_report(config, model, v)
        except ReportError as exc:
            assert expected in str(exc)
        else:
            raise AssertionError("no error")
