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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from flows.deployments import wait_healthy
from tests.conftest import SENTIMENT_RUN, free_port

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")
DATE = "2026-11-20"
TABLES = ("results", "fields", "errors", "manifest")

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


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """One real Prefect server for all the runs of this module: each run would otherwise start its own
    embedded one (about 18 s each on a busy machine). Its own PREFECT_HOME and process group."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        try:
            wait_healthy(url, timeout=300, server=server)
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(f"{e}\n{(home / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def run(config: Path, api: str, kill_at: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    """`sluicegate run` as an operator runs it; its own process group, so nothing it started outlives it."""
    env = dict(os.environ, PREFECT_API_URL=api)
    if kill_at:
        extra = ("--test-kill-at", kill_at, *extra)
    # Output to files, not pipes: a killed run's orphans would hold a pipe open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([SLUICEGATE, "run", "--date", DATE, "--config", str(config), "--json", *extra],
                                stdout=out, stderr=err, text=True, env=env, start_new_session=True)
        try:
            proc.wait(timeout=900)
        finally:
            try:  # what the run started (parse workers) ends with it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


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
        assert got[table].equals(want[table]), (table, got[table], want[table])
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
    # write:2 dies with two of the three data partitions replaced and the manifest not yet written.
    for kill_at in ("ingest", "inference", "write:2"):
        killed = run(config, prefect_api, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.returncode, killed.stderr[-2000:])
        assert_readable_and_clean(out)
    written = {t for t in TABLES if list((out / t).rglob("*.parquet"))}
    assert len(written) == 2 and "manifest" not in written, written  # died mid-write, manifest last
    done = run(config, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["invariant_ok"] and summary["n_inputs"] == 10
    assert_same_tables(tables(out), want)

    # On a finished date: --reprocess killed after the data and before the manifest (write:3), then a
    # rerun killed after all its writes (finish, the runs row not written), then a plain rerun.
    for kill_at, extra in (("write:3", ("--reprocess",)), ("finish", ())):
        killed = run(config, prefect_api, kill_at, *extra)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.returncode, killed.stderr[-2000:])
        assert_readable_and_clean(out)
    done = run(config, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["invariant_ok"]
    assert_same_tables(tables(out), want)
