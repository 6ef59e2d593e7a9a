"""The review queue: the items a night left to a person, as a CSV they fill in and fine-tuning learns from.

One row per (document, item) decided by `review`: the document's text, the choices (a label task's
labels; a grounded field's candidate spans and null), and both tiers' answers with their confidences
(the results table's `tier_answers`). The reviewer writes the right answer in the one empty column,
`correct`; `sluicegate finetune --corrections FILE.csv` then learns from the filled rows
(processors/finetune/distill.py reads them).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from processors.ingest.read import read_and_ingest
from processors.sinks import read_table
from processors.tasks import extract
from schemas.config import Config
from schemas.records import Document

REVIEW_COLUMNS = ("run_date", "doc_id", "uri", "source", "item", "choices", "small_answer", "small_confidence",
                  "large_answer", "large_confidence", "correct", "text")
NULL = "null"  # what a reviewer writes for "this field is absent"


def reread(config: Config, wanted: dict[str, str]) -> dict[str, Document]:
    """The documents of these uris (uri -> source), read again from their inputs with the nightly run's own
    reading code; a uri whose input is gone or changed is missing from the result."""
    files: dict[str, str] = {}
    for uri, source in wanted.items():
        files.setdefault(uri.split("#", 1)[0], source)
    found: dict[str, Document] = {}
    for path, source in files.items():
        for record in read_and_ingest((path, source), config):
            if isinstance(record, Document) and record.uri in wanted:
                found[record.uri] = record
    return found


def _answers(row: dict) -> dict[tuple[str, str], tuple[str | None, float | None]]:
    return {(a["item"], a["tier"]): (a["value"], a["confidence"]) for a in row.get("tier_answers") or []}


def review_rows(config: Config, out_root: str, run_dates: Iterable[str]) -> list[dict]:
    """Every item decided by review on these dates, one row each (REVIEW_COLUMNS), `correct` empty."""
    tasks = {t.name: t for t in config.tasks}
    specs = {(source, s.name): s for source, ss in config.fields.items() for s in ss}
    rows: list[dict] = []
    for run_date in run_dates:
        results = read_table(out_root, "results", [run_date])
        if results.is_empty():
            continue
        labels = read_table(out_root, "labels", [run_date])
        fields = read_table(out_root, "fields", [run_date])
        by_doc = {(r["uri"], r["doc_id"]): r for r in results.iter_rows(named=True)}
        queue: list[tuple[dict, str]] = []
        if not labels.is_empty():
            reviewed = labels.filter((pl.col("decided_by") == "review") & pl.col("task").is_in(list(tasks)))
            for lab in reviewed.sort("uri", "task").iter_rows(named=True):
                if (lab["uri"], lab["doc_id"]) in by_doc:
                    queue.append((by_doc[(lab["uri"], lab["doc_id"])], lab["task"]))
        if not fields.is_empty():
            reviewed = fields.filter(pl.col("decided_by") == "review")
            for f in reviewed.iter_rows(named=True):
                if (f["uri"], f["doc_id"]) in by_doc:
                    queue.append((by_doc[(f["uri"], f["doc_id"])], f"field:{f['field']}"))
        docs = reread(config, {row["uri"]: row["source"] for row, _ in queue})
        for row, item in queue:
            answers = _answers(row)
            small, large = answers.get((item, "small"), (None, None)), answers.get((item, "large"), (None, None))
            doc = docs.get(row["uri"])
            if item.startswith("field:"):
                spec = specs.get((row["source"], item[len("field:"):]))
                found = ([c.text for c in extract.candidates(spec, doc.text)] if doc and spec and
                         extract.is_grounded(spec) else [])
                choices = [*found, NULL]
            else:
                choices = list(tasks[item].labels)
            rows.append({"run_date": run_date, "doc_id": row["doc_id"], "uri": row["uri"], "source": row["source"],
                         "item": item, "choices": " | ".join(choices),
                         "small_answer": small[0], "small_confidence": small[1],
                         "large_answer": large[0], "large_confidence": large[1], "correct": "",
                         "text": doc.text if doc else ""})
    return rows


def write_review(rows: list[dict], path: str | Path) -> Path:
    """The review CSV (UTF-8, one header row of REVIEW_COLUMNS)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(REVIEW_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in REVIEW_COLUMNS})
    return path
