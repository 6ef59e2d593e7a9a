"""`sluicegate deploy --pool`: the deployments on a real server for a real process work pool, whose worker runs
a backfill. The nightly schedule comes from the configuration's [schedule], the one place it lives."""

from __future__ import annotations

import subprocess
from datetime import date

import polars as pl
import pytest

from flows.alerts import PREFIX
from tests.conftest import kill_tree, start_prefect_server, start_process
from tests.flows.test_server import BIN, TIMEZONE, _tail, _write_inbox_and_config


@pytest.mark.slow
def test_deploy_to_a_process_work_pool_and_its_worker_runs_a_backfill(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = _write_inbox_and_config(tmp_path)
    procs: list[subprocess.Popen] = []
    try:
        api_url, env = start_prefect_server(tmp_path, procs, PREFECT_WORKER_QUERY_SECONDS="2")
        deployed = subprocess.run([str(BIN / "sluicegate"), "deploy", "--pool", "sg-pool", "--config", str(config)],
                                  capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "nightly/nightly" in deployed.stdout and PREFIX + "run failed" in deployed.stdout
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            nightly = client.read_deployment_by_name("nightly/nightly")
            (schedule,) = nightly.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", TIMEZONE)
            assert nightly.work_pool_name == "sg-pool" and client.read_work_pool("sg-pool").type == "process"
            # A worker started elsewhere: the deployment runs the flows in the project's folder.
            procs.append(start_process([str(BIN / "prefect"), "worker", "start", "--pool", "sg-pool"],
                                tmp_path / "worker.log", env, tmp_path))
            run = run_deployment("backfill/backfill", parameters={"start": "2026-11-02", "end": "2026-11-02"},
                                 timeout=600, poll_interval=2)
        assert run.state.is_completed(), f"{run.state}\n{_tail(tmp_path / 'worker.log', 80)}"
        results = pl.read_parquet(tmp_path / "out" / "results" / "**" / "*.parquet", hive_partitioning=True)
        assert results["run_date"].unique().to_list() == [date(2026, 11, 2)] and results.height == 2
    finally:
        for proc in reversed(procs):
            kill_tree(proc)
