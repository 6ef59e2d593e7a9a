"""Environment defaults set before Prefect is imported (the CLI and tests import this first)."""

from __future__ import annotations

import os


def apply_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry errors offline
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "apache_beam,processors")  # Beam logs in Prefect runs
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
