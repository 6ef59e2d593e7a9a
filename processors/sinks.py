"""Rows for the output tables, and atomic partition writes.

A partition is `<out>/<table>/run_date=<date>/source=<source>/part-<shard>.parquet`. It is written
to a temporary file beside its final name and renamed into place, so a reader sees the old file or
the new one, never half of one, and a rerun of the date replaces it instead of adding to it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from processors.routing import overall_tier
from processors.tasks import extract, label
from schemas.config import Config
from schemas.records import Document, FieldPrediction, LabelPrediction, Rejected
from schemas.tables import RESULT_TABLES, RUNS_TABLE, SCHEMA_VERSION, table_schema

TASK_VERSIONS = {"label": label.TASK_VERSION, "extract": extract.TASK_VERSION}


def result_row(doc: Document, config: Config, run_id: str, config_hash: str) -> dict:
    row: dict = {"doc_id": doc.doc_id, "uri": doc.uri}
    for task in config.tasks:
        pred = doc.labels.get(task.name)
        row[task.name] = pred.label if pred else None
        row[f"{task.name}_confidence"] = pred.confidence if pred else None
        row[f"{task.name}_decided_by"] = doc.decided_by.get(task.name) if pred else None
    small, large = doc.usage.get("small"), doc.usage.get("large")
    row.update(
        decided_by=overall_tier(doc.decided_by),
        escalation_reasons=list(doc.escalation_reasons),
        escalation_failed=doc.escalation_failed,
        tier_answers=tier_answers(doc),
        n_pages=len(doc.pages) or 1,
        n_chars=len(doc.text),
        metadata=sorted(doc.metadata.items()),
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
    return row


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
            "normalized": pred.normalized, "confidence": pred.confidence, "page": pred.page,
            "span_start": pred.span_start, "span_end": pred.span_end,
            "decided_by": doc.decided_by.get(f"field:{name}", pred.tier), "valid": pred.valid,
            "problems": list(pred.problems), "routing_reasons": _item_reasons(doc, f"field:{name}"),
            "model_version": doc.model_versions.get(pred.tier),
            "model_version_id": config.models.active,
            "task_version": extract.TASK_VERSION, "schema_version": SCHEMA_VERSION, "run_id": run_id,
        })
    return rows


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


def commit(out_root: str, run_date: str, run_id: str, staged: Iterable[tuple[str, str]],
           after_each: Callable[[], None] | None = None) -> int:
    """Renames a run's staged files (temporary -> final) into place, all of them or, after a crash, on the
    next run of the date (recover): an input whose outcome changed moves between tables, and readers must
    not keep half of such a move (the input in both tables, or in neither).

    The list is written to a journal first; manifest partitions are renamed last. Returns the renames.
    after_each: called after each rename (the crash tests' kill point)."""
    root = Path(out_root)
    pairs = sorted(((str(Path(t).relative_to(root)), str(Path(f).relative_to(root))) for t, f in staged),
                   key=lambda pair: (pair[1].startswith("manifest/"), pair[1]))
    journal = _journal_dir(out_root, run_date) / f"{run_id}.json"
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


def read_table(out_root: str, table: str, run_dates: Iterable[str], sources: Iterable[str] | None = None
               ) -> pl.DataFrame:
    """Every partition file of `table` for these run dates (and these sources, when given) as one frame,
    with a `source` column from the path; an empty frame when there is none."""
    wanted = None if sources is None else set(sources)
    frames = []
    for run_date in run_dates:
        folder = Path(out_root) / table / f"run_date={run_date}"
        for path in sorted(folder.glob("source=*/part-*.parquet")):
            source = path.parent.name.removeprefix("source=")
            if wanted is None or source in wanted:
                frames.append(pl.read_parquet(path).with_columns(pl.lit(source).alias("source")))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def read_rows(path: Path, uris: set[str]) -> list[dict]:
    """The rows of an existing partition file whose uri is in `uris` (nothing if there is no file)."""
    if not uris or not path.exists():
        return []
    return [row for row in pq.read_table(path).to_pylist() if row["uri"] in uris]


def stage_table_partition(out_root: str, table: str, run_date: str, source: str | None, rows: list[dict],
                          config: Config, shard: str = "00000", keep_uris: set[str] | None = None
                          ) -> tuple[Path, Path, int]:
    """Stages the partition's new content: `rows` plus the existing rows of the inputs this run keeps
    (keep_uris: skipped as done, or not seen by this run). Returns (temporary file, final path, rows)."""
    schema = table_schema(table, [t.name for t in config.tasks])
    path = partition_path(out_root, table, run_date, source, shard)
    new_uris = {r["uri"] for r in rows}
    kept = [r for r in read_rows(path, keep_uris or set()) if r["uri"] not in new_uris]
    tmp, n = stage_partition(path, kept + rows, schema)
    return tmp, path, n
