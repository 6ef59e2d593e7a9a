"""Operations against a real Prefect server process: deployments served by `sluicegate serve`, a backfill
started through the API, a rerun started with `prefect deployment run`, Beam's logs in the run logs.

Everything runs as separate processes, as for a user: `prefect server start` (its own PREFECT_HOME),
`sluicegate serve --api-url` (which runs each flow run in a subprocess), the `prefect` CLI. A tiny
inbox (two tickets and one malformed line per date) and the fixtures' configuration without fields
keep it quick. All processes are killed at the end, their process groups and children too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from flows.alerts import PREFIX
from tests.conftest import FIXTURES, kill_tree, start_prefect_server, start_process, write_ticket_days

BIN = Path(sys.executable).parent
DATES = [date(2026, 11, d) for d in (1, 2, 3)]
TIMEZONE = "Europe/Berlin"


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def _write_inbox_and_config(root: Path) -> Path:
    write_ticket_days(root, DATES)
    # The bundled configuration, with its output here, one task and no fields (quicker), and a time zone.
    text = (FIXTURES / "sluicegate.toml").read_text()
    text, n = re.subn(r'(?m)^root = "[^"]*"', 'root = "out"', text)
    assert n == 1
    text, n = re.subn(r'(?m)^\[models\]\nregistry = "[^"]*"\n', "", text)  # the base model, on purpose
    assert n == 1
    text = re.sub(r"(?m)^\[\[fields\.\w+\]\]\n(?:[^\[\n].*\n)*", "", text)
    text, n = re.subn(r'(?m)^\[\[tasks\]\]\nname = "category"\n(?:[^\[\n].*\n)*', "", text)  # sentiment only
    assert n == 1
    assert "[schedule]" not in text
    text += f'\n[schedule]\ncron = "0 2 * * *"\ntimezone = "{TIMEZONE}"\n'
    config = root / "sluicegate.toml"
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real Prefect server and `sluicegate serve` serving the deployments to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("server")
    config = _write_inbox_and_config(root)
    procs: list[subprocess.Popen] = []
    try:
        # serve picks a new run up sooner (default 10 s)
        api_url, env = start_prefect_server(root, procs, PREFECT_RUNNER_POLL_FREQUENCY="2")
        procs.append(start_process([str(BIN / "sluicegate"), "serve", "--config", str(config), "--api-url", api_url],
                            root / "serve.log", env, root))
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            _wait_for_deployments(procs[1], root / "serve.log")
            yield {"root": root, "config": config, "api_url": api_url, "env": env}
    finally:
        for proc in reversed(procs):
            kill_tree(proc)


def _wait_for_deployments(serve: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert serve.poll() is None, f"sluicegate serve exited:\n{_tail(log)}"
            try:
                client.read_deployment_by_name("nightly/nightly")
                client.read_deployment_by_name("backfill/backfill")
                if "being served" in log.read_text(errors="replace"):
                    return
            except ObjectNotFound:
                pass
            time.sleep(1)
    raise TimeoutError(f"deployments not served within {timeout}s:\n{_tail(log)}")


def _form_problems(schema: dict) -> list[str]:
    """What the UI's parameter form renders badly: objects, nested models ($ref), untyped values."""
    problems = []
    if schema.get("definitions") or schema.get("$defs"):
        problems.append("nested definitions")
    for name, prop in schema["properties"].items():
        variants = prop.get("anyOf", [prop])
        for v in variants:
            if "$ref" in v or v.get("type") in (None, "object"):
                problems.append(f"{name}: {v}")
            if v.get("type") == "array" and v["items"].get("type") not in ("string", "number", "integer"):
                problems.append(f"{name}: array of {v['items']}")
    return problems


def _events(name: str, at_least: int, timeout: float = 60) -> list:
    """The server's events of that name, once at least `at_least` arrived (they are stored asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=EventFilter(event=EventNameFilter(name=[name])), limit=50).events
        if len(events) >= at_least or time.monotonic() > deadline:
            return events
        time.sleep(1)


def _results(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "out" / "results" / "**" / "*.parquet", hive_partitioning=True).sort("uri")


def _runs(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "out" / "runs" / "**" / "*.parquet", hive_partitioning=True)


@pytest.mark.slow
def test_deployments_backfill_through_the_api_and_the_cli(served):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterName
    from prefect.deployments import run_deployment

    root = served["root"]
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly/nightly")
        backfill = client.read_deployment_by_name("backfill/backfill")
    # One run of each deployment at a time; more wait in its queue.
    assert nightly.global_concurrency_limit.limit == backfill.global_concurrency_limit.limit == 1
    # The nightly schedule: cron and the configured time zone.
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 2 * * *", TIMEZONE, True)
    # The form opens with the configuration file and its sources filled in.
    pinned = {"config_path": str(served["config"]), "sources": ["tickets", "pdf"]}
    assert nightly.parameters == pinned and backfill.parameters == pinned
    # The backfill form: dates, a multi-select of sources, a checkbox; no objects or nested models.
    schema = backfill.parameter_openapi_schema
    assert schema["required"] == ["start", "end"]
    props = schema["properties"]
    assert props["start"]["format"] == props["end"]["format"] == "date"
    assert props["reprocess"]["type"] == "boolean"
    assert {"enum": ["tickets", "pdf"], "type": "string"} in [v.get("items") for v in props["sources"]["anyOf"]]
    assert _form_problems(schema) == [] and _form_problems(nightly.parameter_openapi_schema) == []
    assert all(p.get("description") for p in props.values())  # the form explains each field
    with get_client(sync_client=True) as client:  # every flow is served, each with a form the UI can render
        for name in ("evaluate/evaluate", "finetune/finetune"):
            assert _form_problems(client.read_deployment_by_name(name).parameter_openapi_schema) == [], name

    # A 3-day backfill started through the API, as the UI's form does.
    run = run_deployment("backfill/backfill", parameters={"start": "2026-11-01", "end": "2026-11-03"},
                         timeout=600, poll_interval=2)
    assert run.state.is_completed(), f"{run.state}\n{_tail(root / 'serve.log')}"
    assert run.name == "backfill-2026-11-01..2026-11-03"  # found by its dates in the UI
    first = _results(root)
    assert first.group_by("run_date").len().sort("run_date")["len"].to_list() == [2, 2, 2]
    assert first["uri"].n_unique() == 6 and sorted(set(first["run_date"])) == DATES
    errors = pl.read_parquet(root / "out" / "errors" / "**" / "*.parquet", hive_partitioning=True)
    assert errors.height == 3 and set(errors["reason"]) == {"malformed_json"}
    runs = _runs(root)
    assert runs.height == 3 and runs["invariant_ok"].all() and runs["n_inputs"].to_list() == [3, 3, 3]

    # Each night emitted its counts as an event; one malformed line of three is past max_error_rate (25 %),
    # so each night is also degraded. The alert automations exist, created by `serve`.
    with get_client(sync_client=True) as client:
        automations = {a.name for a in client.read_automations()}
    assert {PREFIX + name for name in ("run failed", "night degraded", "night not done",
                                       "no night completed")} <= automations, automations
    completed, degraded = _events("sluicegate.nightly.completed", 3), _events("sluicegate.nightly.degraded", 3)
    assert sorted(e.payload["run_date"] for e in completed) == [d.isoformat() for d in DATES]
    assert all((e.payload["n_inputs"], e.payload["n_errors"], e.payload["n_escalation_failed"]) == (3, 1, 0)
               and "sentiment" in e.payload["escalation_rate"] for e in completed)
    assert len(degraded) == 3 and all("error rate 33% > 25%" in e.payload["reasons"] for e in degraded), \
        [e.payload["reasons"] for e in degraded]

    # Beam's in-process workers log into each date's Prefect run: the small tier's load line.
    with get_client(sync_client=True) as client:
        dates_of_runs = {r.id: r.parameters["run_date"] for r in client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"]))) if r.parameters.get("run_date")}
        logs = client.read_logs(log_filter=LogFilter(name=LogFilterName(any_=["processors.tiers"])))
    with get_client(sync_client=True) as client:
        names = {r.name for r in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"])))}
    assert {f"nightly-{d}" for d in DATES} <= names, names
    logged = {str(dates_of_runs[log.flow_run_id]) for log in logs
              if log.flow_run_id in dates_of_runs and "small tier loaded" in log.message}
    assert logged == {d.isoformat() for d in DATES}, [log.message for log in logs]

    # The same range again, with the command the README gives: everything skipped, no row changed.
    done = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "backfill/backfill", "--param", "start=2026-11-01",
         "--param", "end=2026-11-03", "--watch", "--watch-timeout", "600"],
        capture_output=True, text=True, env=served["env"], cwd=root, timeout=660, check=False)
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout + done.stderr
    again = _results(root)
    assert again.equals(first)
    runs = _runs(root).sort("started_at")
    assert runs.height == 6 and runs["invariant_ok"].all()
    assert runs["n_skipped"].to_list()[3:] == [3, 3, 3] and runs["n_inputs"].to_list()[3:] == [3, 3, 3]

    # The server made the nightly's scheduled runs: 02:00 in the configured time zone.
    with get_client(sync_client=True) as client:
        scheduled = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"])))
    starts = [r.expected_start_time.astimezone(ZoneInfo(TIMEZONE)) for r in scheduled
              if r.deployment_id == nightly.id and r.state and r.state.is_scheduled()]
    assert starts and all((s.hour, s.minute) == (2, 0) for s in starts), starts
    assert min(starts) > datetime.now(ZoneInfo(TIMEZONE))


@pytest.mark.slow
def test_a_late_nightly_run_processes_the_night_it_was_scheduled_for(served):
    """A run scheduled for 00:30 Berlin time on Nov 3 (23:30 UTC on Nov 2) that starts a month late, as a
    late start or a Retry clicked the next morning does: it processes Nov 2, the night before its scheduled
    start in the configured time zone, not the day before it ran (nor Nov 1, the UTC reading)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    scheduled = datetime(2026, 11, 3, 0, 30, tzinfo=ZoneInfo(TIMEZONE))
    run = run_deployment("nightly/nightly", scheduled_time=scheduled, timeout=600, poll_interval=2)
    assert run.state.is_completed(), f"{run.state}\n{_tail(served['root'] / 'serve.log')}"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run.id)
    assert run.expected_start_time == scheduled and run.name == "nightly-2026-11-02"
    latest = _runs(served["root"]).sort("started_at").row(-1, named=True)
    assert str(latest["run_date"]) == "2026-11-02" and latest["n_inputs"] == 3 and latest["invariant_ok"]
