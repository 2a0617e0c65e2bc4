"""A reference file named in the config (issue 6): drift against it, and a mismatch at start."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
from scipy.stats import binom, chi2_contingency, ks_2samp, norm

from otel_ml import semconv as sc
from tests.support import ProcessorProcess, grpc_export, otel_ml_command, otlp_logs_request, prediction, wait_for

pytestmark = pytest.mark.e2e


def test_drift_against_a_csv_reference_and_mismatch_is_an_error_at_start(tmp_path):
    rng = np.random.default_rng(3)
    ref_x = rng.normal(0, 1, 400)
    ref_plan = rng.choice(["free", "pro"], 400)
    (tmp_path / "reference.csv").write_text("x,plan\n" + "".join(f"{float(x)!r},{p}\n" for x, p in zip(ref_x, ref_plan)))
    models = [{"name": "ref", "reference": {"path": "reference.csv"}}]   # drift: auto (<= 1000 rows: ks, chi2)
    win_x = rng.normal(0.4, 1, 300)
    win_plan = rng.choice(["free", "pro", "team"], 300, p=[0.4, 0.4, 0.2])
    with ProcessorProcess(tmp_path, models=models) as proc:
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [prediction("ref", f"p{i}", {"x": float(win_x[i]), "plan": str(win_plan[i])}) for i in range(300)]))
        ks = wait_for(lambda: proc.sample("ml_drift_score", {"model": "ref", "feature": "x", "method": "ks"}),
                      what="ks against the file reference")
        assert math.isclose(ks, ks_2samp(ref_x, win_x).statistic, rel_tol=1e-9)
        cats = sorted(set(ref_plan) | set(win_plan))
        table = [[int((ref_plan == c).sum()) for c in cats], [int((win_plan == c).sum()) for c in cats]]
        chi2 = chi2_contingency(table, correction=False)
        assert math.isclose(proc.sample("ml_drift_score", {"model": "ref", "feature": "plan", "method": "chi2"}),
                            chi2.statistic, rel_tol=1e-9)
        assert math.isclose(proc.sample("ml_drift_pvalue", {"model": "ref", "feature": "plan", "method": "chi2"}),
                            chi2.pvalue, rel_tol=1e-9)
        assert proc.sample("ml_ood_ratio", {"model": "ref"}) is not None
        # the floor beside it (docs/metrics.md "OOD floor"): plan has no category seen once, x's
        # extremes stand apart (min(L / n, 2 / (n + 1)) with L = 0, 1 or 2), defaults alpha 0.01, margin 0.1
        xs = np.sort(ref_x)
        left_out = int(xs[0] < xs[1] - 0.1 * (xs[-1] - xs[1])) + int(xs[-1] > xs[-2] + 0.1 * (xs[-2] - xs[0]))
        p = min(left_out / 400, 2 / 401)
        p_up = p + norm.isf(0.005) * math.sqrt(p / 400)
        assert math.isclose(proc.sample(sc.M_OOD_RATIO_FLOOR, {"model": "ref"}), binom.ppf(0.995, 300, p_up) / 300,
                            rel_tol=1e-12)
    # The file changes under the stored data: the processor refuses to start, naming the columns.
    (tmp_path / "reference.csv").write_text("x,age\n1.0,30\n2.0,40\n")
    result = subprocess.run(otel_ml_command() + ["processor", "--config", str(proc.config_path)],
                            capture_output=True, text=True, timeout=60, env=proc.env, cwd=tmp_path)
    assert result.returncode == 2
    assert "plan" in result.stderr and "age" in result.stderr
