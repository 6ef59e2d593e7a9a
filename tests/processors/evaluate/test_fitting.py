"""Calibration and thresholds fitted on a real evaluation's outcomes."""

import polars as pl
import pytest

from processors import calibration as cal
from processors.evaluate import choose_thresholds
from processors.evaluate.fitting import fit_rows, judged_rows
from processors.routing import FIELDS_KEY


@pytest.mark.slow
def test_calibration_and_thresholds_from_the_evaluation(evaluation):
    # Fitted for every tier and group; kept only where it lowers held-out ECE (else a note says so).
    assert {"small:fields", "large:fields", "small:category", "large:category"} <= set(
        evaluation.summary.calibration)
    for key, c in evaluation.calibration.items():
        tier, task = key.split(":")
        assert tier in ("small", "large") and c.method == ("isotonic" if task == FIELDS_KEY else "temperature")
    assert set(evaluation.thresholds) >= {"category", "intent", FIELDS_KEY}
    o = fit_rows(evaluation.outcomes)  # chosen on the fit half only
    assert set(evaluation.outcomes["split"].unique()) <= {"fit", "judge", "both"}
    for key, point in evaluation.operating_points.items():
        rows = o.filter(pl.col("kind") == "field") if key == FIELDS_KEY else o.filter(pl.col("item") == key)
        invalid = float((~rows["small_valid"]).mean())
        assert point.escalation_rate <= max(cal.MAX_ESCALATION, invalid) + 1e-9, key  # the default budget
        assert point.evidence, key
        if evaluation.thresholds[key].small == 0 and point.unsure_items:  # 0 only with evidence
            assert point.unsure_large_right < point.unsure_small_right, key
    thresholds, points = choose_thresholds(evaluation, target_escalation=0.5)
    for key, p in points.items():
        rows = o.filter(pl.col("kind") == "field") if key == FIELDS_KEY else o.filter(pl.col("item") == key)
        invalid = float((~rows["small_valid"]).mean())  # invalid answers escalate at any threshold
        assert p.escalation_rate <= max(0.5, invalid) + 1e-9, key
    assert set(thresholds) == set(evaluation.thresholds)
    ece = evaluation.summary.calibration["small:fields"]
    assert 0.0 <= ece.ece_before <= 1.0
    raw = judged_rows(evaluation.outcomes).filter(pl.col("kind") == "field")
    assert ece.ece_before == pytest.approx(cal.ece(raw["small_conf"].to_list(), raw["small_correct"].to_list()))
