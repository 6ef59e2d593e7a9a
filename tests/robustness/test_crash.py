"""Crash safety: the real `sluicegate run` (a subprocess of the console script) SIGKILLed at several points,
then rerun for the same date; the final tables must equal those of an uninterrupted run.

The kill comes from the run's fault plan (the hidden test option `--test-kill-at <stage>[:<n>]`, a
RunSpec field, see processors/faults.py): the process SIGKILLs itself at that stage boundary, so the
point is exact, not a timing guess. Tickets only, one label task, no fields, and the small model also
as the large tier with thresholds 0 (nothing escalates), and one Prefect server for all runs (instead of
an embedded one per run), to keep each run short.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import SENTIMENT_RUN
from tests.robustness.conftest import DATE, run

TABLES = ("results", "labels", "fields", "errors", "manifest")

CONFIG = SENTIMENT_RUN + """
[small]
model = "gemma3-270m"
threads = 1
parallel_sequences = 4
[large]
model = "gemma3-270m"
threads = 1
parallel_sequences = 4
[thresholds.sentiment]
small = 0.0
large = 0.0
"""

TICKETS = ["My parcel never arrived, I am furious.", "Thanks, the refund came through quickly!",
           "Can you tell me the opening hours?", "The app crashes every time I log in.",
           "Great service, very happy.", "I want to change my delivery address."]


def make_inbox(root: Path) -> Path:
    """A config, and a day of two ticket exports (8 tickets and 2 bad records), under root."""
    day = root / "inbox" / "tickets" / DATE
    day.mkdir(parents=True)
    lines = [json.dumps({"id": f"T-{i}", "body": body}) for i, body in enumerate(TICKETS)]
    lines.insert(3, '{"id": "T-x", "body": broken json')
    (day / "export.jsonl").write_text("\n".join(lines) + "\n")
    (day / "form.csv").write_text('id,body\nC-1,Where is my invoice?\nC-2,""\nC-3,I love the new app\n')
    config = root / "sluicegate.toml"
    config.write_text(CONFIG)
    return config


def tables(out: Path) -> dict[str, pl.DataFrame]:
    """Each table as analysts read it (the readers' glob), without what differs between runs by design."""
    frames = {}
    for table in TABLES:
        df = pl.read_parquet(out / table / "**" / "*.parquet", hive_partitioning=True)
        drop = [c for c, t in df.schema.items() if c == "run_id" or c.endswith("_seconds") or t == pl.Datetime]
        df = df.drop(drop)
        floats = [c for c, t in df.schema.items() if t in (pl.Float32, pl.Float64)]
        df = df.with_columns(pl.col(floats).round(4))  # same batches, same model: equal up to float noise
        frames[table] = df.sort(sorted(c for c, t in df.schema.items() if t.is_numeric() or t == pl.String))
    return frames


def assert_readable_and_clean(out: Path) -> None:
    """Every file the readers' glob sees is a whole Parquet file; temporary ones are hidden from it."""
    for path in out.rglob("*.parquet"):
        assert not path.name.startswith("."), path
        pl.read_parquet(path)  # a half-written file would fail here
    for path in out.rglob("*"):
        if path.is_file() and path.suffix == ".tmp":
            assert path.name.startswith("."), path  # leftovers of a killed write: dot-files, never matched


def assert_same_tables(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    for table in TABLES:
        assert got[table].columns == want[table].columns, table
        if not got[table].equals(want[table]):  # name the rows that differ, not two truncated frames
            extra, lost = (a.join(b, on=a.columns, how="anti", nulls_equal=True).to_dicts()
                           for a, b in ((got[table], want[table]), (want[table], got[table])))
            pytest.fail(f"{table}: rows not wanted {extra[:3]}; wanted rows missing {lost[:3]}")
    uris = got["results"]["uri"].to_list() + got["errors"]["uri"].to_list()
    assert len(uris) == len(set(uris)), "a document has more than one row"
    assert got["manifest"]["uri"].n_unique() == got["manifest"].height


@pytest.mark.slow
def test_killed_runs_rerun_to_the_same_tables(tmp_path, prefect_api):
    # One folder for both (uris and the configuration hash hold its path): the uninterrupted run first.
    config = make_inbox(tmp_path)
    out = tmp_path / "out"
    done = run(config, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    want = tables(out)
    assert want["results"].height == 8 and want["errors"].height == 2
    shutil.rmtree(out)

    # Each killed run starts where the previous one died; then an uninterrupted rerun must repair it all.
    # inference dies with the models loaded, nothing written; write:2 with two partitions staged (hidden temp
    # files), nothing renamed into place; commit:2 with two of the files renamed and the rest (the manifest
    # last) not. (A kill at ingest is the same as at inference for the tables: nothing is written before.)
    for kill_at in ("inference", "write:2", "commit:2"):
        killed = run(config, prefect_api, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.returncode, killed.stderr[-2000:])
        assert_readable_and_clean(out)
    written = {t for t in TABLES if list((out / t).rglob("*.parquet"))}
    assert len(written) == 2 and "manifest" not in written, written  # died mid-commit, manifest last
    done = run(config, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["invariant_ok"] and summary["n_inputs"] == 10
    assert_same_tables(tables(out), want)

    # On a finished date, outcomes that flip: a --reprocess with another configuration (every export now
    # too_large: the tickets move from results to errors) killed mid-commit, one input's move half done.
    # The operator goes back to the first configuration: the next run finishes the killed commit first,
    # then (nothing is done with this configuration any more) recomputes, and is killed after all its
    # writes (finish: the runs row not written). A plain rerun then finds everything done and keeps it.
    flipped = config.with_name("too_small.toml")
    flipped.write_text(config.read_text() + "[tickets]\nmax_bytes = 10\n")
    killed = run(flipped, prefect_api, "commit:1", "--reprocess")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert_readable_and_clean(out)
    assert list((out / "_commits").rglob("*.json")), "the killed commit left its journal"
    killed = run(config, prefect_api, "finish")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not list((out / "_commits").rglob("*.json"))
    assert_same_tables(tables(out), want)
    done = run(config, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["invariant_ok"] and summary["n_skipped"] == 10
    assert_same_tables(tables(out), want)
