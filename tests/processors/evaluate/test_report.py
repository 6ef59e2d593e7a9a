"""report.md, summary.json, outcomes.parquet and the plots of a real evaluation."""

import json

import polars as pl
import pytest

from processors.evaluate import write_report
from processors.evaluate.report import recall_table
from processors.evaluate.summary import ItemSummary, TierQuality
from processors.routing import FIELDS_KEY


@pytest.mark.slow
def test_report_and_plots_are_written(evaluation, tmp_path):
    paths = write_report(evaluation, tmp_path / "eval", extra=["a note for the reader"])
    report = paths["report"].read_text()
    for heading in ("## Task `category`", "## Task `intent`", "## Task `sentiment`", "## All fields together",
                    "## Cost and speed", "## Calibration", "## Thresholds", "a note for the reader"):
        assert heading in report
    assert "| cascade (configured thresholds) |" in report
    assert report.count("| recall of gold label | items |") == 3  # one per label task
    back = pl.read_parquet(paths["outcomes"])
    assert back.equals(evaluation.outcomes)
    for key in ("category", "intent", "sentiment", FIELDS_KEY):
        for kind in ("reliability", "escalation"):
            png = paths[f"{kind}:{key}"]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
            assert png.name in report
    assert json.loads(paths["summary"].read_text())["n_docs"] == 15


def test_the_recall_table_shows_where_a_tier_s_accuracy_comes_from():
    # large: right on the common label only (accuracy 0.8), small: on every label but less often (0.7)
    small = TierQuality(accuracy=0.7, label_support={"negative": 8, "neutral": 2},
                        label_recall={"negative": 0.75, "neutral": 0.5})
    large = TierQuality(accuracy=0.8, label_support={"negative": 8, "neutral": 2},
                        label_recall={"negative": 1.0, "neutral": 0.0})
    table = recall_table(ItemSummary(10, small=small, large=large))
    assert table[0] == "| recall of gold label | items | small alone | large alone |"
    assert table[2:] == ["| negative | 8 | 0.750 | 1.000 |", "| neutral | 2 | 0.500 | 0.000 |"]
    assert recall_table(ItemSummary(10, small=TierQuality(f1=0.9))) == []  # fields: no labels
