"""report.md, summary.json, outcomes.parquet and the plots of a real evaluation."""

import json

import polars as pl
import pytest

from processors.evaluate import write_report
from processors.routing import FIELDS_KEY


@pytest.mark.slow
def test_report_and_plots_are_written(evaluation, tmp_path):
    paths = write_report(evaluation, tmp_path / "eval", extra=["a note for the reader"])
    report = paths["report"].read_text()
    for heading in ("## Task `category`", "## Task `intent`", "## Task `sentiment`", "## All fields together",
                    "## Cost and speed", "## Calibration", "## Thresholds", "a note for the reader"):
        assert heading in report
    assert "| cascade (configured thresholds) |" in report
    back = pl.read_parquet(paths["outcomes"])
    assert back.equals(evaluation.outcomes)
    for key in ("category", "intent", "sentiment", FIELDS_KEY):
        for kind in ("reliability", "escalation"):
            png = paths[f"{kind}:{key}"]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
            assert png.name in report
    assert json.loads(paths["summary"].read_text())["n_docs"] == 15
