"""The nightly flow: discover a date's inputs, run the Beam pipeline, check the invariant, record the run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import fsspec
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.alerts import emit_run_events
from flows.engine import ShardsFailed, add_counters, run_shards, shard_count, shard_table, with_engine
from flows.locks import date_lock
from flows.settings import PROGRESS_LOGGER
from processors.faults import FaultPlan, checkpoint
from processors.ingest.pdf import PASSWORDS_ENV, parse_passwords, passwords_from_env
from processors.ingest.read import printable_uri
from processors.models import tier_version
from processors.pipeline import RunSpec
from processors.shards import Shard, plan_shards
from processors.sinks import (
    TASK_VERSIONS,
    claim_date,
    partition_path,
    read_table,
    recover,
    remove_parts_outside,
    rows_by_part,
    write_partition,
)
from schemas.config import Config, load_config, local_output_root
from schemas.tables import RUNS_SCHEMA, SCHEMA_VERSION
from schemas.versions import with_model_version

Source = Literal["tickets", "pdf"]
# Configuration outside the version key: when runs start, whom they alert, where shards run, and how fast a
# tier runs in-process (threads, copies and documents per batch give the same bits: tests/processors/models/
# test_llamacpp.py). A change there does not make a rerun redo inputs already done.
SPEED_ONLY = {"threads", "copies", "parallel_sequences"}
NOT_OUTPUTS = {"schedule": True, "alerts": True, "engine": True, "small": SPEED_ONLY, "large": SPEED_ONLY}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "fixtures" / "sluicegate.toml"


def resolve_config(config_path: str | None, load_secrets: bool = False,
                   registry_must_exist: bool = True) -> tuple[Config, str]:
    """An explicit file, else ./sluicegate.toml, else the bundled fixtures' configuration.

    load_secrets (inside a flow run): API keys named as Prefect Secrets are put into the environment.
    registry_must_exist=False: for fine-tuning, which creates the model registry.
    """
    candidates = [config_path] if config_path else ["sluicegate.toml", str(DEFAULT_CONFIG)]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            config = with_model_version(load_config(candidate), registry_must_exist)
            found = str(Path(candidate).resolve())
            break
    else:
        if config_path:
            raise FileNotFoundError(f"configuration file {config_path} does not exist")
        config, found = Config(), "<defaults>"
    if load_secrets:
        _api_keys_from_secrets(config)
        _pdf_passwords_from_secret(config)
    return config, found


def _load_secret(name: str, what: str):
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get()
    except Exception as e:  # the message names the block, never a value
        raise RuntimeError(f"{what}: cannot load Prefect Secret {name!r}: {type(e).__name__}") from None


def _api_keys_from_secrets(config: Config) -> None:
    """A tier's `api_key_secret` (a Prefect Secret block) goes into the environment variable its runtime
    reads (`api_key_env`, default SLUICEGATE_<TIER>_API_KEY): processors never import prefect, and the
    key never enters the configuration, its hash, logs or rows."""
    for name, tier in (("small", config.small), ("large", config.large)):
        if not tier.api_key_secret:
            continue
        tier.api_key_env = tier.api_key_env or f"SLUICEGATE_{name.upper()}_API_KEY"
        os.environ[tier.api_key_env] = str(_load_secret(tier.api_key_secret, f"{name} tier"))


def _pdf_passwords_from_secret(config: Config) -> None:
    """[pdf].passwords_secret: a Prefect Secret block holding the SLUICEGATE_PDF_PASSWORDS object (file name
    glob -> password, as JSON text or a dict). Merged into that variable, whose own entries win; the PDF
    readers (processors) read only the variable. A malformed value fails the run, never showing it."""
    name = config.pdf.passwords_secret
    if not name:
        return
    value = _load_secret(name, "[pdf].passwords_secret")
    from_block = parse_passwords(json.dumps(value) if isinstance(value, dict) else str(value),
                                 f"Prefect Secret {name!r}")
    from_env = passwords_from_env()
    os.environ[PASSWORDS_ENV] = json.dumps({**from_block, **from_env})


def config_hash(config: Config) -> str:
    """What in the configuration changes outputs (all but NOT_OUTPUTS)."""
    return hashlib.sha256(config.model_dump_json(exclude=NOT_OUTPUTS).encode()).hexdigest()[:12]


def version_key(config: Config) -> str:
    """Everything that changes outputs: both models (and adapters), the configuration, task and schema versions."""
    parts = {"small": tier_version(config.small), "large": tier_version(config.large),
             "config": config_hash(config), "tasks": TASK_VERSIONS, "schema": SCHEMA_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def night_before(scheduled_start: datetime, tz: str) -> date:
    """The date a run without an explicit date processes: the day before its *scheduled* start, in the
    schedule's time zone. A 02:00 run that starts late (00:30 the next day) or is retried from the UI the
    next morning still processes the night it was scheduled for, never the wrong date."""
    return scheduled_start.astimezone(ZoneInfo(tz)).date() - timedelta(days=1)


def scheduled_start() -> datetime:
    """This flow run's scheduled start (the cron time for a scheduled run, now for a manual one)."""
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time


def _nightly_run_name() -> str:
    """nightly-<date>, so a date is found in the UI's run list."""
    from prefect.runtime import flow_run

    given = flow_run.parameters.get("run_date")
    if given:
        return f"nightly-{given}"
    config, _ = resolve_config(flow_run.parameters.get("config_path"))
    return f"nightly-{night_before(scheduled_start(), config.schedule.timezone)}"


def code_version() -> str:
    from importlib.metadata import version

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version('sluicegate')}+{commit}" if commit else version("sluicegate")


@task(retries=2, retry_delay_seconds=[2, 10], timeout_seconds=600)
def discover(inbox: str, sources: list[str], run_date: str) -> list[tuple[str, str]]:
    """Every file under <inbox>/<source>/<run_date>/ (recursively), as (uri, source), sorted."""
    fs, root = fsspec.core.url_to_fs(inbox)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    found: list[tuple[str, str]] = []
    for source in sources:
        folder = f"{root.rstrip('/')}/{source}/{run_date}"
        if not fs.exists(folder):
            continue
        for path in sorted(fs.find(folder)):
            if Path(path).name.startswith("."):
                continue  # hidden and temporary files are not inputs
            found.append((path if local else fs.unstrip_protocol(path), source))
    return found


def recorded_rows(out_root: str, run_date: str, sources: list[str]) -> dict[str, pl.DataFrame]:
    """The date's results, errors and manifest as they stand before the run, with the part (shard) of each
    row: read once, for the skip (done_inputs), for what the run cannot see (unseen_inputs) and for the
    shard plan (make_plan)."""
    return {table: read_table(out_root, table, [run_date], sources, with_part=True)
            for table in ("results", "errors", "manifest")}


def done_inputs(manifest: pl.DataFrame, key: str) -> frozenset[tuple[str, str]]:
    """(uri, doc_id) of the inputs the manifest says are done with this version_key."""
    if manifest.is_empty():
        return frozenset()
    done = manifest.filter(pl.col("done") & (pl.col("version_key") == key))
    return frozenset(zip(done["uri"].to_list(), done["doc_id"].to_list(), strict=True))


def unseen_inputs(recorded: dict[str, pl.DataFrame], inputs: list[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """(source, uri) of every input with rows in the date's tables (results, errors, manifest) that is not
    among this run's inputs: a file deleted or moved since, or an inbox that is empty or not mounted.
    A ticket's uri is its file's plus '#L<line>' or '#R<row>'."""
    files = {printable_uri(uri) for uri, _ in inputs}
    unseen: set[tuple[str, str]] = set()
    for frame in recorded.values():
        if frame.is_empty():
            continue
        for uri, source in frame.select("uri", "source").unique().iter_rows():
            if uri not in files and uri.rsplit("#", 1)[0] not in files:
                unseen.add((source, uri))
    return frozenset(unseen)


def make_plan(inputs: list[tuple[str, str]], unseen: frozenset[tuple[str, str]],
              recorded: dict[str, pl.DataFrame], n_shards: int) -> list[Shard]:
    """The run's shards: inputs balanced by size, and every input (or kept row) whose rows an earlier run
    wrote (`recorded`, see recorded_rows) stays on the shard whose part files hold them."""
    held = rows_by_part(recorded.values())
    files = {printable_uri(uri): uri for uri, _ in inputs}
    held_by: dict[str, str] = {}
    for (_, uri), shard in sorted(held.items(), key=lambda item: item[1]):  # the lowest shard, should two hold one
        file = files.get(uri) or files.get(uri.rsplit("#", 1)[0])
        if file is not None:
            held_by.setdefault(file, shard)
    return plan_shards(inputs, input_sizes(inputs), n_shards, held_by, unseen, {key: held[key] for key in unseen})


TICKET_BYTES = 256  # bytes per ticket in an export, for the estimate: a short JSONL/CSV record


def input_sizes(inputs: list[tuple[str, str]]) -> dict[str, int]:
    """Estimated documents per input file, what a shard's time goes by: a ticket export's bytes / 256, a PDF 1.
    From the file's metadata only: the flow never opens an input (a named pipe would block it, a link may
    lead outside the inbox; the readers decide those). 0 for what is not a regular file or cannot be read."""
    sizes = {}
    for uri, source in inputs:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            info = fs.info(path)
        except (OSError, ValueError):
            sizes[uri] = 0
            continue
        if info.get("type") != "file":
            sizes[uri] = 0
        elif source == "tickets":
            sizes[uri] = max(1, int(info.get("size") or 0) // TICKET_BYTES)
        else:
            sizes[uri] = 1
    return sizes


def summarize(labels: pl.DataFrame, fields: pl.DataFrame, config: Config) -> dict[str, dict[str, float]]:
    """Escalation and review rates per task (and for fields), from the labels and fields tables as written."""
    escalation, review = {}, {}
    for task_name in [t.name for t in config.tasks] if not labels.is_empty() else []:  # empty: no partition read
        decided = labels.filter(pl.col("task") == task_name)["decided_by"]
        if len(decided):
            escalation[task_name] = float(decided.is_in(["large", "review"]).mean())  # linear/small: not escalated
            review[task_name] = float((decided == "review").mean())
    if not fields.is_empty():
        escalation["fields"] = float(fields["decided_by"].is_in(["large", "review"]).mean())
        review["fields"] = float((fields["decided_by"] == "review").mean())
    return {"escalation": escalation, "review": review}


# Reruns are idempotent (done inputs are skipped), so one retry is cheap; a date still failing is named in the
# run's state. The timeout ends a hung night before the next one is due.
@flow(name="nightly", log_prints=True, flow_run_name=_nightly_run_name, retries=1, retry_delay_seconds=120,
      timeout_seconds=12 * 3600)
def nightly(run_date: date | None = None, sources: list[Source] | None = None, reprocess: bool = False,
            inbox: str | None = None, out: str | None = None, config_path: str | None = None,
            runner: str = "FnApiRunner", prune_missing: bool = False, engine: Literal["local", "dask"] | None = None,
            address: str | None = None, test_kill_at: str | None = None) -> dict:
    """Processes one date's documents.

    Args:
        run_date: Date to process. None: the day before the run's scheduled start, in the configured time zone.
        sources: Sources to process (tickets, pdf). None: all configured.
        reprocess: Recompute inputs already done with the current models and configuration, replacing
            the date's partitions. Off: they are skipped and their rows kept as they are.
        inbox: Input root (local path or fsspec URL). None: the configuration's.
        out: Output root (a local folder). None: the configuration's.
        config_path: TOML configuration file. None: ./sluicegate.toml, else the bundled one.
        runner: Beam runner (FnApiRunner runs in-process).
        prune_missing: Drop the rows of inputs that have rows for this date but are no longer in the inbox
            (deleted or moved files). Off: their rows are kept, and the summary counts them.
        engine: Where the shards run: local (this process) or dask. None: the configuration's [engine].
        address: A dask scheduler (tcp://host:8786) for engine dask. None: the configuration's (empty: a
            LocalCluster on this machine).
        test_kill_at: Crash tests only (leave empty): '<stage>[:<n>]', the run SIGKILLs itself the n-th
            time it reaches that stage (ingest, inference, write, finish); see processors/faults.py.
    """
    logger = get_run_logger()
    faults = FaultPlan.parse(test_kill_at) if test_kill_at else None
    config, config_file = resolve_config(config_path, load_secrets=True)
    config = with_engine(config, engine, address)
    day = (run_date or night_before(scheduled_start(), config.schedule.timezone)).isoformat()
    out_root = local_output_root(out) if out else config.output.root  # s3://... is refused, not a folder "s3:"
    unknown = set(sources or []) - set(config.inputs.sources)
    if unknown:
        raise ValueError(f"sources {sorted(unknown)} are not configured (configured: {config.inputs.sources})")
    sources = list(sources or config.inputs.sources)
    if "pdf" in sources:
        passwords_from_env()  # a malformed SLUICEGATE_PDF_PASSWORDS fails the run here, not each PDF
    inbox = inbox or config.inputs.inbox
    fs, root = fsspec.core.url_to_fs(inbox)
    if not fs.isdir(root):  # a mistyped --inbox or an unmounted share: never a "0 inputs" night
        raise FileNotFoundError(f"inbox {inbox} does not exist or is not a folder")
    with date_lock(out_root, day, log=logger):  # one writer per date, whatever started the run
        return _run_date(day, sources, reprocess, inbox, out_root, config, config_file, runner, logger, faults,
                         prune_missing)


def _run_date(day: str, sources: list[str], reprocess: bool, inbox: str, out_root: str, config: Config,
              config_file: str, runner: str, logger: logging.Logger, faults: FaultPlan | None = None,
              prune_missing: bool = False) -> dict:
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    run_id = f"{day}-{started.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    key = version_key(config)
    logger.info("run %s: config %s, inbox %s, out %s, sources %s, reprocess %s", run_id, config_file, inbox,
                out_root, sources, reprocess)

    claim_date(out_root, day, run_id)  # a shard still running for an earlier, dead run of the date won't commit
    recovered = recover(out_root, day)  # a run killed while renaming its files: finish what it started
    if recovered:
        logger.warning("finished the commit of a run of %s that was killed: %d files renamed", day, recovered)
    inputs = discover(inbox, sources, day)
    recorded = recorded_rows(out_root, day, sources)
    done = frozenset() if reprocess else done_inputs(recorded["manifest"], key)
    unseen = unseen_inputs(recorded, inputs)
    if unseen:
        logger.warning("%d inputs with rows for %s are not in the inbox now: their rows are %s", len(unseen), day,
                       "dropped (prune_missing)" if prune_missing else "kept (prune_missing drops them)")
    t_discover = time.perf_counter()
    progress = logging.getLogger(PROGRESS_LOGGER)
    per_source = ", ".join(f"{s} {sum(1 for _, src in inputs if src == s)}" for s in sources)
    progress.info("discover: %d files for %s (%s); %d inputs already done", len(inputs), day, per_source, len(done))
    logger.info("discovered %d input files for %s; %d inputs already done with version %s", len(inputs), day,
                len(done), key)
    spec = RunSpec(run_id=run_id, run_date=day, inputs=inputs, sources=sources, config=config,
                   config_hash=config_hash(config), out_root=out_root, version_key=key, done=done,
                   inbox=inbox,  # inputs that resolve outside it are outside_root errors, never read
                   unseen=frozenset() if prune_missing else unseen,
                   faults=faults)  # crash tests only: the graph's kill checkpoints
    plan = make_plan(inputs, spec.unseen, recorded, shard_count(config.engine, len(inputs)))
    logger.info("%d shards on %s: %s", len(plan), config.engine.kind,
                ", ".join(f"{s.name} ({len(s.inputs)} files, about {s.size} documents)" for s in plan))
    try:
        reports = run_shards(plan, spec, runner)
    except ShardsFailed as e:
        create_table_artifact(key=f"shards-{day}", table=shard_table(e.reports),
                              description=f"sluicegate shards {day}: some failed")
        raise
    create_table_artifact(key=f"shards-{day}", table=shard_table(reports), description=f"sluicegate shards {day}")
    # Part files of shards outside the plan hold no row that is to stay (inputs stay on the shard that
    # holds their rows): what they hold is pruned.
    removed = remove_parts_outside(out_root, day, sources, [s.name for s in plan])
    if removed:
        logger.info("removed %d part files of shards outside this run's plan", removed)
    counters = add_counters(reports)
    checkpoint(spec.faults, "finish")  # crash tests only: tables written, runs row not yet
    _stage_lines(progress, counters)
    t_pipeline = time.perf_counter()

    # Read back what was written: the invariant is checked on the tables, not on in-memory counts.
    results = read_table(out_root, "results", [day], sources)
    errors = read_table(out_root, "errors", [day], sources)
    fields = read_table(out_root, "fields", [day], sources)
    n_inputs = int(counters.get("inputs", 0))
    accounted = set(results["uri"].to_list() if len(results) else []) | set(
        errors["uri"].to_list() if len(errors) else [])
    unseen_uris = {uri for _, uri in unseen}
    n_unseen = len(accounted & unseen_uris)  # rows kept for inputs this run did not see (0 when pruned)
    n_pruned = sum(1 for _, uri in unseen if uri not in accounted) if prune_missing else 0
    seen_files = [printable_uri(uri) for uri, _ in inputs]
    missing_files = [uri for uri in seen_files
                     if uri not in accounted and not any(a.startswith(uri + "#") for a in accounted)]
    invariant_ok = (n_inputs + n_unseen == len(results) + len(errors) and not missing_files
                    and len(accounted) == n_inputs + n_unseen)

    labels = read_table(out_root, "labels", [day], sources)
    rates = summarize(labels, fields, config)
    tokens, cost = {}, {}
    for tier, tier_cfg in (("small", config.small), ("large", config.large)):
        n = int(results[f"{tier}_prompt_tokens"].sum() + results[f"{tier}_completion_tokens"].sum()) \
            if len(results) else 0
        tokens[tier] = n
        cost[tier] = n / 1e6 * tier_cfg.price_per_million_tokens
    # What sending every token to a hosted large model would have cost, for comparison.
    cost["hosted_all"] = sum(tokens.values()) / 1e6 * config.hosted_price_per_million_tokens
    small_seconds = float(results["small_seconds"].sum()) if len(results) else 0.0
    versions = {tier: v for tier in ("small", "large") if len(results)
                for v in results[f"{tier}_model_version"].drop_nulls().unique().to_list()[:1]}
    timings = {"discover": t_discover - t0, "pipeline": t_pipeline - t_discover, "total": time.perf_counter() - t0}
    run_row = dict(
        run_id=run_id, schema_version=SCHEMA_VERSION, started_at=started, finished_at=datetime.now(UTC),
        sources=sources, n_inputs=n_inputs, n_results=len(results), n_errors=len(errors),
        n_skipped=int(counters.get("skipped", 0)), n_unseen_kept=n_unseen, n_pruned=n_pruned,
        invariant_ok=invariant_ok,
        parameters={"run_date": day, "inbox": inbox, "out": out_root, "config": config_file, "runner": runner,
                    "sources": ",".join(sources), "reprocess": str(reprocess).lower(),
                    "prune_missing": str(prune_missing).lower(), "version_key": key},
        escalation_rate=rates["escalation"], review_rate=rates["review"], tokens=tokens, estimated_cost=cost,
        model_versions=versions, code_version=code_version(), config_hash=spec.config_hash, timings=timings,
        docs_per_second_small=(len(results) / small_seconds) if small_seconds else None,
    )
    write_partition(partition_path(out_root, "runs", day, None, run_id),
                    [{k: sorted(v.items()) if isinstance(v, dict) else v for k, v in run_row.items()}], RUNS_SCHEMA)

    summary = {
        "run_id": run_id, "run_date": day, "n_inputs": n_inputs, "n_results": len(results),
        "n_errors": len(errors), "n_skipped": run_row["n_skipped"], "n_unseen_kept": n_unseen,
        "n_pruned": n_pruned, "invariant_ok": invariant_ok,
        "escalation_rate": rates["escalation"], "review_rate": rates["review"], "tokens": tokens,
        "estimated_cost": cost, "seconds": round(timings["total"], 1),
        "errors_by_reason": dict(errors.group_by("reason").len().iter_rows()) if len(errors) else {},
        "decided_by": dict(results.group_by("decided_by").len().iter_rows()) if len(results) else {},
        "docs_per_second_small": run_row["docs_per_second_small"], "out": out_root,
        "n_escalation_failed": int(results["escalation_failed"].fill_null(False).sum()) if len(results) else 0,
        "model_version": config.models.active, "model_notes": list(config.models.notes),
        "engine": config.engine.kind, "shards": shard_table(reports),
    }
    create_markdown_artifact(key=f"nightly-{day}", markdown=_markdown(summary),
                             description=f"sluicegate nightly {day}")
    unseen_note = f" + {n_unseen} not in the inbox, kept" if n_unseen else ""
    pruned_note = f"; {n_pruned} not in the inbox, pruned" if n_pruned else ""
    progress.info("check: %s (inputs %d%s = results %d + errors %d%s)", "ok" if invariant_ok else "FAILED",
                  n_inputs, unseen_note, len(results), len(errors), pruned_note)
    if not invariant_ok:
        raise RuntimeError(f"invariant failed: {n_inputs} inputs + {n_unseen} not seen, kept != {len(results)} "
                           f"results + {len(errors)} errors; files with no row: {missing_files[:5]}")
    summary["degraded"] = emit_run_events(summary, config)  # the counts, for people and automations
    return summary


def _stage_lines(progress: logging.Logger, counters: dict[str, int]) -> None:
    """One line per pipeline stage, from the Beam counters (the CLI prints them)."""
    c = counters.get
    progress.info("ingest: %d inputs (%d already done, kept)", c("inputs", 0), c("skipped", 0))
    progress.info("small tier: %d documents", c("sluicegate_small.num_inferences", 0))
    progress.info("large tier: %d documents escalated", c("sluicegate_large.num_inferences", 0))
    tables = sorted(k.removeprefix("rows_") for k in counters if k.startswith("rows_"))
    progress.info("write: %s", ", ".join(f"{t} {c('rows_' + t)} rows" for t in tables) or "nothing")


def _markdown(s: dict) -> str:
    lines = [f"# sluicegate nightly {s['run_date']}", "", f"run `{s['run_id']}`", "",
             "| metric | value |", "|---|---|"]
    for name in ("n_inputs", "n_results", "n_errors", "n_skipped", "n_unseen_kept", "n_pruned", "invariant_ok",
                 "seconds", "docs_per_second_small"):
        lines.append(f"| {name} | {s[name]} |")
    for name in ("escalation_rate", "review_rate", "tokens", "estimated_cost", "errors_by_reason", "decided_by"):
        for k, v in s[name].items():
            lines.append(f"| {name}.{k} | {v:.4f} |" if isinstance(v, float) else f"| {name}.{k} | {v} |")
    return "\n".join(lines)
