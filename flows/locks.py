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

PROGRESS = logging.getLogger("sluicegate.progress")  # flows.settings.PROGRESS_LOGGER: the terminal


class DateLocked(RuntimeError):
    pass


@contextmanager
def date_lock(out_root: str, run_date: str, wait_seconds: float = 3600, poll_seconds: float = 2.0,
              log: logging.Logger | logging.LoggerAdapter = PROGRESS) -> Iterator[None]:
    """Waits (up to wait_seconds, then DateLocked) while another run writes the date, saying so in `log` (a
    flow run's logger: the UI shows which process holds it)."""
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
