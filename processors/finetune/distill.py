"""Distillation input: what the large tier decided on past nights becomes tomorrow's training data.

The results and fields tables of a date range are read back; every item a large tier decided
(`<task>_decided_by == 'large'`, fields rows with decided_by 'large' and valid) becomes a label or
field of a training example. The documents' texts are not stored in the tables, so their inputs are
read again from their uris with the same ingest code the nightly run uses. Human review corrections
(a CSV with `doc_id` and one column per task or `field.<name>`) override the large tier's answers
and may add documents that were not escalated at all.
"""

from __future__ import annotations

import csv
import logging
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from processors.datasets import LabelledExample
from processors.ingest.read import read_and_ingest
from processors.sinks import read_table
from schemas.config import Config
from schemas.records import Document

log = logging.getLogger(__name__)


def _days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def read_corrections(path: str | Path | None) -> dict[str, dict[str, str | None]]:
    """doc_id -> {task: label, 'field.<name>': value}; empty cells are 'no correction'."""
    if not path:
        return {}
    out: dict[str, dict[str, str | None]] = {}
    with Path(path).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            doc_id = (row.pop("doc_id", "") or "").strip()
            if doc_id:
                out[doc_id] = {k: v.strip() for k, v in row.items() if k and v and v.strip()}
    return out


def distilled_examples(config: Config, out_root: str, start: date, end: date,
                       corrections_path: str | Path | None = None) -> tuple[list[LabelledExample], dict[str, int]]:
    """Training examples from the large tier's decisions (and corrections) in [start, end]."""
    results = read_table(out_root, "results", _days(start, end))
    fields = read_table(out_root, "fields", _days(start, end))
    corrections = read_corrections(corrections_path)
    stats = {"large_labels": 0, "large_fields": 0, "corrected": 0, "unreadable": 0}
    wanted: dict[str, dict] = {}  # uri -> {"doc_id", "source", "labels", "fields"}
    if not results.is_empty():
        for row in results.iter_rows(named=True):
            labels = {t.name: row[t.name] for t in config.tasks
                      if row.get(f"{t.name}_decided_by") == "large" and row.get(t.name)}
            if labels or row["doc_id"] in corrections:
                wanted[row["uri"]] = {"doc_id": row["doc_id"], "source": row["source"], "labels": labels,
                                      "fields": {}}
                stats["large_labels"] += len(labels)
    if not fields.is_empty():
        decided = fields.filter((pl.col("decided_by") == "large") & pl.col("valid"))
        for row in decided.iter_rows(named=True):
            entry = wanted.setdefault(row["uri"], {"doc_id": row["doc_id"], "source": row["source"],
                                                   "labels": {}, "fields": {}})
            entry["fields"][row["field"]] = row["value"]
            stats["large_fields"] += 1
    for entry in wanted.values():
        fix = corrections.get(entry["doc_id"], {})
        for key, value in fix.items():
            if key.startswith("field."):
                entry["fields"][key[len("field."):]] = None if value.lower() == "null" else value
            else:
                entry["labels"][key] = value
        stats["corrected"] += bool(fix)
    texts = _texts(config, wanted)
    examples = []
    for uri, entry in wanted.items():
        doc = texts.get(uri)
        if doc is None:
            stats["unreadable"] += 1
            continue
        examples.append(LabelledExample(entry["doc_id"], doc.text, entry["source"], entry["labels"],
                                        entry["fields"], pages=doc.pages))
    return examples, stats


def _texts(config: Config, wanted: dict[str, dict]) -> dict[str, Document]:
    """Re-ingests each file once and keeps the documents whose uri is wanted."""
    files: dict[str, str] = {}
    for uri, entry in wanted.items():
        files.setdefault(uri.split("#", 1)[0], entry["source"])
    found: dict[str, Document] = {}
    for path, source in files.items():
        for record in read_and_ingest((path, source), config):
            if isinstance(record, Document) and record.uri in wanted:
                found[record.uri] = record
    return found
