"""README's promises that a test can hold: the example configuration of "Your own inbox, labels and fields"
runs as written (with --inbox and --out pointing here)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import FIXTURE_DATE, FIXTURES

ROOT = Path(__file__).resolve().parent.parent


def _own_data_config() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Your own inbox, labels and fields"):]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_own_data_example_configuration_runs(tmp_path):
    (tmp_path / "sluicegate.toml").write_text(_own_data_config(), encoding="utf-8")
    (tmp_path / "models").mkdir()  # the registry: an empty one until the first fine-tuning
    # Two fixture tickets in the example's column names (title, description, opened_at).
    inbox = tmp_path / "inbox" / "tickets" / FIXTURE_DATE
    inbox.mkdir(parents=True)
    rows = [json.loads(line) for line in
            (FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl").read_text().splitlines()[:2]]
    inbox.joinpath("export.jsonl").write_text("".join(json.dumps(
        {"ticket_id": r["ticket_id"], "title": r["subject"], "description": r["body"], "opened_at": r["created_at"]})
        + "\n" for r in rows))
    # As a user types it: no Prefect server, so the run starts its embedded one (the one test that does).
    done = subprocess.run([str(Path(sys.executable).parent / "sluicegate"), "run", "--date", FIXTURE_DATE,
                           "--inbox", str(tmp_path / "inbox"), "--out", str(tmp_path / "out"), "--sources",
                           "tickets"], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "inputs 2 = results 2 + errors 0" in done.stdout
    results = pl.read_parquet(tmp_path / "out" / "results" / "**" / "*.parquet", hive_partitioning=True)
    assert sorted(results["source_id"].to_list()) == ["T-1001", "T-1002"]  # the mapped id column
    labels = pl.read_parquet(tmp_path / "out" / "labels" / "**" / "*.parquet", hive_partitioning=True)
    priority = labels.filter(pl.col("task") == "priority")
    assert priority.height == 2 and priority["label"].is_in(["low", "normal", "urgent"]).all()
