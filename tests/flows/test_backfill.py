"""Backfill, idempotent reruns, reprocess and a failing date: the real flows (the session's Prefect), real models.

A tiny inbox keeps it quick: three tickets (one malformed) per date, one label task, no fields.
"""

import json
import os
from datetime import date

import polars as pl
import pytest

from tests.conftest import SENTIMENT_RUN, write_ticket_days

DATES = [date(2026, 11, d) for d in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, prefect_in_process):
    root = tmp_path_factory.mktemp("backfill")
    write_ticket_days(root, DATES)
    config = root / "sluicegate.toml"
    config.write_text(SENTIMENT_RUN + """
[small]
model = "gemma3-270m"
parallel_sequences = 4
[large]
model = "qwen2.5-coder-1.5b-instruct"
prompt_style = "chatml"
contextual_calibration = false
parallel_sequences = 2
[tickets.columns."*"]
id = "ticket_id"
""")
    return root, str(config)


def _results(root, day: date) -> pl.DataFrame:
    path = root / "out" / "results" / f"run_date={day}" / "source=tickets" / "part-00000.parquet"
    return pl.read_parquet(path).sort("uri")


def _backfill(config, start, end, **kw):
    from flows.backfill import backfill

    return backfill(start=start, end=end, config_path=config, return_state=True, **kw)


@pytest.mark.slow
def test_backfill_rerun_reprocess_and_failing_date(setup):
    root, config = setup
    state = _backfill(config, DATES[0], DATES[1])
    assert state.is_completed(), state.message
    first = {d: _results(root, d) for d in DATES[:2]}
    for d in DATES[:2]:
        assert first[d].height == 2 and first[d]["uri"].n_unique() == 2

    # A rerun of the same range skips everything and changes no row.
    state = _backfill(config, DATES[0], DATES[1])
    assert state.is_completed()
    outcomes = state.result()["outcomes"]
    assert [o["skipped"] for o in outcomes] == [3, 3] and [o["inputs"] for o in outcomes] == [3, 3]
    for d in DATES[:2]:
        assert _results(root, d).equals(first[d])
    runs = pl.read_parquet(root / "out" / "runs" / "**" / "*.parquet", hive_partitioning=True)
    assert runs.height == 4 and runs["invariant_ok"].all()

    # Reprocess replaces the partition: same inputs, new run, no duplicates.
    state = _backfill(config, DATES[0], DATES[0], reprocess=True)
    assert state.is_completed() and state.result()["outcomes"][0]["skipped"] == 0
    again = _results(root, DATES[0])
    assert again["uri"].to_list() == first[DATES[0]]["uri"].to_list()
    assert set(again["run_id"]).isdisjoint(set(first[DATES[0]]["run_id"]))
    errors = pl.read_parquet(root / "out" / "errors" / f"run_date={DATES[0]}" / "**" / "*.parquet")
    assert errors.height == 1 and errors["reason"].to_list() == ["malformed_json"]

    # A date whose partition cannot be written fails; the next date still runs; the failure is named.
    (root / "out" / "results").mkdir(exist_ok=True)
    (root / "out" / "results" / f"run_date={DATES[2]}").write_text("not a folder")
    state = _backfill(config, DATES[2], DATES[3])
    assert state.is_failed() and DATES[2].isoformat() in state.message and DATES[3].isoformat() not in state.message
    assert _results(root, DATES[3]).height == 2


def test_date_lock_excludes_a_second_writer(tmp_path, caplog):
    import logging

    from flows.locks import DateLocked, date_lock

    with date_lock(str(tmp_path), "2026-11-01"):
        with pytest.raises(DateLocked), caplog.at_level(logging.WARNING, logger="sluicegate.progress"):
            with date_lock(str(tmp_path), "2026-11-01", wait_seconds=0.5, poll_seconds=0.1):
                pass
        # Not silent: the waiting run says which process holds the date.
        assert f"run date 2026-11-01 is being written by another run (pid {os.getpid()})" in caplog.text
        with date_lock(str(tmp_path), "2026-11-02", wait_seconds=0.5):
            pass  # other dates are independent
    with date_lock(str(tmp_path), "2026-11-01", wait_seconds=0.5):
        pass  # released on exit


def test_deployments_have_typed_parameters_and_the_schedule(setup):
    _, config = setup
    from flows.deployments import build_deployments
    from flows.nightly import resolve_config

    nightly, backfill, evaluate, finetune = build_deployments(*resolve_config(config))
    assert [d.name for d in (nightly, backfill, evaluate, finetune)] == ["nightly", "backfill", "evaluate", "finetune"]
    for deployment in (evaluate, finetune):  # plain typed fields only: the UI renders them as a form
        for name, prop in deployment._parameter_openapi_schema.properties.items():
            assert "object" not in json.dumps(prop), (deployment.name, name, prop)
    assert finetune._parameter_openapi_schema.properties["train"]["type"] == "array"
    cron = nightly.schedules[0].schedule
    assert cron.cron == "0 2 * * *" and cron.timezone == "UTC"
    props = backfill._parameter_openapi_schema.properties
    assert props["start"]["format"] == "date" and props["reprocess"]["type"] == "boolean"
    assert json.dumps(props["sources"]).count("tickets") >= 1
