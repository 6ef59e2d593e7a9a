"""The robustness tests' shared parts: one real Prefect server, and `sluicegate run` as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.deployments import wait_healthy
from tests.conftest import free_port

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")
DATE = "2026-11-20"


@pytest.fixture(scope="package")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """One real Prefect server for all the CLI runs of these tests: each run would otherwise start its own
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


def run(config: Path, api: str, kill_at: str | None = None, *extra: str, date: str = DATE,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`sluicegate run --json` as an operator runs it; its own process group, so nothing it started outlives
    it. env: variables added to this process's environment."""
    env = dict(os.environ, PREFECT_API_URL=api, **(env or {}))
    if kill_at:
        extra = ("--test-kill-at", kill_at, *extra)
    # Output to files, not pipes: a killed run's orphans would hold a pipe open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([SLUICEGATE, "run", "--date", date, "--config", str(config), "--json", *extra],
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
