"""Environment defaults set before Prefect is imported (the CLI and tests import this first), and logging.

Two logging paths:
- Prefect run logs: `apache_beam` and `processors` are Prefect "extra loggers" (their records go to the
  run's logs in the UI). Beam runs DoFns on its own worker threads, where Prefect's run context is not
  set, so `beam_logs_in_run` stamps those records with the run's ids while a Beam pipeline runs.
- CLI progress: per-stage lines on the `sluicegate.progress` logger. Nothing shows them unless the CLI
  calls `progress_to_stderr` (runs under a deployment print nothing extra).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

RUN_LOGGERS = ("apache_beam", "processors")
PROGRESS_LOGGER = "sluicegate.progress"  # processors use the same name (they cannot import flows)


def apply_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry errors offline
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join(RUN_LOGGERS))  # Beam logs in Prefect runs
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # processors also log outside runs
    # The embedded server's 20 s start-up limit is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class _StampRun(logging.Filter):
    """Gives records from the run loggers the run's ids when their thread has no Prefect context."""

    def __init__(self, flow_run_id: str, task_run_id: str | None):
        super().__init__()
        self._ids = {"flow_run_id": flow_run_id, "task_run_id": task_run_id}
        self._prefixes = tuple(RUN_LOGGERS) + tuple(f"{name}." for name in RUN_LOGGERS)

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "flow_run_id", None) and record.name.startswith(self._prefixes):
            for key, value in self._ids.items():
                setattr(record, key, value)
        return True


@contextmanager
def beam_logs_in_run(level: int = logging.INFO) -> Iterator[None]:
    """While a Beam pipeline runs inside a Prefect task or flow: its and the processors' logs go to that run.

    Outside a run context it does nothing. `processors` logs at `level` (its INFO lines say which model
    each tier loaded, and when); `apache_beam` keeps its own level (its INFO lines are per-stage noise).
    """
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError
    from prefect.logging.handlers import APILogHandler

    try:
        context = get_run_context()
    except MissingContextError:
        yield
        return
    task_run = getattr(context, "task_run", None)
    flow_run = getattr(context, "flow_run", None)
    flow_run_id = task_run.flow_run_id if task_run is not None else flow_run.id
    stamp = _StampRun(str(flow_run_id), str(task_run.id) if task_run is not None else None)
    handlers = {h for name in RUN_LOGGERS for h in logging.getLogger(name).handlers if isinstance(h, APILogHandler)}
    processors = logging.getLogger("processors")
    previous_level = processors.level
    if processors.level == logging.NOTSET or processors.level > level:
        processors.setLevel(level)
    for handler in handlers:
        handler.addFilter(stamp)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(stamp)
        processors.setLevel(previous_level)


def progress_to_stderr() -> None:
    """Per-stage progress lines on stderr, for the command line only."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    if any(getattr(h, "_sluicegate_progress", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", datefmt="%H:%M:%S"))
    handler._sluicegate_progress = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not again through Prefect's console handler
