"""Reruns that must lose nothing: the real `sluicegate run` (console script, one shared Prefect server) on a
small day of two tickets and one encrypted PDF, rerun the way operators do.

- a password added after the night: the plain rerun decrypts the PDF (encrypted_no_password is not done);
- a malformed SLUICEGATE_PDF_PASSWORDS: the run fails before it writes, saying so, never echoing the value;
- a mistyped or unmounted inbox: the run fails before it writes;
- an empty inbox: the rows of inputs the rerun cannot see are kept and counted; --prune-missing drops
  them, and the summary and the runs row say so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import FIXTURE_DATE, FIXTURES, SENTIMENT_RUN
from tests.robustness.conftest import DATE, run

CONFIG = SENTIMENT_RUN.replace('sources = ["tickets"]', 'sources = ["tickets", "pdf"]') + """
[small]
model = "gemma3-270m"
threads = 1
[large]
model = "gemma3-270m"
threads = 1
[thresholds.sentiment]
small = 0.0
large = 0.0
"""
PASSWORD = {"SLUICEGATE_PDF_PASSWORDS": json.dumps({"locked.pdf": "asdfzxcv"})}


def _tables(out: Path) -> dict[str, pl.DataFrame]:
    return {t: pl.read_parquet(out / t / "**" / "*.parquet", hive_partitioning=True)
            for t in ("results", "errors", "manifest", "runs")}


def _summary(done) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_reruns_keep_what_they_cannot_see_and_retry_what_may_pass_now(tmp_path, prefect_api):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "tickets" / DATE).mkdir(parents=True)
    (inbox / "pdf" / DATE).mkdir(parents=True)
    (inbox / "tickets" / DATE / "export.jsonl").write_text(
        '{"id": "T-1", "body": "My parcel never arrived, I am furious."}\n'
        '{"id": "T-2", "body": "Thanks, the refund came through quickly!"}\n')
    shutil.copy(FIXTURES / "inbox" / "pdf" / FIXTURE_DATE / "encrypted_with_password.pdf",
                inbox / "pdf" / DATE / "locked.pdf")
    config = tmp_path / "sluicegate.toml"
    config.write_text(CONFIG)

    # The night: no password for the PDF yet.
    first = _summary(run(config, prefect_api))
    assert (first["n_results"], first["n_errors"]) == (2, 1)
    errors = _tables(out)["errors"]
    assert errors["reason"].to_list() == ["encrypted_no_password"] and errors["retriable"].all()

    # The password is added; a plain rerun (no --reprocess) opens the PDF; the done tickets are skipped.
    second = _summary(run(config, prefect_api, env=PASSWORD))
    assert (second["n_results"], second["n_errors"], second["n_skipped"]) == (3, 0, 2)
    before = _tables(out)

    # A malformed password variable fails the run before anything is written, and names the variable only.
    bad = run(config, prefect_api, env={"SLUICEGATE_PDF_PASSWORDS": '{"locked.pdf": "hunter2"'})
    assert bad.returncode == 1 and "SLUICEGATE_PDF_PASSWORDS is not valid JSON" in bad.stderr, bad.stderr[-2000:]
    assert "hunter2" not in bad.stderr + bad.stdout

    # A mistyped or unmounted inbox is not "a night without inputs": the run fails, writing nothing.
    inbox.rename(tmp_path / "moved")
    missing = run(config, prefect_api)
    assert missing.returncode == 1 and "does not exist" in missing.stderr, missing.stderr[-2000:]
    after = _tables(out)
    for table in ("results", "errors", "manifest", "runs"):
        assert after[table].equals(before[table]), table

    # An inbox that is there but empty (a retention job ran): the rerun keeps the rows it cannot see.
    inbox.mkdir()
    empty = _summary(run(config, prefect_api, env=PASSWORD))
    assert empty["invariant_ok"] and empty["n_inputs"] == 0
    assert (empty["n_unseen_kept"], empty["n_results"], empty["n_pruned"]) == (3, 3, 0)
    kept = _tables(out)
    assert kept["results"].drop("run_id").sort("uri").equals(before["results"].drop("run_id").sort("uri"))

    # Dropping them is the operator's explicit choice, and the summary and the runs row record it.
    pruned = _summary(run(config, prefect_api, None, "--prune-missing", env=PASSWORD))
    assert pruned["invariant_ok"] and (pruned["n_results"], pruned["n_errors"], pruned["n_pruned"]) == (0, 0, 3)
    final = _tables(out)
    assert final["results"].is_empty() and final["manifest"].is_empty()
    runs = final["runs"].filter(pl.col("run_id") == pruned["run_id"])
    assert runs["n_pruned"].to_list() == [3] and runs["n_unseen_kept"].to_list() == [0]
    assert runs["parameters"][0]["prune_missing"] == "true"
