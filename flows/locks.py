"""A per-date lock in the output root, so two runs of the same date never write at the same time.

An OS file lock (fcntl): released by the kernel if the holder dies, even by SIGKILL, so a crashed run
never leaves a date locked. It works across processes on one machine: the CLI, `sluicegate serve`'s
runs and workers all writing to the same local output root.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("sluicegate.progress")  # flows.settings.PROGRESS_LOGGER: the terminal and the run's logs


class DateLocked(RuntimeError):
    pass


def date_slot_name(run_date: str) -> str:
    return f"sluicegate-run-date-{run_date}"


@contextmanager
def date_slot(run_date: str, wait_seconds: float = 3600) -> Iterator[None]:
    """A Prefect global concurrency limit of 1 per run date, taken before the file lock: on a shared server a
    second run of the date shows in the UI as waiting for its slot (the limit is listed under Concurrency),
    instead of waiting unseen on the lock. Runs that do not share a server (two terminals, each with its own
    embedded one) are still kept apart by date_lock."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    name = date_slot_name(run_date)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    with concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True):
        yield


@contextmanager
def date_lock(out_root: str, run_date: str, wait_seconds: float = 3600, poll_seconds: float = 2.0) -> Iterator[None]:
    path = Path(out_root) / "_locks" / f"run_date={run_date}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    waited = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.warning("run date %s is being written by another run (%s): waiting up to %.0f s",
                                run_date, path.read_text().strip() or "lock " + str(path), wait_seconds)
                    waited = True
                if time.monotonic() >= deadline:
                    raise DateLocked(
                        f"another run holds {run_date} (lock {path}) for over {wait_seconds:.0f}s") from None
                time.sleep(poll_seconds)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
