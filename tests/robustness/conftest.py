"""The robustness tests' shared part: `sluicegate run` as a subprocess, against the session's Prefect server
(`prefect_api` in tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")
DATE = "2026-11-20"


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
