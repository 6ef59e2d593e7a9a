"""A night's shards on a real dask.distributed LocalCluster (2 worker processes on 127.0.0.1), against a
local run of the same inbox: the same tables, a worker killed mid-shard, a shard that keeps failing.

The inbox is the bundled fixtures (tickets, PDFs, broken and encrypted files) plus a generated day of 48
bitext tickets in 8 exports. One label task and no escalation keep the model time small: what is tested is
where rows land. A document's answer depends on nothing but the document (issue 13), so the labels must be
the same too, whichever worker and shard a document ran on.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import FIXTURE_DATE, FIXTURES, SENTIMENT_RUN, SHARED_DATA

DAY = date.fromisoformat(FIXTURE_DATE)
# What must be equal between the runs, per table: the row's identity and outcome, and each label.
COMPARED = {"results": ["source", "uri", "doc_id", "source_id"], "labels": ["source", "uri", "task", "label"],
            "errors": ["source", "uri", "doc_id", "stage", "reason", "retriable"],
            "manifest": ["source", "uri", "doc_id", "outcome", "done"]}


@pytest.fixture(scope="module")
def night(tmp_path_factory, prefect_in_process):
    """(root, config path, local tables): the inbox, a dask configuration, and a local run's tables."""
    from flows.engine import close_clients
    from processors.datasets import load_examples, sample, write_ticket_export

    root = tmp_path_factory.mktemp("dask")
    day = root / "inbox"
    for source in ("tickets", "pdf"):
        shutil.copytree(FIXTURES / "inbox" / source / FIXTURE_DATE, day / source / FIXTURE_DATE)
    examples = sample(load_examples(SHARED_DATA / "tickets/bitext/validation.csv"), 48, stratify="category")
    write_ticket_export(examples, day / "tickets" / FIXTURE_DATE / "generated", files=8)
    config = root / "sluicegate.toml"
    # SENTIMENT_RUN ends in its [[tasks]] table: the first line below is the task's sources.
    config.write_text(SENTIMENT_RUN.replace('sources = ["tickets"]', 'sources = ["tickets", "pdf"]') + """
sources = ["tickets", "pdf"]
[thresholds.sentiment]
small = 0.0
large = 0.0
[engine]
kind = "dask"
workers = 2
threads_per_worker = 1
[pdf]
passwords = { "encrypted_with_password.pdf" = "asdfzxcv" }
[tickets.columns."*.jsonl"]
id = "ticket_id"
subject = "subject"
body = "body"
created_at = "created_at"
[tickets.columns."*.csv"]
id = "id"
subject = "title"
body = "message"
created_at = "submitted"
""")
    local = _run(config, root / "local", engine="local")
    assert local["invariant_ok"] and local["n_inputs"] > 48, local
    yield root, config, _tables(root / "local")
    close_clients()


def _run(config: Path, out: Path, **kw) -> dict:
    from flows.nightly import nightly

    state = nightly.with_options(retries=0)(run_date=DAY, config_path=str(config), out=str(out),
                                            return_state=True, **kw)
    return state.result() if state.is_completed() else {"failed": state.message}


def _tables(out: Path) -> dict[str, pl.DataFrame]:
    tables = {}
    for table, columns in COMPARED.items():
        frame = pl.read_parquet(out / table / "**" / "*.parquet", hive_partitioning=True)
        tables[table] = frame.select(columns).sort(columns[:3])
    return tables


def _parts(out: Path, table: str = "results") -> dict[str, set[str]]:
    """source -> the part files' shard names of the night."""
    folder = out / table / f"run_date={FIXTURE_DATE}"
    return {p.name.removeprefix("source="): {f.stem.removeprefix("part-") for f in p.glob("part-*.parquet")}
            for p in folder.glob("source=*")}


def _assert_same_tables(out: Path, local: dict[str, pl.DataFrame]) -> None:
    got = _tables(out)
    for table, frame in local.items():
        assert got[table].height == frame.height, table
        assert got[table].equals(frame), f"{table} differs from the local run"


@pytest.mark.slow
def test_a_night_on_dask_writes_what_a_local_run_writes(night):
    root, config, local = night
    out = root / "dask"
    summary = _run(config, out)
    assert summary.get("invariant_ok"), summary
    _assert_same_tables(out, local)
    assert summary["engine"] == "dask"
    shards = summary["shards"]
    assert [s["shard"] for s in shards] == ["00000", "00001", "00002", "00003"]  # automatic: 2 x 2 threads
    assert all(s["state"] == "completed" for s in shards)
    assert len({s["worker"] for s in shards}) == 2, "both worker processes ran shards"
    files = [p for p in (root / "inbox").rglob("*") if p.is_file()]
    assert sum(s["files"] for s in shards) == len(files) == 19
    # every shard wrote its own part files (even for a source it had no input of), nothing else
    assert _parts(out) == {"tickets": {"00000", "00001", "00002", "00003"}, "pdf": {"00000", "00001", "00002", "00003"}}
    assert _parts(root / "local") == {"tickets": {"00000"}, "pdf": {"00000"}}

    # A rerun on the same cluster: all is done but retriable errors; every row stays; the workers kept their models.
    done = summary["n_inputs"] - int(local["errors"]["retriable"].sum())
    again = _run(config, out)
    assert again["invariant_ok"] and again["n_skipped"] == done, again
    _assert_same_tables(out, local)
    assert {s["most_loads_of_a_model"] for s in again["shards"]} == {1}, "a worker loaded a model twice"

    # Local again on the dask-written date (4 shards' files): the inputs stay on their shards, nothing is lost.
    local_again = _run(config, out, engine="local")
    assert local_again["invariant_ok"] and local_again["n_skipped"] == done, local_again
    assert [s["shard"] for s in local_again["shards"]] == ["00000", "00001", "00002", "00003"]
    _assert_same_tables(out, local)


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_retried_and_nothing_is_lost(night):
    root, config, local = night
    out = root / "killed-once"
    summary = _run(config, out, test_kill_at="inference@00001+once")
    assert summary.get("invariant_ok"), summary
    assert list((out / "_faults").iterdir()), "the shard's worker was killed"
    assert all(s["state"] == "completed" for s in summary["shards"])
    _assert_same_tables(out, local)
    assert not list(out.rglob(".*.tmp")), "no temporary file is left"


@pytest.mark.slow
def test_a_shard_that_keeps_failing_fails_the_run_by_name_and_a_rerun_redoes_only_it(night):
    root, config, local = night
    out = root / "killed-always"
    failed = _run(config, out, test_kill_at="inference@00002")
    assert "failed" in failed
    assert "shard 00002" in failed["failed"] and "inputs:" in failed["failed"], failed["failed"]
    results = pl.read_parquet(out / "results" / "**" / "*.parquet", hive_partitioning=True, include_file_paths="path")
    first_run = set(results["run_id"].unique().to_list())
    assert len(first_run) == 1 and not results["path"].str.contains("part-00002").any(), \
        "the other shards committed; the failed one wrote nothing"

    rerun = _run(config, out)
    assert rerun.get("invariant_ok"), rerun
    _assert_same_tables(out, local)
    results = pl.read_parquet(out / "results" / "**" / "*.parquet", hive_partitioning=True, include_file_paths="path")
    redone = results.filter(pl.col("run_id") == rerun["run_id"])
    assert redone.height and redone["path"].str.contains("part-00002").all(), "only shard 00002's inputs were redone"
    assert rerun["n_skipped"] >= results.height - redone.height, "the other shards' inputs were skipped as done"
