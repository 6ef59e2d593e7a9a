"""Deployments of the flows, and `sluicegate serve`: a local Prefect server with them served.

The same deployments are declared in prefect.yaml for a process work pool (`prefect deploy --all`).
Parameters are plain typed values (dates, lists of literals, booleans, strings) so the Prefect UI
renders a proper form for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.backfill import backfill
from flows.nightly import nightly, resolve_config


def build_deployments(config_path: str | None) -> list[RunnerDeployment]:
    config, config_file = resolve_config(config_path)
    pinned = {"config_path": config_file} if config_file != "<defaults>" else {}
    return [
        nightly.to_deployment(
            name="nightly",
            schedules=[Cron(config.schedule.cron, timezone=config.schedule.timezone)],
            parameters=pinned,
            description=f"Every night at '{config.schedule.cron}' ({config.schedule.timezone}): yesterday's inputs.",
            tags=["sluicegate"],
        ),
        backfill.to_deployment(
            name="backfill",
            parameters=pinned,
            description="Reruns a date range (start and end inclusive); reprocess recomputes done inputs.",
            tags=["sluicegate"],
        ),
    ]


def wait_healthy(api_url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} was not healthy within {timeout:.0f}s")


def start_server(port: int, home: Path) -> subprocess.Popen:
    """A local Prefect server on 127.0.0.1 (its UI at http://127.0.0.1:<port>/)."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    return subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env)


def serve_deployments(config_path: str | None, api_url: str | None, port: int, home: Path) -> int:
    """Starts a server unless api_url points at one, then serves the deployments until interrupted."""
    server = None
    if not api_url:
        server = start_server(port, home)
        api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api_url)
        os.environ["PREFECT_API_URL"] = api_url  # inherited by the flow-run processes serve starts
        print(f"Prefect UI: {api_url.removesuffix('/api')}/  (deployments: nightly/nightly, backfill/backfill)",
              flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            serve(*build_deployments(config_path))
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0
