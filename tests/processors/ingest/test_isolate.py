"""The parse worker: deadline, memory cap, crash and error, checked with real stdlib calls in a real process."""

import os
import time
from pathlib import Path

import pytest

from processors.ingest.isolate import IsolatedError, run_isolated, shutdown
from processors.ingest.pdf import PASSWORDS_ENV


def _workers() -> set[int]:
    """Live parse workers that are children of this process."""
    mine = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and b"isolate import serve" in cmdline \
                and not fields.get("State", "").startswith("Z"):
            mine.add(int(status.parent.name))
    return mine


def test_returns_the_value_and_reuses_the_worker():
    assert run_isolated(len, b"abc", seconds=30, memory_mb=512) == 3
    before = _workers()
    assert run_isolated(sorted, [3, 1, 2], seconds=30, memory_mb=512) == [1, 2, 3]
    assert _workers() == before and before


def test_a_call_past_its_deadline_is_stopped_and_its_worker_killed():
    run_isolated(len, b"", seconds=30, memory_mb=512)  # a started worker, so only the sleep is timed
    with pytest.raises(IsolatedError) as e:
        run_isolated(time.sleep, 60, seconds=0.5, memory_mb=512)
    assert e.value.kind == "timeout"
    assert len(_workers()) <= 1  # the sleeping worker is gone; at most the idle one of other tests is left
    assert run_isolated(len, b"ab", seconds=30, memory_mb=512) == 2


def test_memory_cap_is_a_memory_error_not_a_dead_machine():
    with pytest.raises(IsolatedError) as e:
        run_isolated(bytearray, 8 * 1024**3, seconds=30, memory_mb=512)
    assert e.value.kind == "memory"


def test_a_worker_that_dies_is_reported_and_replaced():
    with pytest.raises(IsolatedError) as e:
        run_isolated(os._exit, 3, seconds=30, memory_mb=512)
    assert e.value.kind == "crashed"
    assert run_isolated(len, b"x", seconds=30, memory_mb=512) == 1


def test_an_exception_in_the_call_is_reported_with_its_type():
    with pytest.raises(IsolatedError) as e:
        run_isolated(int, "not a number", seconds=30, memory_mb=512)
    assert e.value.kind == "error" and "ValueError" in str(e.value)


def environment() -> dict[str, str]:
    """Runs in the worker: what it sees (module-level, so the worker imports it by name)."""
    return dict(os.environ)


def test_the_worker_gets_no_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("SLUICEGATE_LARGE_API_KEY", "sk-secret-large-0123456789")
    monkeypatch.setenv("SOME_TOKEN", "tok-secret-0123456789")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-0123456789")
    monkeypatch.setenv(PASSWORDS_ENV, '{"*.pdf": "pw-secret-0123456789"}')
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    shutdown()  # idle workers started before the secrets were set would not show them
    seen = run_isolated(environment, seconds=60, memory_mb=512)
    leaked = [k for k, v in seen.items() if "secret" in v]
    assert not leaked, leaked
    assert not {"SLUICEGATE_LARGE_API_KEY", "SOME_TOKEN", "AWS_SECRET_ACCESS_KEY", PASSWORDS_ENV} & seen.keys()
    # What it needs is still there: programs (tesseract) on PATH, the locale, one OCR thread.
    assert seen["PATH"] == os.environ["PATH"] and seen["LC_ALL"] == "C.UTF-8" and seen["OMP_THREAD_LIMIT"] == "1"
