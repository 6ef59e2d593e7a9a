"""Labelled examples for fine-tuning and evaluation: one format, and adapters for the public sets.

The sluicegate format (CSV or JSONL, one example per row):
- `text` (required): the ticket body or document text.
- `id` (optional): a stable id; default: the sha256 of the text.
- `source` (optional): `tickets` (default) or `pdf`; decides which prompts and fields apply.
- `field.<name>` columns (optional): the expected value of an extracted field, empty = absent.
  A JSONL row may instead carry a `fields` object. Fields a row does not mention are unknown.
- every other column is a label task: its name is the task name, its value the label
  (empty = not labelled for that task). Label sets not in the configuration are learned from the data.

Adapters turn the public sets in ../shared/data into this shape, picked from the file's columns
(or named with `format=`): bitext (category, intent, one entity as a field), airline (sentiment),
vader (sentiment), invoice2data (a folder of invoice PDFs with expected-fields JSON).
Loading never raises for a bad row; it raises DatasetError only when the file as a whole is unusable.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from schemas.config import PdfOptions

FORMATS = ("sluicegate", "bitext", "airline", "vader", "invoice2data")
_RESERVED = {"id", "text", "source", "fields"}


class DatasetError(ValueError):
    """The file cannot be read as labelled examples (missing text column, unknown format ...)."""


@dataclass
class LabelledExample:
    example_id: str
    text: str
    source: str = "tickets"
    labels: dict[str, str] = field(default_factory=dict)  # task -> gold label (only labelled tasks)
    # field -> gold value (None = absent). With fields_complete, a field not listed is absent;
    # otherwise it is unknown and neither trained nor scored.
    fields: dict[str, str | None] = field(default_factory=dict)
    fields_complete: bool = False
    pages: list[str] = field(default_factory=list)

    def field_value(self, name: str) -> tuple[bool, str | None]:
        """(known, value) for one field."""
        if name in self.fields:
            return True, self.fields[name]
        return self.fields_complete, None


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def detect_format(path: Path) -> str:
    """Picks the adapter from the file's columns (or a folder of PDFs + JSON: invoice2data)."""
    if path.is_dir():
        if any(path.glob("*.pdf")) and any(path.glob("*.json")):
            return "invoice2data"
        raise DatasetError(f"{path}: a folder must hold invoice PDFs with same-named .json files")
    columns = set(_columns(path))
    if {"utterance", "intent", "category"} <= columns:
        return "bitext"
    if {"airline_sentiment", "text"} <= columns:
        return "airline"
    if {"polarity3_derived", "text"} <= columns:
        return "vader"
    if "text" in columns:
        return "sluicegate"
    raise DatasetError(f"{path}: no 'text' column and not a known data set (columns: {sorted(columns)[:12]})")


def _columns(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return list(row) if isinstance(row, dict) else []
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return next(csv.reader(f), [])


def _rows(path: Path) -> Iterable[dict]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a bad line is skipped; evaluation counts what loaded
                if isinstance(row, dict):
                    yield row
        return
    with path.open(encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _generic(path: Path) -> list[LabelledExample]:
    out = []
    for row in _rows(path):
        text = _clean(row.get("text"))
        if not text:
            continue
        fields: dict[str, str | None] = {}
        if isinstance(row.get("fields"), dict):
            fields.update({k: _clean(v) for k, v in row["fields"].items()})
        labels = {}
        for key, value in row.items():
            if key.startswith("field."):
                fields[key[len("field."):]] = _clean(value)
            elif key not in _RESERVED and (label := _clean(value)) and not isinstance(value, dict | list):
                labels[key] = label
        source = _clean(row.get("source")) or "tickets"
        out.append(LabelledExample(_clean(row.get("id")) or text_id(text), text, source, labels, fields))
    return out


def _bitext(path: Path) -> list[LabelledExample]:
    out = []
    for row in _rows(path):
        text = _clean(row.get("utterance"))
        if not text:
            continue
        labels = {k: v for k in ("category", "intent") if (v := _clean(row.get(k)))}
        entity, value = _clean(row.get("entity_type")), _clean(row.get("entity_value"))
        # One entity per utterance is annotated: every other field is absent.
        fields = {entity: value} if entity and value else {}
        out.append(LabelledExample(text_id(text), text, "tickets", labels, fields, fields_complete=True))
    return out


def _sentiment(path: Path, text_col: str, label_col: str) -> list[LabelledExample]:
    out = []
    for row in _rows(path):
        text, label = _clean(row.get(text_col)), _clean(row.get(label_col))
        if text and label:
            key = _clean(row.get("tweet_id")) or _clean(row.get("id")) or text_id(text)
            out.append(LabelledExample(f"{path.stem}:{key}", text, "tickets", {"sentiment": label.lower()}))
    return out


# invoice2data's keys -> the field names of the shipped PDF configuration.
_INVOICE_FIELDS = {"invoice_number": "invoice_number", "date": "date", "amount": "total_amount",
                   "currency": "currency"}


def _invoice2data(folder: Path) -> list[LabelledExample]:
    from processors.ingest.pdf import read_pdf
    from schemas.records import Document

    out = []
    for expected in sorted(folder.glob("*.json")):
        pdf = expected.with_suffix(".pdf")
        if not pdf.exists():
            continue
        try:
            record = json.loads(expected.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        record = record[0] if isinstance(record, list) and record else record
        if not isinstance(record, dict):
            continue
        doc = read_pdf(str(pdf), pdf.read_bytes(), PdfOptions())
        if not isinstance(doc, Document):
            continue  # unreadable PDFs are the ingest tests' business, not the evaluation's
        fields = {ours: _clean(record[theirs]) for theirs, ours in _INVOICE_FIELDS.items() if theirs in record}
        out.append(LabelledExample(pdf.name, doc.text, "pdf", {}, fields, pages=doc.pages))
    return out


def load_examples(path: str | Path, format: str | None = None) -> list[LabelledExample]:
    """Reads labelled examples from a file (or an invoice2data folder) with the right adapter."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "bitext":
        return _bitext(path)
    if fmt == "airline":
        return _sentiment(path, "text", "airline_sentiment")
    if fmt == "vader":
        return _sentiment(path, "text", "polarity3_derived")
    if fmt == "invoice2data":
        return _invoice2data(path)
    return _generic(path)


def label_sets(examples: Iterable[LabelledExample]) -> dict[str, list[str]]:
    """Every label task in the data and its labels, sorted (a stable order for prompts and versions)."""
    sets: dict[str, set[str]] = {}
    for ex in examples:
        for task, label in ex.labels.items():
            sets.setdefault(task, set()).add(label)
    return {task: sorted(labels) for task, labels in sorted(sets.items())}


def sample(examples: list[LabelledExample], n: int | None, seed: int = 0,
           stratify: str | None = None) -> list[LabelledExample]:
    """A reproducible subset of n examples (the same for the same seed), in the examples' own order.

    With `stratify`, the subset keeps the data's class proportions for that task's label (examples
    without it form one more group): each group gets its share of n by largest-remainder
    apportionment (the floor of n * share, then the leftover seats to the largest remainders, ties
    broken by the seed), so the total is exactly n. Priors win: a label too rare for a seat gets
    none. Within a group the examples are picked with the seeded generator.
    """
    if n is None or n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    if not stratify:
        chosen = set(rng.sample(range(len(examples)), max(n, 0)))
        return [ex for i, ex in enumerate(examples) if i in chosen]
    groups: dict[str, list[int]] = {}  # label -> positions, in first-seen order
    for i, ex in enumerate(examples):
        groups.setdefault(ex.labels.get(stratify, ""), []).append(i)
    total, n = len(examples), max(n, 0)
    # exact integer quotas: n * size / total = floor + remainder / total
    quota = {label: n * len(members) // total for label, members in groups.items()}
    remainder = {label: n * len(members) % total for label, members in groups.items()}
    tiebreak = {label: rng.random() for label in groups}
    leftover = n - sum(quota.values())
    for label in sorted(groups, key=lambda g: (-remainder[g], tiebreak[g]))[:leftover]:
        quota[label] += 1  # never above the group's size: n < total, so n * size / total < size
    chosen = set()
    for label, members in groups.items():
        chosen.update(rng.sample(members, quota[label]))
    return [ex for i, ex in enumerate(examples) if i in chosen]


def split(examples: list[LabelledExample], holdout: float, seed: int = 0) -> tuple[list, list]:
    """Deterministic train / held-out split by example id (stable when rows are added)."""
    train, held = [], []
    for ex in examples:
        bucket = int(hashlib.sha256(f"{seed}:{ex.example_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < holdout else train).append(ex)
    return train, held


def data_hash(paths: Iterable[str | Path]) -> str:
    """sha256 over the training files' bytes (a folder: its files, sorted): recorded in the model version."""
    digest = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def write_ticket_export(examples: list[LabelledExample], folder: Path, files: int = 1) -> list[Path]:
    """Writes examples as a day of ticket exports (`export-NN.jsonl`, the fixtures' columns: ticket_id, subject,
    body, created_at), split evenly over `files` files: a generated night for benchmarks and scale-out tests."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(examples) // max(1, files))
    paths = []
    for n in range(max(1, files)):
        chunk = examples[n * per_file:(n + 1) * per_file]
        path = folder / f"export-{n:02d}.jsonl"
        path.write_text("".join(json.dumps({"ticket_id": f"G-{n:02d}-{i:05d}", "subject": "", "body": e.text,
                                            "created_at": "2026-11-20T08:00:00Z"}) + "\n"
                                for i, e in enumerate(chunk)))
        paths.append(path)
    return paths
