"""Calibration and thresholds fitted on a real evaluation's outcomes."""

import polars as pl
import pytest

from processors import calibration as cal
from processors.evaluate import choose_thresholds
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
    for key, point in evaluation.operating_points.items():
        assert point.quality >= point.large_quality - 0.01 - 1e-9, key  # the default target
    thresholds, points = choose_thresholds(evaluation, target_escalation=0.5)
    o = evaluation.outcomes
    for key, p in points.items():
        rows = o.filter(pl.col("kind") == "field") if key == FIELDS_KEY else o.filter(pl.col("item") == key)
        invalid = float((~rows["small_valid"]).mean())  # invalid answers escalate at any threshold
        assert p.escalation_rate <= max(0.5, invalid) + 1e-9, key
    assert set(thresholds) == set(evaluation.thresholds)
    ece = evaluation.summary.calibration["small:fields"]
    assert 0.0 <= ece.ece_before <= 1.0
    raw = evaluation.outcomes.filter(pl.col("kind") == "field")
    assert ece.ece_before == pytest.approx(cal.ece(raw["small_conf"].to_list(), raw["small_correct"].to_list()))
