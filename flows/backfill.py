"""Backfill: one nightly run per date of a range, in order; a failed date does not stop the others."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.nightly import Source, nightly
from flows.settings import PROGRESS_LOGGER


# backfill-<start>..<end> in the UI's run list. No retries here: a failed date is named in the state, and a
# rerun (the UI's Retry) skips the dates already done.
@flow(name="backfill", log_prints=True, flow_run_name="backfill-{start}..{end}", timeout_seconds=48 * 3600)
def backfill(start: date, end: date, sources: list[Source] | None = None, reprocess: bool = False,
             config_path: str | None = None, inbox: str | None = None, out: str | None = None,
             prune_missing: bool = False, engine: Literal["local", "dask"] | None = None,
             address: str | None = None) -> dict:
    """Runs `nightly` for every date from start to end (inclusive), in order.

    Each date runs under its own lock, so a date is never written by two runs at once, whichever
    flows started them. A failed date does not stop the others; the run ends Failed naming it.

    Args:
        start: First date of the range.
        end: Last date of the range (inclusive).
        sources: Sources to process (tickets, pdf). None: all configured.
        reprocess: Recompute inputs already done with the current models and configuration, replacing
            the dates' partitions. Off: a rerun skips them and keeps their rows.
        config_path: TOML configuration file. None: ./sluicegate.toml, else the bundled one.
        inbox: Input root (local path or fsspec URL). None: the configuration's.
        out: Output root (a local folder). None: the configuration's.
        prune_missing: Drop the rows of inputs no longer in the inbox (deleted or moved files). Off: kept.
        engine: Where each date's shards run: local or dask. None: the configuration's [engine]. A dask
            cluster is started (or connected) once and serves every date, its workers keeping the models.
        address: A dask scheduler (tcp://host:8786). None: the configuration's.
    """
    logger = get_run_logger()
    progress = logging.getLogger(PROGRESS_LOGGER)
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    outcomes: list[dict] = []
    one_date = nightly.with_options(retries=0)  # the backfill names a failed date; its rerun retries it
    for i, day in enumerate(days, 1):
        progress.info("backfill: %s (%d of %d)", day, i, len(days))
        state = one_date(run_date=day, sources=sources, reprocess=reprocess, inbox=inbox, out=out,
                         config_path=config_path, prune_missing=prune_missing, engine=engine, address=address,
                         return_state=True)
        if state.is_completed():
            s = state.result()
            outcomes.append({"date": day.isoformat(), "state": "completed", "inputs": s["n_inputs"],
                             "results": s["n_results"], "errors": s["n_errors"], "skipped": s["n_skipped"],
                             "kept_unseen": s["n_unseen_kept"], "pruned": s["n_pruned"], "message": ""})
        else:
            logger.error("date %s failed: %s", day, state.message)
            progress.info("backfill: %s failed: %s", day, state.message)
            outcomes.append({"date": day.isoformat(), "state": state.type.value.lower(), "inputs": None,
                             "results": None, "errors": None, "skipped": None, "kept_unseen": None,
                             "pruned": None, "message": state.message or ""})
    create_table_artifact(key="backfill", table=outcomes, description=f"sluicegate backfill {start} .. {end}")
    failed = [o["date"] for o in outcomes if o["state"] != "completed"]
    progress.info("backfill: %d of %d dates completed", len(days) - len(failed), len(days))
    if failed:
        # Every date was tried; the flow run still ends Failed so the UI shows it, naming the dates.
        raise RuntimeError(f"{len(failed)} of {len(days)} dates failed: {', '.join(failed)}")
    return {"dates": [o["date"] for o in outcomes], "outcomes": outcomes}
