"""Deployments of the flows, and `sluicegate serve`: a local Prefect server with them served.

`sluicegate deploy --pool NAME` registers the same deployments for a process work pool. Both take the
nightly schedule from the configuration's [schedule]: the one place the cron lives.
Parameters are plain typed values (dates, lists of literals, booleans, strings) so the Prefect UI
renders a proper form for them; their descriptions come from the flows' Google-style docstrings.

To add a deployment: one `Deployment(...)` line in DEPLOYMENTS below.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.alerts import ensure_automations
from flows.nightly import resolve_config
from flows.settings import RUN_LOGGERS
from schemas.config import Config

PROJECT = Path(__file__).resolve().parent.parent  # flows/ and processors/ import from here


@dataclass(frozen=True)
class Deployment:
    """One served deployment: named after its flow ('<flow>/<flow>' in the UI and CLI)."""

    flow: str  # "module:attribute" of the @flow
    description: str  # may use {cron} and {timezone} from the configuration's [schedule]
    nightly_schedule: bool = False  # runs on the configuration's cron in its time zone


DEPLOYMENTS: list[Deployment] = [
    Deployment("flows.nightly:nightly",
               "Every night at '{cron}' ({timezone}): the inputs of the day before its scheduled start.",
               nightly_schedule=True),
    Deployment("flows.backfill:backfill",
               "Reruns a date range (start and end inclusive); reprocess recomputes done inputs."),
    Deployment("flows.evaluate:evaluate",
               "Scores small, large and the cascade on a labelled file; report, plots, optional calibration."),
    Deployment("flows.finetune:finetune",
               "Trains a LoRA adapter (and tier 0) on labelled files and past large-tier decisions; "
               "promotes it if better on held-out data."),
]


def _load_flow(target: str):
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


# One run of each deployment at a time; another waits in the queue (visible in the UI). Dates are also
# kept apart inside the runs (flows/locks.py), so a backfill and the nightly may run side by side.
CONCURRENCY = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployments(config: Config, config_file: str, work_pool: str | None = None) -> list[RunnerDeployment]:
    """The deployments of DEPLOYMENTS (config, config_file: from resolve_config); the configuration file and
    sources are pinned for the flows that take them.

    work_pool: for a process work pool, whose workers run the flows in this project's folder."""
    schedule = config.schedule
    deployments = []
    # Defaults the UI's form opens with: the configuration file, and its sources as a pre-filled list.
    pinned = {"sources": list(config.inputs.sources)}
    if config_file != "<defaults>":
        pinned["config_path"] = config_file
    for spec in DEPLOYMENTS:
        flow = _load_flow(spec.flow)
        takes = inspect.signature(flow.fn).parameters
        deployment = flow.to_deployment(
            name=flow.name,
            schedules=[Cron(schedule.cron, timezone=schedule.timezone)] if spec.nightly_schedule else None,
            parameters={k: v for k, v in pinned.items() if k in takes},
            description=spec.description.format(cron=schedule.cron, timezone=schedule.timezone),
            tags=["sluicegate"],
            concurrency_limit=CONCURRENCY,
            work_pool_name=work_pool,
            job_variables={"working_dir": str(PROJECT), "env": {"PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(
                RUN_LOGGERS)}} if work_pool else None,
        )
        if work_pool:  # a pool's worker runs in working_dir: the entrypoint is relative to it, not to our cwd
            source = Path(inspect.getfile(flow.fn)).resolve().relative_to(PROJECT)
            deployment.entrypoint = f"{source.as_posix()}:{flow.fn.__name__}"
        deployments.append(deployment)
    return deployments


def wait_healthy(api_url: str, timeout: float = 120.0, server: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {server.returncode} (port in use?)")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} was not healthy within {timeout:.0f}s")


def _die_with_parent() -> None:
    """In the server's process: SIGTERM when the process that started it dies, however it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_server(port: int, home: Path) -> subprocess.Popen:
    """A local Prefect server on 127.0.0.1 (its UI at http://127.0.0.1:<port>/), its database under home.

    In a session of its own, so a Ctrl-C in the terminal reaches only `serve`: serve's shutdown pauses
    its deployments through the server, then stops the server (had the server died first, that shutdown
    would hang retrying). It still dies with its parent.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    return subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            start_new_session=True, preexec_fn=_die_with_parent)


def _stop(server: subprocess.Popen) -> None:
    """The server's whole process group: `prefect server start` runs the API in a child of its own."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


def serve_deployments(config_path: str | None, api_url: str | None, port: int, home: Path) -> int:
    """Starts a server unless api_url points at one, then serves the deployments until interrupted.

    Flow runs start as subprocesses of this process, in its working directory, with PREFECT_API_URL set.
    Ctrl-C or SIGTERM stops serving and the server this command started.
    """
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = None
    if not api_url:
        server = start_server(port, home)
        api_url = f"http://127.0.0.1:{port}/api"
    # Before serve() installs its own SIGTERM handler: a SIGTERM while waiting still stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        wait_healthy(api_url, server=server)
        os.environ["PREFECT_API_URL"] = api_url  # inherited by the flow-run processes serve starts
        config, config_file = resolve_config(config_path)
        deployments = build_deployments(config, config_file)
        names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
        print(f"Prefect UI: {api_url.removesuffix('/api')}/  (deployments: {names})", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            print(f"automations: {', '.join(ensure_automations(config))}", flush=True)
            serve(*deployments)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            _stop(server)
    return 0


def deploy_to_pool(config_path: str | None, pool: str) -> list[str]:
    """Registers the deployments with the current Prefect server (PREFECT_API_URL) for a process work pool,
    creating the pool if it is missing, and the alert automations (flows/alerts.py). Start its workers in
    this folder: `prefect worker start --pool NAME`. Returns the deployments' and automations' names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    config, config_file = resolve_config(config_path)
    names = []
    for deployment in build_deployments(config, config_file, work_pool=pool):
        deployment.apply(work_pool_name=pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names + ensure_automations(config)
