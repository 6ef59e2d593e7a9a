"""The worker side of a dask.distributed run: one shard is today's Beam graph, run in the worker's process.

No Prefect here: flows/engine.py plans, submits and adds up. Beam's own DaskRunner is not used: it drops
what DoFns emit in finish_bundle, where RunInference emits (PLATFORM.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from distributed import WorkerPlugin

from processors.pipeline import RunSpec, run_pipeline
from processors.tiers import keep_loaded_tiers, load_tier, tier_loads
from schemas.config import Config

PLUGIN_NAME = "sluicegate-models"


def run_shard(spec: RunSpec, runner: str = "FnApiRunner") -> dict:
    """Runs one shard's graph here; it writes its own part-<shard> files, manifest last. Returns its
    counters and who ran it: the flow adds up the counters of the attempts that *returned*, so a shard
    retried after its worker died counts once."""
    keep_loaded_tiers()  # also without the plugin (e.g. a worker that joined later): never load twice
    started = time.perf_counter()
    counters = run_pipeline(spec, runner=runner)
    return {"shard": spec.shard, "counters": counters, "seconds": round(time.perf_counter() - started, 1),
            "worker": f"{socket.gethostname()}:{os.getpid()}", "loads": tier_loads()}


class KeepModelsLoaded(WorkerPlugin):
    """Loads the small tier once per worker process, for the worker's life: shards then find it loaded
    (processors.tiers' process cache). The large tier loads at a worker's first escalation and is kept the
    same way; a worker that never escalates never holds it. Registered again by each run: a run with
    another small model warms that one."""

    name = PLUGIN_NAME
    idempotent = False  # a run with a new configuration replaces the plugin, and warms its models

    def __init__(self, config: Config):
        self._config = config

    async def setup(self, worker) -> None:
        keep_loaded_tiers()
        # Off the worker's event loop: a model load takes seconds, and heartbeats must go on meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, self._warm)

    def _warm(self) -> None:
        load_tier(self._config, "small")
