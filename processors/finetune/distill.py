"""Distillation input: what the large tier decided on past nights becomes tomorrow's training data.

The results, labels and fields tables of a date range are read back; every item a large tier decided
(labels and fields rows with decided_by 'large'; fields also valid) becomes a label or
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
from processors.review import reread
from processors.sinks import read_table
from schemas.config import Config

log = logging.getLogger(__name__)


def _days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _correction_rows(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(encoding="utf-8", newline="") as f:
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(f)]


def read_corrections(path: str | Path | None, config: Config | None = None) -> dict[str, dict[str, str]]:
    """doc_id -> {task: label, 'field.<name>': value}; empty cells are 'no correction'.

    Two layouts: the review CSV (`sluicegate review`: one row per item, the answer in `correct`), or one
    row per document with a column per task and per `field.<name>`. With a configuration, only its
    tasks and fields are kept (the review CSV's other columns are context, not answers).
    """
    if not path:
        return {}
    known = None if config is None else ({t.name for t in config.tasks}
                                         | {f"field.{s.name}" for ss in config.fields.values() for s in ss})
    out: dict[str, dict[str, str]] = {}
    for row in _correction_rows(path):
        doc_id = row.get("doc_id", "")
        if not doc_id:
            continue
        if "item" in row and "correct" in row:  # the review layout
            item = row["item"]
            fixes = {item.replace("field:", "field.", 1): row["correct"]} if row["correct"] else {}
        else:
            fixes = {k: v for k, v in row.items() if k != "doc_id" and v}
        out.setdefault(doc_id, {}).update({k: v for k, v in fixes.items() if known is None or k in known})
    return {doc_id: fixes for doc_id, fixes in out.items() if fixes}


def corrected_examples(config: Config, path: str | Path) -> tuple[list[LabelledExample], dict[str, int]]:
    """Training examples from a filled review CSV alone (no distillation range): each corrected document is
    read again from its uri, and carries the corrected labels and fields."""
    corrections = read_corrections(path, config)
    located = {row["doc_id"]: (row.get("uri", ""), row.get("source", "")) for row in _correction_rows(path)
               if row.get("doc_id") in corrections and row.get("uri")}
    docs = reread(config, {uri: source for uri, source in located.values()})
    examples, stats = [], {"corrected": len(corrections), "unreadable": 0}
    for doc_id, fixes in corrections.items():
        doc = docs.get(located.get(doc_id, ("", ""))[0])
        if doc is None or doc.doc_id != doc_id:  # gone, or its bytes changed since the review
            stats["unreadable"] += 1
            continue
        labels = {k: v for k, v in fixes.items() if not k.startswith("field.")}
        fields = {k[len("field."):]: None if v.lower() == "null" else v for k, v in fixes.items()
                  if k.startswith("field.")}
        examples.append(LabelledExample(doc_id, doc.text, doc.source, labels, fields, pages=doc.pages))
    return examples, stats


def distilled_examples(config: Config, out_root: str, start: date, end: date,
                       corrections_path: str | Path | None = None) -> tuple[list[LabelledExample], dict[str, int]]:
    """Training examples from the large tier's decisions (and corrections) in [start, end]."""
    results = read_table(out_root, "results", _days(start, end))
    labels = read_table(out_root, "labels", _days(start, end))
    fields = read_table(out_root, "fields", _days(start, end))
    corrections = read_corrections(corrections_path, config)
    stats = {"large_labels": 0, "large_fields": 0, "corrected": 0, "unreadable": 0}
    wanted: dict[str, dict] = {}  # uri -> {"doc_id", "source", "labels", "fields"}
    large: dict[tuple[str, str], dict[str, str]] = {}  # (uri, doc_id) -> task -> the large tier's label
    if not labels.is_empty():
        decided = labels.filter((pl.col("decided_by") == "large") & pl.col("label").is_not_null()
                                & pl.col("task").is_in([t.name for t in config.tasks]))
        for row in decided.iter_rows(named=True):
            large.setdefault((row["uri"], row["doc_id"]), {})[row["task"]] = row["label"]
    if not results.is_empty():
        for row in results.iter_rows(named=True):
            learned = large.get((row["uri"], row["doc_id"]), {})
            if learned or row["doc_id"] in corrections:
                wanted[row["uri"]] = {"doc_id": row["doc_id"], "source": row["source"], "labels": dict(learned),
                                      "fields": {}}
                stats["large_labels"] += len(learned)
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
    texts = reread(config, {uri: entry["source"] for uri, entry in wanted.items()})
    examples = []
    for uri, entry in wanted.items():
        doc = texts.get(uri)
        if doc is None:
            stats["unreadable"] += 1
            continue
        examples.append(LabelledExample(entry["doc_id"], doc.text, entry["source"], entry["labels"],
                                        entry["fields"], pages=doc.pages))
    return examples, stats
