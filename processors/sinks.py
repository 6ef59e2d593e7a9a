"""Rows for the output tables, and atomic partition writes.

A partition is `<out>/<table>/run_date=<date>/source=<source>/part-<shard>.parquet`. It is written
to a temporary file beside its final name and renamed into place, so a reader sees the old file or
the new one, never half of one, and a rerun of the date replaces it instead of adding to it.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from processors.ingest import tickets
from processors.routing import overall_tier
from processors.tasks import extract, label
from processors.tasks.normalize import normalize_currency
from schemas.config import Config
from schemas.records import Document, FieldPrediction, LabelPrediction, Rejected
from schemas.tables import AMOUNT_TYPE, RESULT_TABLES, RUNS_TABLE, SCHEMA_VERSION, table_schema

TASK_VERSIONS = {"label": label.TASK_VERSION, "extract": extract.TASK_VERSION}


def result_row(doc: Document, config: Config, run_id: str, config_hash: str) -> dict:
    """The document's results row. Label answers are rows of `labels` (label_rows), so this row has one
    schema whatever the tasks."""
    metadata = dict(doc.metadata)
    source_id, created_at = tickets.pop_typed_metadata(metadata) if doc.source == "tickets" else (None, None)
    small, large = doc.usage.get("small"), doc.usage.get("large")
    return dict(
        doc_id=doc.doc_id,
        uri=doc.uri,
        source_id=source_id,
        created_at=created_at,
        decided_by=overall_tier(doc.decided_by),
        escalation_reasons=list(doc.escalation_reasons),
        escalation_failed=doc.escalation_failed,
        tier_answers=tier_answers(doc),
        n_pages=len(doc.pages) or 1,
        n_chars=len(doc.text),
        metadata=sorted(metadata.items()),
        model_version_id=config.models.active,
        small_model_version=doc.model_versions.get("small"),
        large_model_version=doc.model_versions.get("large"),
        task_versions=sorted(TASK_VERSIONS.items()),
        config_hash=config_hash,
        small_prompt_tokens=small.prompt_tokens if small else 0,
        small_completion_tokens=small.completion_tokens if small else 0,
        large_prompt_tokens=large.prompt_tokens if large else 0,
        large_completion_tokens=large.completion_tokens if large else 0,
        small_seconds=small.seconds if small else 0.0,
        large_seconds=large.seconds if large else 0.0,
        schema_version=SCHEMA_VERSION,
        run_id=run_id,
    )


def label_rows(doc: Document, config: Config, run_id: str) -> list[dict]:
    """One labels row per task the document was asked (the tasks of its source), by task name."""
    return [{"doc_id": doc.doc_id, "uri": doc.uri, "task": task, "label": pred.label, "confidence": pred.confidence,
             "decided_by": doc.decided_by.get(task, pred.tier), "model_version_id": config.models.active,
             "schema_version": SCHEMA_VERSION, "run_id": run_id}
            for task, pred in sorted(doc.labels.items())]


def _answer(item: str, pred: LabelPrediction | FieldPrediction) -> dict:
    value = pred.label if isinstance(pred, LabelPrediction) else pred.value
    return {"item": item, "tier": pred.tier, "value": value, "confidence": pred.confidence}


def tier_answers(doc: Document) -> list[dict]:
    """Both tiers' answers for every item the small tier did not decide: the small answer the large tier
    replaced, then the answer that stands."""
    out = []
    for item, tier in sorted(doc.decided_by.items()):
        if tier not in ("large", "review"):
            continue
        now = doc.labels.get(item) if not item.startswith("field:") else doc.fields.get(item[len("field:"):])
        if item in doc.superseded:
            out.append(_answer(item, doc.superseded[item]))
        if now is not None:
            out.append(_answer(item, now))
    return out


def _item_reasons(doc: Document, item: str) -> list[str]:
    """The routing reasons of one item ('<tier>:<why>'): why it left the small tier, and the large one."""
    out = []
    for reason in doc.escalation_reasons:  # '<tier>:<item>:<why>' (routing) or 'large:failed(<items>: ...)'
        tier, _, rest = reason.partition(":")
        if rest.startswith(f"{item}:"):
            out.append(f"{tier}:{rest[len(item) + 1:]}")
        elif rest.startswith("failed(") and item in rest[len("failed("):].split(": ", 1)[0].split("+"):
            out.append(reason)
    return out


def field_rows(doc: Document, config: Config, run_id: str) -> list[dict]:
    types = {f.name: f.type for f in config.fields.get(doc.source, [])}
    rows = []
    for name, pred in sorted(doc.fields.items()):
        rows.append({
            "doc_id": doc.doc_id, "uri": doc.uri, "field": name, "type": types.get(name), "value": pred.value,
            "normalized": pred.normalized, **typed_value(types.get(name), pred.value, pred.normalized),
            "confidence": pred.confidence, "page": pred.page,
            "span_start": pred.span_start, "span_end": pred.span_end,
            "decided_by": doc.decided_by.get(f"field:{name}", pred.tier), "valid": pred.valid,
            "problems": list(pred.problems), "routing_reasons": _item_reasons(doc, f"field:{name}"),
            "model_version": doc.model_versions.get(pred.tier),
            "model_version_id": config.models.active,
            "task_version": extract.TASK_VERSION, "schema_version": SCHEMA_VERSION, "run_id": run_id,
        })
    return rows


_AMOUNT_MAX = Decimal(10) ** (AMOUNT_TYPE.precision - AMOUNT_TYPE.scale)


def typed_value(field_type: str | None, value: str | None, normalized: str | None) -> dict:
    """value_amount, value_date and currency of a field, from its type and normalized value (null where
    the type has none or the text does not parse: the strings stay in value/normalized)."""
    out: dict = {"value_amount": None, "value_date": None, "currency": None}
    if not normalized:
        return out
    if field_type == "amount":
        try:
            amount = Decimal(normalized).quantize(Decimal(1).scaleb(-AMOUNT_TYPE.scale))
        except (InvalidOperation, ValueError):
            amount = None
        out["value_amount"] = amount if amount is not None and abs(amount) < _AMOUNT_MAX else None
        # the currency written with the amount, if any: "$12.50", "1200 dollars", "EUR 3,10"
        written = re.sub(r"[\d.,\s'+-]+", " ", value or "").strip()
        out["currency"] = normalize_currency(written) if written else None
    elif field_type == "date":
        try:
            out["value_date"] = date.fromisoformat(normalized)
        except ValueError:
            pass
    elif field_type == "currency":
        out["currency"] = normalize_currency(normalized)
    return out


def error_row(rejected: Rejected, run_id: str) -> dict:
    return {"uri": rejected.uri, "doc_id": rejected.doc_id, "stage": rejected.stage, "reason": rejected.reason,
            "message": rejected.message, "retriable": rejected.retriable, "schema_version": SCHEMA_VERSION,
            "run_id": run_id}


def manifest_row(record: Document | Rejected, version_key: str, run_id: str) -> dict:
    """Done means: not to be processed again with this version (a retriable error or a failed escalation
    is not done, so the next run retries it)."""
    if isinstance(record, Rejected):
        outcome, done = "error", not record.retriable
    else:
        outcome, done = "result", not record.escalation_failed
    return dict(uri=record.uri, doc_id=record.doc_id, outcome=outcome, done=done, version_key=version_key,
                schema_version=SCHEMA_VERSION, run_id=run_id)


def document_error(doc: Document) -> Rejected:
    """A document that failed after ingest (e.g. the small tier crashed on it): retriable next run."""
    return Rejected(uri=doc.uri, source=doc.source, stage="inference", reason="model_failed",
                    message=doc.error or "unknown", retriable=True, doc_id=doc.doc_id)


def partition_path(out_root: str, table: str, run_date: str, source: str | None, shard: str = "00000") -> Path:
    path = Path(out_root) / table / f"run_date={run_date}"
    if source is not None:
        path = path / f"source={source}"
    return path / f"part-{shard}.parquet"


def stage_partition(path: Path, rows: Iterable[dict], schema: pa.Schema) -> tuple[Path, int]:
    """Writes rows to a hidden temporary file beside `path` (fsynced; readers' globs skip it).
    Returns (temporary file, number of rows); `commit` renames it into place."""
    table = pa.Table.from_pylist(list(rows), schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A write killed before its rename leaves its temp file behind. Runs of a date hold the date's lock
    # and roll forward or sweep what a killed run left first (recover), so no other temp file is live.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # dot-prefixed: readers' globs skip it
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, table.num_rows


def write_partition(path: Path, rows: Iterable[dict], schema: pa.Schema) -> int:
    """Writes one partition file atomically (temp file + rename). Returns the number of rows."""
    tmp, n = stage_partition(path, rows, schema)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


COMMITS = "_commits"  # <out>/_commits/run_date=<date>/<run_id>.json: a run's renames, until all are done


def _journal_dir(out_root: str, run_date: str) -> Path:
    return Path(out_root) / COMMITS / f"run_date={run_date}"


class Superseded(RuntimeError):
    """A newer run owns the date: this (orphaned) shard must not commit over it."""


def claim_date(out_root: str, run_date: str, run_id: str) -> None:
    """Records `run_id` as the date's writer (the flow, holding the date's lock, before its shards start).
    A shard of an earlier run whose flow died (its dask task goes on running) then commits nothing."""
    write_atomic(_journal_dir(out_root, run_date) / "owner", run_id.encode())


def check_date_owner(out_root: str, run_date: str, run_id: str) -> None:
    """Raises Superseded when another run claimed the date since (no claim at all: nothing to check)."""
    path = _journal_dir(out_root, run_date) / "owner"
    owner = path.read_text() if path.exists() else run_id
    if owner != run_id:
        raise Superseded(f"run {run_id} does not commit {run_date}: run {owner} owns the date now")


def commit(out_root: str, run_date: str, journal_name: str, staged: Iterable[tuple[str, str]],
           after_each: Callable[[], None] | None = None) -> int:
    """Renames a run's staged files (temporary -> final) into place, all of them or, after a crash, on the
    next run of the date (recover): an input whose outcome changed moves between tables, and readers must
    not keep half of such a move (the input in both tables, or in neither).

    The list is written to a journal first; manifest partitions are renamed last. Returns the renames.
    after_each: called after each rename (the crash tests' kill point)."""
    root = Path(out_root)
    pairs = sorted(((str(Path(t).relative_to(root)), str(Path(f).relative_to(root))) for t, f in staged),
                   key=lambda pair: (pair[1].startswith("manifest/"), pair[1]))
    journal = _journal_dir(out_root, run_date) / f"{journal_name}.json"  # <run_id>.<shard>
    write_atomic(journal, json.dumps(pairs).encode())
    for tmp, final in pairs:
        os.replace(root / tmp, root / final)
        if after_each:
            after_each()
    journal.unlink()
    return len(pairs)


def recover(out_root: str, run_date: str) -> int:
    """Before a run of the date writes (it holds the date's lock): finishes the renames of a run killed
    while committing (its files are complete), then removes the temporary files of runs killed before
    their commit began. Returns the files renamed."""
    root, renamed = Path(out_root), 0
    for journal in sorted(_journal_dir(out_root, run_date).glob("*.json")):
        for tmp, final in json.loads(journal.read_text()):
            if (root / tmp).exists():  # not renamed before the crash
                os.replace(root / tmp, root / final)
                renamed += 1
        journal.unlink()
    for table in (*RESULT_TABLES, RUNS_TABLE):
        for stale in (root / table / f"run_date={run_date}").rglob(".*.tmp"):
            stale.unlink(missing_ok=True)
    return renamed


def write_atomic(path: Path, data: bytes) -> None:
    """A small file written whole or not at all (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_table(out_root: str, table: str, run_dates: Iterable[str], sources: Iterable[str] | None = None,
               with_part: bool = False) -> pl.DataFrame:
    """Every partition file of `table` for these run dates (and these sources, when given) as one frame,
    with a `source` column from the path; an empty frame when there is none. with_part: also a `part`
    column, the shard whose file holds the row (`part-<shard>.parquet`).

    labels of a partition written before that table existed (schema 1) are read from its results file."""
    wanted = None if sources is None else set(sources)
    frames = []
    for run_date in run_dates:
        folder = Path(out_root) / table / f"run_date={run_date}"
        paths = sorted(folder.glob("source=*/part-*.parquet"))
        if table == "labels":
            have = {p.relative_to(folder) for p in paths}
            results = Path(out_root) / "results" / f"run_date={run_date}"
            legacy = [p for p in sorted(results.glob("source=*/part-*.parquet")) if p.relative_to(results) not in have]
        else:
            legacy = []
        for path in [*paths, *legacy]:
            source = path.parent.name.removeprefix("source=")
            if wanted is not None and source not in wanted:
                continue
            if path in legacy:
                rows = legacy_label_rows(path)  # every row of that results file
                frame = pl.from_arrow(pa.Table.from_pylist(rows, schema=table_schema("labels")))
            else:
                frame = pl.read_parquet(path)
            frame = frame.with_columns(pl.lit(source).alias("source"))
            if with_part:
                frame = frame.with_columns(pl.lit(path.stem.removeprefix("part-")).alias("part"))
            frames.append(frame)
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def rows_by_part(frames: Iterable[pl.DataFrame]) -> dict[tuple[str, str], str]:
    """(source, uri) -> the shard whose part files hold the row, from tables read with_part (the lowest
    shard, should two hold one)."""
    held: dict[tuple[str, str], str] = {}
    for frame in frames:
        if frame.is_empty():
            continue
        for source, uri, part in frame.select("source", "uri", "part").iter_rows():
            held[(source, uri)] = min(part, held.get((source, uri), part))
    return held


def remove_parts_outside(out_root: str, run_date: str, sources: Iterable[str], shards: Iterable[str]) -> int:
    """Deletes the date's part files (of these sources) of shards not in `shards`: after a run whose plan
    kept every row that is to stay, what such files hold is gone from the inbox and pruned. Manifests
    last, as in commit. Returns the files deleted."""
    keep = {f"part-{shard}.parquet" for shard in shards}
    doomed = [path for table in sorted(RESULT_TABLES, key=lambda t: t == "manifest") for source in sources
              for path in sorted((Path(out_root) / table / f"run_date={run_date}" / f"source={source}")
                                 .glob("part-*.parquet")) if path.name not in keep]
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)


def read_rows(path: Path, uris: set[str]) -> list[dict]:
    """The rows of an existing partition file whose uri is in `uris` (nothing if there is no file)."""
    if not uris or not path.exists():
        return []
    return [row for row in pq.read_table(path).to_pylist() if row["uri"] in uris]


def legacy_label_rows(results_path: Path, uris: set[str] | None = None) -> list[dict]:
    """labels rows for `uris` (None: all) from a results partition written before the labels table (schema 1:
    the columns `<task>`, `<task>_confidence`, `<task>_decided_by`), so rows a rerun keeps lose no answer."""
    if (uris is not None and not uris) or not results_path.exists():
        return []
    names = pq.read_schema(results_path).names
    tasks = [c.removesuffix("_decided_by") for c in names if c.endswith("_decided_by") and c != "decided_by"]
    tasks = [t for t in tasks if t in names and f"{t}_confidence" in names]
    if not tasks:
        return []
    rows = []
    for row in pq.read_table(results_path).to_pylist() if uris is None else read_rows(results_path, uris):
        rows += [{"doc_id": row["doc_id"], "uri": row["uri"], "task": task, "label": row[task],
                  "confidence": row[f"{task}_confidence"], "decided_by": row[f"{task}_decided_by"],
                  "model_version_id": row.get("model_version_id"), "schema_version": SCHEMA_VERSION,
                  "run_id": row["run_id"]}
                 for task in sorted(tasks) if row[f"{task}_decided_by"] is not None]
    return rows


def stage_table_partition(out_root: str, table: str, run_date: str, source: str | None, rows: list[dict],
                          config: Config, shard: str = "00000", keep_uris: set[str] | None = None
                          ) -> tuple[Path, Path, int]:
    """Stages the partition's new content: `rows` plus the existing rows of the inputs this run keeps
    (keep_uris: skipped as done, or not seen by this run). Returns (temporary file, final path, rows)."""
    schema = table_schema(table)
    path = partition_path(out_root, table, run_date, source, shard)
    new_uris = {r["uri"] for r in rows}
    keep = (keep_uris or set()) - new_uris
    kept = read_rows(path, keep)
    if table == "labels":  # kept inputs of a date written before this table: their answers are in results
        have = {r["uri"] for r in kept}
        kept += legacy_label_rows(partition_path(out_root, "results", run_date, source, shard), keep - have)
    tmp, n = stage_partition(path, kept + rows, schema)
    return tmp, path, n


def with_labels(results: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """results with `<task>`, `<task>_confidence`, `<task>_decided_by` columns per task of `labels` (the
    wide view, for a reader who wants it; null where a document was not asked the task). Joined on the
    key columns both frames have (run_date, source, uri, doc_id)."""
    if labels.is_empty():
        return results
    keys = [c for c in ("run_date", "source", "uri", "doc_id") if c in results.columns and c in labels.columns]
    out = results
    for task in sorted(labels["task"].unique().to_list()):
        wide = labels.filter(pl.col("task") == task).select(
            *keys, pl.col("label").alias(task), pl.col("confidence").alias(f"{task}_confidence"),
            pl.col("decided_by").alias(f"{task}_decided_by"))
        out = out.join(wide, on=keys, how="left", nulls_equal=True)
    return out
