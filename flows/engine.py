"""Runs a night's shards: in this process one after another ([engine] kind = "local"), or on a
dask.distributed cluster (kind = "dask"), driven through a plain `distributed.Client`.

Not prefect-dask's task runner: it swallows some dask exceptions and can rerun completed tasks
(PLATFORM.md). Here each shard is one dask task; its result is its counters, and the flow adds up only
what the shards returned.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, replace

from prefect import get_run_logger, task

from flows.settings import beam_logs_in_run
from processors.pipeline import RunSpec, run_pipeline
from processors.shards import Shard, automatic_shards
from schemas.config import Config, Engine

_clients: dict[str, object] = {}  # one client (and LocalCluster) per process and engine: a backfill's dates reuse it
_clients_lock = threading.Lock()


@dataclass
class ShardReport:
    shard: str
    inputs: int
    size: int
    state: str  # completed | failed
    seconds: float | None = None
    worker: str = ""
    message: str = ""
    counters: dict[str, int] | None = None
    loads: dict[str, int] | None = None  # the worker process's model loads so far (cache key -> count)


class ShardsFailed(RuntimeError):
    """Some shards failed after their retries; the others committed. A plain rerun redoes only these."""

    def __init__(self, message: str, reports: list[ShardReport]):
        super().__init__(message)
        self.reports = reports


def with_engine(config: Config, kind: str | None, address: str | None) -> Config:
    """The configuration with a run's engine options (the CLI's --engine/--address, a flow's parameters);
    validated as the file's [engine] is. An address means kind "dask"."""
    if not kind and not address:
        return config
    options = config.engine.model_dump()
    options.update({k: v for k, v in (("kind", kind or "dask"), ("address", address)) if v is not None})
    return config.model_copy(update={"engine": Engine.model_validate(options)})


def cluster_threads(engine: Engine) -> int:
    """Shards that can run at once: 1 here; a cluster's worker threads."""
    if engine.kind == "local":
        return 1
    if not engine.address:
        return engine.workers * engine.threads_per_worker
    return sum(client(engine).nthreads().values()) or 1


def shard_count(engine: Engine, n_files: int) -> int:
    return engine.shards or (1 if engine.kind == "local" else automatic_shards(cluster_threads(engine), n_files))


def worker_config(config: Config) -> Config:
    """The configuration a LocalCluster's workers load models with: llama.cpp threads per model set to
    [engine] model_threads (0: cores / workers), so the workers together do not oversubscribe the cores.
    Outside the version key (the flow computed it before): threads change speed, not which rows exist."""
    engine = config.engine
    if engine.kind != "dask" or engine.address:
        return config
    threads = engine.model_threads or max(1, (os.cpu_count() or 1) // engine.workers)
    return config.model_copy(update={
        "small": config.small.model_copy(update={"threads": threads}),
        "large": config.large.model_copy(update={"threads": threads})})


def client(engine: Engine):
    """The process's client for this engine: a LocalCluster on 127.0.0.1 (started once, kept until the
    process exits) or a connection to the scheduler at [engine] address."""
    import dask
    from distributed import Client, LocalCluster

    key = engine.address or f"local:{engine.workers}x{engine.threads_per_worker}:{engine.retries}"
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        if engine.address:
            made = Client(engine.address, timeout="60s")
        else:
            # A task whose worker died is run again this many times (the scheduler's allowed-failures);
            # a remote scheduler has its own setting (README, "Scale-out").
            with dask.config.set({"distributed.scheduler.allowed-failures": engine.retries}):
                cluster = LocalCluster(n_workers=engine.workers, threads_per_worker=engine.threads_per_worker,
                                       processes=True, host="127.0.0.1", dashboard_address=None,
                                       worker_dashboard_address="127.0.0.1:0")
            made = Client(cluster)
            logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would drown the run's
            atexit.register(close_clients)
        _clients[key] = made
        return made


def close_clients() -> None:
    """Closes this process's clients (and the LocalClusters it started); the next run starts anew."""
    with _clients_lock:
        for made in _clients.values():
            cluster = getattr(made, "cluster", None)
            made.close()
            if cluster is not None:
                cluster.close()
        _clients.clear()


def run_shards(plan: list[Shard], spec: RunSpec, runner: str) -> list[ShardReport]:
    """Runs every shard of the plan (even empty ones: they empty what their part files held). Returns one
    report per shard; raises ShardsFailed, naming each failed shard's inputs, when any failed."""
    specs = [replace(spec, shard=s.name, inputs=list(s.inputs), unseen=s.unseen,
                     faults=spec.faults.for_shard(s.name, os.path.join(spec.out_root, "_faults", spec.run_id))
                     if spec.faults else None) for s in plan]
    if spec.faults and spec.faults.once:
        os.makedirs(os.path.join(spec.out_root, "_faults"), exist_ok=True)
    engine = spec.config.engine
    if engine.kind == "local":
        reports = [_run_here(s, shard_spec, runner) for s, shard_spec in zip(plan, specs, strict=True)]
    else:
        reports = run_on_dask(plan, specs, runner)
    failed = [(s, r) for s, r in zip(plan, reports, strict=True) if r.state != "completed"]
    if failed:
        raise ShardsFailed(f"{len(failed)} of {len(plan)} shards failed; a rerun redoes them: " + "; ".join(
            f"{s.describe()}: {r.message}" for s, r in failed), reports)
    return reports


def _run_here(shard: Shard, spec: RunSpec, runner: str) -> ShardReport:
    """One shard in this process (a task run named shard-<name>). A shard that raises is reported failed and
    the next one still runs, as on a cluster."""
    started = time.perf_counter()
    try:
        counters = run_beam.with_options(task_run_name=f"shard-{shard.name}")(spec, runner)
    except Exception as e:  # noqa: BLE001 - named in ShardsFailed with the shard's inputs
        return ShardReport(shard.name, len(shard.inputs), shard.size, "failed", worker="this process",
                           message=f"{type(e).__name__}: {e}"[:500])
    return ShardReport(shard.name, len(shard.inputs), shard.size, "completed",
                       round(time.perf_counter() - started, 1), "this process", counters=counters)


@task(timeout_seconds=11 * 3600)  # inside the flow's 12 h
def run_beam(spec: RunSpec, runner: str) -> dict[str, int]:
    with beam_logs_in_run():  # Beam's worker threads log into this task run too
        return run_pipeline(spec, runner=runner)


@task(timeout_seconds=11 * 3600, task_run_name="shards-on-dask")
def run_on_dask(plan: list[Shard], specs: list[RunSpec], runner: str) -> list[ShardReport]:
    """One dask task per shard (retried when it raises or its worker dies: [engine] retries); a line in
    this run's log as each ends. A shard that fails for good does not stop the others."""
    from distributed import as_completed

    from processors.cluster import KeepModelsLoaded, run_shard

    logger = get_run_logger()
    engine = specs[0].config.engine
    dask_client = client(engine)
    config = worker_config(specs[0].config)
    specs = [replace(s, config=config) for s in specs]
    dask_client.register_plugin(KeepModelsLoaded(config))  # each worker loads the models now, once
    by_key = {}
    futures = []
    for shard, shard_spec in zip(plan, specs, strict=True):
        future = dask_client.submit(run_shard, shard_spec, runner, key=f"sluicegate-{shard_spec.run_id}-{shard.name}",
                                    pure=False, retries=engine.retries)
        by_key[future.key] = shard
        futures.append(future)
    logger.info("%d shards submitted to %s (%d worker threads)", len(plan), engine.address or "a LocalCluster",
                sum(dask_client.nthreads().values()))
    reports: dict[str, ShardReport] = {}
    for future in as_completed(futures):
        shard = by_key[future.key]
        try:
            done = future.result()
        except Exception as e:  # KilledWorker (its worker died too often) or the shard's own exception
            message = f"{type(e).__name__}: {e}"[:500]
            logger.error("%s failed: %s", shard.describe(), message)
            reports[shard.name] = ShardReport(shard.name, len(shard.inputs), shard.size, "failed", message=message)
            continue
        logger.info("shard %s: %d inputs done in %.1f s on %s", shard.name, len(shard.inputs), done["seconds"],
                    done["worker"])
        reports[shard.name] = ShardReport(shard.name, len(shard.inputs), shard.size, "completed",
                                          done["seconds"], done["worker"], counters=done["counters"],
                                          loads=done["loads"])
    return [reports[s.name] for s in plan]


def add_counters(reports: list[ShardReport]) -> dict[str, int]:
    """The night's counters: the sum of what each shard returned (once per shard, whatever its attempts)."""
    total: dict[str, int] = {}
    for report in reports:
        for key, value in (report.counters or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def shard_table(reports: list[ShardReport]) -> list[dict]:
    """Rows of the run's shard table artifact."""
    # most_loads_of_a_model: on the shard's worker process so far; 1 means no model was loaded twice there.
    return [{"shard": r.shard, "files": r.inputs, "documents_estimated": r.size, "state": r.state,
             "seconds": r.seconds, "worker": r.worker,
             "most_loads_of_a_model": max(r.loads.values()) if r.loads else None, "message": r.message}
            for r in reports]

