"""The installed `sluicegate` console script, run as a user runs it (a subprocess)."""

import subprocess
import sys
from pathlib import Path

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SLUICEGATE, *args], capture_output=True, text=True, timeout=120, check=False)


def test_bad_date_is_a_usage_error():
    done = _run("run", "--date", "20-11-2026")
    assert done.returncode == 2 and "not a date" in done.stderr


def test_missing_config_file_fails_cleanly(tmp_path):
    done = _run("run", "--date", "2026-11-20", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path))
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_the_commands():
    done = _run("--help")
    assert done.returncode == 0 and "run" in done.stdout
