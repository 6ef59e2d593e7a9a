"""Ticket exports (JSONL and CSV) -> one Document per ticket, one Rejected per unusable line or row.

Hostile exports, and what happens to them (never an exception, never a silently dropped ticket):
- a file over max_bytes: one error, too_large. Binary content: one error, binary_file.
- encodings are decided per line: the configured one, then UTF-8, then cp1252 (latin-1 never fails),
  so one cp1252 line does not turn a UTF-8 file into mojibake. UTF-16/32 files need their BOM.
- JSONL: a line that is not JSON is malformed_json, a JSON value that is not an object malformed_record.
  Lines are split on newline bytes only (a U+2028 inside a JSON string is data).
- CSV: a record with broken quoting (an unclosed quote would swallow the rest of the file) is one
  malformed_csv error, and reading resumes on the next physical line. Extra cells are kept in metadata
  `_extra_cells`; a missing body column is missing_body, an empty or whitespace body empty_body.
- control characters (except tab and newlines), DEL, C1 controls and lone surrogates are removed.
- a body longer than max_body_chars is cut to it (never split into several documents): the model only
  reads the start anyway; metadata `truncated_from_chars` records the original length.
- duplicate ticket ids are all kept (each line is an input); later ones carry `duplicate_of` = the uri
  of the first line with that id.
- the id and created_at columns (`[tickets.columns]`) become typed columns of results (`source_id`,
  `created_at`), not metadata strings: the Document carries them under SOURCE_ID_KEY and CREATED_AT_KEY
  (created_at as ISO 8601 UTC), and the sink takes them out (pop_typed_metadata). A created_at that
  does not parse stays in metadata as `created_at_unparsed`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import PurePosixPath

from processors.ingest.text import clean_text
from schemas.config import TicketColumns, TicketOptions
from schemas.records import Document, Rejected

csv.field_size_limit(2**31 - 1)  # the default (128 KiB per cell) fails on long bodies; max_body_chars cuts them

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(line: bytes, encoding: str) -> tuple[str, str]:
    """One line: the configured encoding, then UTF-8, then cp1252, then latin-1 (which never fails)."""
    for enc in dict.fromkeys((encoding, "utf-8-sig", "cp1252")):
        try:
            return line.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    return line.decode("latin-1"), "latin-1"


def _lines(data: bytes, encoding: str) -> list[tuple[str, str]]:
    """(text, encoding) per physical line, without line ends. A BOM decides for the whole file."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            text = data.decode(enc, errors="replace")
            return [(line.rstrip("\r"), enc) for line in text.split("\n")]
    return [_decode(raw.rstrip(b"\r"), encoding) for raw in data.split(b"\n")]


def _is_binary(data: bytes) -> bool:
    """Mostly control bytes (not a text export in any encoding we read)."""
    if any(data.startswith(bom) for bom, _ in _BOMS):
        return False
    head = data[:8192]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    return bool(head) and controls / len(head) > 0.1


def _reject(uri: str, reason: str, message: str, doc_id: str | None = None) -> Rejected:
    return Rejected(uri=uri, source="tickets", stage="ingest", reason=reason, message=message, doc_id=doc_id)


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


SOURCE_ID_KEY = "ticket_id"  # the Document's metadata keys the sink turns into results.source_id / created_at
CREATED_AT_KEY = "created_at"


def parse_created_at(text: str) -> datetime | None:
    """A ticket's creation time in UTC: ISO 8601 (with 'Z', an offset, or none: read as UTC), a date alone,
    or Unix seconds/milliseconds. None when empty or unparseable."""
    text = text.strip()
    if not text:
        return None
    try:
        if re.fullmatch(r"\d{9,13}(\.\d+)?", text):  # epoch: 13 digits are milliseconds
            seconds = float(text) / (1000 if len(text.split(".")[0]) > 11 else 1)
            return datetime.fromtimestamp(seconds, UTC)
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def pop_typed_metadata(metadata: dict[str, str]) -> tuple[str | None, datetime | None]:
    """Takes (source_id, created_at) out of a ticket Document's metadata (the rest stays metadata)."""
    source_id = metadata.pop(SOURCE_ID_KEY, "") or None
    created = metadata.pop(CREATED_AT_KEY, "")
    return source_id, datetime.fromisoformat(created) if created else None


def _to_document(uri: str, doc_id: str, record: dict, cols: TicketColumns, options: TicketOptions,
                 encoding: str, seen: dict[str, str]) -> Document | Rejected:
    def text_of(key: str) -> str:
        return clean_text(_as_text(record.get(key))).strip()

    body, subject = text_of(cols.body), text_of(cols.subject)
    if not body:
        if cols.body not in record:
            columns = ", ".join(sorted(clean_text(str(k)) for k in record if k is not None))[:300]
            return _reject(uri, "missing_body", f"column {cols.body!r} is missing (columns: {columns})", doc_id)
        return _reject(uri, "empty_body", f"column {cols.body!r} is empty or whitespace", doc_id)
    # id and created_at become typed columns (source_id, created_at), not metadata strings
    metadata = {clean_text(str(k)): clean_text(_as_text(v))[:1000] for k, v in record.items()
                if k not in (cols.body, cols.subject, cols.id, cols.created_at) and k is not None}
    ticket_id = text_of(cols.id)
    created_text = text_of(cols.created_at)
    created = parse_created_at(created_text)
    metadata[SOURCE_ID_KEY] = ticket_id
    metadata[CREATED_AT_KEY] = created.isoformat() if created else ""
    if created_text and created is None:
        metadata["created_at_unparsed"] = created_text[:1000]
    metadata["encoding"] = encoding
    if ticket_id:
        if ticket_id in seen:
            metadata["duplicate_of"] = seen[ticket_id]
        else:
            seen[ticket_id] = uri
    if len(body) > options.max_body_chars:
        metadata["truncated_from_chars"] = str(len(body))
        body = body[: options.max_body_chars]
    text = f"{subject}\n\n{body}" if subject else body
    return Document(doc_id=doc_id, source="tickets", uri=uri, text=text, pages=[text], metadata=metadata)


def read_tickets(uri: str, data: bytes, options: TicketOptions) -> list[Document | Rejected]:
    """One export file -> one record per ticket line/row. Never raises."""
    name = PurePosixPath(uri.split("://")[-1]).name
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        return [_reject(uri, "unsupported_format", f"ticket files must be .jsonl, .ndjson or .csv, not {suffix!r}")]
    if len(data) > options.max_bytes:
        return [_reject(uri, "too_large", f"{len(data)} bytes > limit {options.max_bytes}")]
    if _is_binary(data):
        return [_reject(uri, "binary_file", f"mostly control bytes, not a text export; starts with {data[:16]!r}",
                        hashlib.sha256(data).hexdigest())]
    cols = options.columns_for(name)
    lines = _lines(data, options.encoding)
    if suffix == ".csv":
        out = _read_csv(uri, lines, cols, options)
    else:
        out = _read_jsonl(uri, lines, cols, options)
    return out or [_reject(uri, "empty_file", "no ticket lines or rows in the file")]


def _read_jsonl(uri: str, lines: list[tuple[str, str]], cols: TicketColumns,
                options: TicketOptions) -> list[Document | Rejected]:
    out: list[Document | Rejected] = []
    seen: dict[str, str] = {}
    for lineno, (line, encoding) in enumerate(lines, start=1):
        if not line.strip():
            continue
        line_uri = f"{uri}#L{lineno}"
        doc_id = hashlib.sha256(line.encode("utf-8", errors="surrogatepass")).hexdigest()
        try:
            record = json.loads(line, strict=False)  # control characters inside strings are data
        except (ValueError, RecursionError) as e:  # ValueError: also an integer of over 4,300 digits
            out.append(_reject(line_uri, "malformed_json", f"line {lineno}: {type(e).__name__}: {e}"[:300], doc_id))
            continue
        if not isinstance(record, dict):
            out.append(_reject(line_uri, "malformed_record", f"line {lineno} is a JSON {type(record).__name__}, "
                                                             "not an object", doc_id))
            continue
        out.append(_to_document(line_uri, doc_id, record, cols, options, encoding, seen))
    return out


def _read_csv(uri: str, lines: list[tuple[str, str]], cols: TicketColumns,
              options: TicketOptions) -> list[Document | Rejected]:
    """Rows of a CSV with a header. A record with broken quoting is one error; reading resumes after it."""
    texts = [line for line, _ in lines]
    start = next((i for i, line in enumerate(texts) if line.strip()), None)
    if start is None:
        return []
    header = next(csv.reader([texts[start]]), [])
    out: list[Document | Rejected] = []
    seen: dict[str, str] = {}
    rowno, pos = 0, start + 1
    while pos < len(texts):
        reader = csv.reader((line + "\n" for line in itertools.islice(texts, pos, None)), strict=True)
        record_start = pos
        try:
            for cells in reader:
                record_end = pos + reader.line_num  # lines [record_start, record_end) hold this record
                if cells:  # a blank line is no record
                    rowno += 1
                    out.append(_csv_row(uri, rowno, header, cells, cols, options,
                                        _encoding_of(lines[record_start:record_end], options.encoding), seen))
                record_start = record_end
            break
        except csv.Error as e:
            rowno += 1
            bad = texts[record_start]
            doc_id = hashlib.sha256(bad.encode("utf-8", errors="surrogatepass")).hexdigest()
            out.append(_reject(f"{uri}#R{rowno}", "malformed_csv",
                               f"line {record_start + 1}: {e}; reading resumes on the next line", doc_id))
            pos = record_start + 1
    return out


def _encoding_of(lines: list[tuple[str, str]], default: str) -> str:
    """The encoding of a record's lines; ASCII lines fit any, so only the others count."""
    found = sorted({enc for line, enc in lines if not line.isascii()})
    if not found:
        return default
    return found[0] if len(found) == 1 else "mixed:" + "+".join(found)


def _csv_row(uri: str, rowno: int, header: list[str], cells: list[str], cols: TicketColumns,
             options: TicketOptions, encoding: str, seen: dict[str, str]) -> Document | Rejected:
    row: dict[str, object] = dict(zip(header, cells, strict=False))
    for name in header[len(cells):]:
        row.setdefault(name, None)  # a short row: the missing cells are empty
    if len(cells) > len(header):  # more cells than header columns: keep them, but say so
        row["_extra_cells"] = json.dumps(cells[len(header):])
    # CSV has no raw line per record; the canonical JSON of the row stands for its bytes.
    doc_id = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()
    return _to_document(f"{uri}#R{rowno}", doc_id, row, cols, options, encoding, seen)
