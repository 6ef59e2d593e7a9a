"""Ticket exports (JSONL and CSV) -> one Document per ticket, one Rejected per unusable line or row."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import PurePosixPath

from schemas.config import TicketColumns, TicketOptions
from schemas.records import Document, Rejected

_CONTROL = {c: None for c in range(32) if c not in (9, 10, 13)}  # strip control chars, keep tab/newlines


def _decode(data: bytes, encoding: str) -> tuple[str, str]:
    """Decodes with the configured encoding, falling back to cp1252 then latin-1 (never fails)."""
    for enc in (encoding, "utf-8-sig", "cp1252"):
        try:
            return data.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1"), "latin-1"


def _reject(uri: str, reason: str, message: str, doc_id: str | None = None) -> Rejected:
    return Rejected(uri=uri, source="tickets", stage="ingest", reason=reason, message=message, doc_id=doc_id)


def _to_document(uri: str, doc_id: str, record: dict, cols: TicketColumns, options: TicketOptions,
                 encoding: str) -> Document | Rejected:
    def text_of(key: str) -> str:
        value = record.get(key)
        return "" if value is None else str(value).translate(_CONTROL).strip()

    body, subject = text_of(cols.body), text_of(cols.subject)
    if not body:
        missing = cols.body not in record
        return _reject(uri, "missing_body" if missing else "empty_body",
                       f"column {cols.body!r} is {'missing' if missing else 'empty'}", doc_id)
    metadata = {str(k): ("" if v is None else str(v))[:1000] for k, v in record.items()
                if k not in (cols.body, cols.subject) and k is not None}
    metadata["ticket_id"] = text_of(cols.id)
    metadata["created_at"] = text_of(cols.created_at)
    metadata["encoding"] = encoding
    if len(body) > options.max_body_chars:
        metadata["truncated_from_chars"] = str(len(body))
        body = body[: options.max_body_chars]
    text = f"{subject}\n\n{body}" if subject else body
    return Document(doc_id=doc_id, source="tickets", uri=uri, text=text, pages=[text], metadata=metadata)


def read_tickets(uri: str, data: bytes, options: TicketOptions) -> list[Document | Rejected]:
    name = PurePosixPath(uri.split("://")[-1]).name
    cols = options.columns_for(name)
    text, encoding = _decode(data, options.encoding)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(uri, text, cols, options, encoding)
    if suffix == ".csv":
        return _read_csv(uri, text, cols, options, encoding)
    return [_reject(uri, "unsupported_format", f"ticket files must be .jsonl, .ndjson or .csv, not {suffix!r}")]


def _read_jsonl(uri: str, text: str, cols: TicketColumns, options: TicketOptions,
                encoding: str) -> list[Document | Rejected]:
    out: list[Document | Rejected] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        line_uri = f"{uri}#L{lineno}"
        doc_id = hashlib.sha256(line.encode("utf-8")).hexdigest()
        try:
            record = json.loads(line, strict=False)  # control characters inside strings are data
        except json.JSONDecodeError as e:
            out.append(_reject(line_uri, "malformed_json", f"line {lineno}: {e}", doc_id))
            continue
        if not isinstance(record, dict):
            out.append(_reject(line_uri, "malformed_record", f"line {lineno} is a JSON {type(record).__name__}, "
                                                             "not an object", doc_id))
            continue
        out.append(_to_document(line_uri, doc_id, record, cols, options, encoding))
    if not out:
        out.append(_reject(uri, "empty_file", "no ticket lines in the file"))
    return out


def _read_csv(uri: str, text: str, cols: TicketColumns, options: TicketOptions,
              encoding: str) -> list[Document | Rejected]:
    out: list[Document | Rejected] = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for rowno, row in enumerate(reader, start=1):
            row_uri = f"{uri}#R{rowno}"
            if None in row:  # more cells than header columns: keep them, but say so
                row["_extra_cells"] = json.dumps(row.pop(None))
            # CSV has no raw line per record; the canonical JSON of the row stands for its bytes.
            doc_id = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
            out.append(_to_document(row_uri, doc_id, row, cols, options, encoding))
    except csv.Error as e:
        out.append(_reject(f"{uri}#R{len(out) + 1}", "malformed_csv", f"{e}; rows after this one are not read"))
    if not out:
        out.append(_reject(uri, "empty_file", "no ticket rows in the file"))
    return out
