"""PDF ingest with pypdf: text per page, page count, metadata; encrypted files opened with configured passwords.

`read_pdf` is what the pipeline calls: cheap checks in the caller's process, then `parse_pdf` in a
worker process with a deadline and a memory cap (processors/ingest/isolate.py), because pypdf runs
pure Python and a pathological file could otherwise spin or allocate without bound. Every outcome is a
Document or a Rejected with a specific reason:

  empty_file, too_large, not_a_pdf, corrupt_pdf (truncated, no xref, garbage: the message says which),
  encrypted_no_password, wrong_password, encryption_unsupported, too_many_pages, decompression_bomb,
  unsupported_filter (e.g. Brotli without the brotli package), parse_timeout, memory_limit,
  parser_crashed, needs_ocr (a scan, OCR off or tesseract missing), ocr_no_text (OCR found nothing).

Text beyond max_chars is cut (metadata truncated_at_chars); a Document never has empty text.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from fnmatch import fnmatch
from pathlib import PurePosixPath

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

from processors.ingest.isolate import IsolatedError, run_isolated
from processors.ingest.ocr import OcrTimeout, OcrUnavailable, ocr_pages
from processors.ingest.text import clean_text
from schemas.config import PdfOptions
from schemas.records import Document, Rejected

# pypdf logs a warning for every odd object in a damaged file; the errors table has what matters.
logging.getLogger("pypdf").setLevel(logging.ERROR)

PASSWORDS_ENV = "SLUICEGATE_PDF_PASSWORDS"  # JSON object: file name glob -> password


# Failures that a later run may not repeat: the machine was loaded, or a password was added or corrected.
# Not done, so the next run of the date tries the PDF again.
RETRIED_NEXT_RUN = frozenset({"parse_timeout", "parser_crashed", "encrypted_no_password", "wrong_password",
                              "invalid_passwords"})


def _reject(uri: str, doc_id: str, reason: str, message: str) -> Rejected:
    return Rejected(uri=uri, source="pdf", stage="ingest", reason=reason, message=message, doc_id=doc_id,
                    retriable=reason in RETRIED_NEXT_RUN)


def passwords_from_env() -> dict[str, str]:
    """The SLUICEGATE_PDF_PASSWORDS object (file name glob -> password); {} when unset.
    Raises ValueError when it is set but not such an object. The message never shows the value."""
    return parse_passwords(os.environ.get(PASSWORDS_ENV, ""), PASSWORDS_ENV)


def parse_passwords(text: str, where_from: str) -> dict[str, str]:
    """A JSON object of file name glob -> password; {} for empty text. The ValueError names where_from
    (a variable, a secret's name), never the value."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        where = f"line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else "its value"
        raise ValueError(f"{where_from} is not valid JSON (at {where}); expected an object of "
                         'file name glob -> password, e.g. {"invoice-*.pdf": "..."}') from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{where_from} must be a JSON object of file name glob -> password (strings), "
                         f"not a {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def candidate_passwords(uri: str, options: PdfOptions) -> list[str]:
    """Passwords configured for this file name: the config file, then the environment (never logged).
    Raises ValueError when the environment variable is malformed (see passwords_from_env)."""
    passwords = dict(options.passwords)
    passwords.update(passwords_from_env())
    name = PurePosixPath(uri.split("://")[-1]).name
    return [pw for pattern, pw in passwords.items() if fnmatch(name, pattern)]


def _precheck(uri: str, doc_id: str, data: bytes, options: PdfOptions) -> Rejected | None:
    """What needs no parser: run in the caller, so junk never costs a worker round trip."""
    if not data.strip():
        return _reject(uri, doc_id, "empty_file", f"the file has no content ({len(data)} bytes)")
    if len(data) > options.max_bytes:
        return _reject(uri, doc_id, "too_large", f"{len(data)} bytes > limit {options.max_bytes}")
    if b"%PDF-" not in data[:1024]:
        head = data[:256].lstrip().lower()
        looks = " (looks like HTML)" if head.startswith((b"<!doctype html", b"<html", b"<?xml")) else ""
        return _reject(uri, doc_id, "not_a_pdf", f"no %PDF- header{looks}; starts with {data[:16]!r}")
    return None


def pdf_doc_id(data: bytes) -> str:
    """A PDF's doc_id: the hash of its bytes (a rerun recognises a done PDF by it before parsing)."""
    return hashlib.sha256(data).hexdigest()


def read_pdf(uri: str, data: bytes, options: PdfOptions) -> Document | Rejected:
    """One PDF -> Document | Rejected, within the configured bytes/pages/characters/seconds/memory limits."""
    doc_id = pdf_doc_id(data)
    rejected = _precheck(uri, doc_id, data, options)
    if rejected:
        return rejected
    # Passwords are resolved here and passed as arguments: the worker's environment holds no secrets.
    try:
        passwords = candidate_passwords(uri, options)
    except ValueError as e:  # the nightly flow checks this first and fails the run; here: one error
        return _reject(uri, doc_id, "invalid_passwords", str(e))
    try:
        return run_isolated(parse_pdf, uri, data, options, passwords,
                            seconds=options.max_seconds, memory_mb=options.max_memory_mb)
    except IsolatedError as e:
        if e.kind == "timeout":
            return _reject(uri, doc_id, "parse_timeout",
                           f"parsing took longer than the limit of {options.max_seconds:g} s; the parser was stopped")
        if e.kind == "memory":
            return _reject(uri, doc_id, "memory_limit", f"parsing needed more than {options.max_memory_mb} MB")
        if e.kind == "crashed":
            return _reject(uri, doc_id, "parser_crashed", f"the parser process died: {e}")
        return _reject(uri, doc_id, "corrupt_pdf", str(e)[:500])


def parse_pdf(uri: str, data: bytes, options: PdfOptions, passwords: list[str] | None = None) -> Document | Rejected:
    """The parse itself, in the calling process (no time or memory limit: read_pdf adds those). Never raises
    except MemoryError, which the worker reports as memory_limit."""
    started = time.monotonic()
    doc_id = pdf_doc_id(data)
    rejected = _precheck(uri, doc_id, data, options)
    if rejected:
        return rejected
    if passwords is None:
        try:
            passwords = candidate_passwords(uri, options)
        except ValueError as e:
            return _reject(uri, doc_id, "invalid_passwords", str(e))
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
        if encrypted:
            rejected = _decrypt(reader, uri, doc_id, passwords)
            if rejected:
                return rejected
        n_pages = len(reader.pages)
        if n_pages > options.max_pages:
            return _reject(uri, doc_id, "too_many_pages", f"{n_pages} pages > limit {options.max_pages}")
        if n_pages == 0:
            return _reject(uri, doc_id, "corrupt_pdf", "the document has no pages")
        pages, truncated = _extract_text(reader, options.max_chars)
        meta = {clean_text(str(k)).lstrip("/"): clean_text(str(v)) for k, v in (reader.metadata or {}).items()
                if v is not None}
    except MemoryError:
        raise
    except FileNotDecryptedError as e:
        return _reject(uri, doc_id, "encrypted_no_password", str(e))
    except LimitReachedError as e:
        return _reject(uri, doc_id, "decompression_bomb", f"a stream decodes past pypdf's safety limit: {e}"[:500])
    except DependencyError as e:
        return _reject(uri, doc_id, "unsupported_filter", str(e)[:500])
    except Exception as e:  # noqa: BLE001 - pypdf raises far more than PyPdfError on damaged files
        return _reject(uri, doc_id, "corrupt_pdf", _diagnose(data, e))
    metadata = {k: v[:500] for k, v in meta.items()}
    metadata.update(n_pages=str(n_pages), encrypted=str(encrypted).lower())
    if truncated:
        metadata.update(truncated_at_chars=str(options.max_chars), pages_read=str(len(pages)))
    if len("".join(pages).strip()) < options.min_chars:
        return _scanned(uri, doc_id, reader, n_pages, metadata, options, started)
    return Document(doc_id=doc_id, source="pdf", uri=uri, text="\n\n".join(pages), pages=pages, metadata=metadata)


def _extract_text(reader: PdfReader, max_chars: int) -> tuple[list[str], bool]:
    """Text per page, stopping once max_chars are read (the rest of a huge document is never extracted)."""
    pages: list[str] = []
    total = 0
    for page in reader.pages:
        text = clean_text(page.extract_text() or "")
        room = max_chars - total - 2 * len(pages)  # pages are joined with a blank line
        if len(text) >= room:
            pages.append(text[:max(room, 0)])
            return pages, True
        pages.append(text)
        total += len(text)
    return pages, False


def _diagnose(data: bytes, e: Exception) -> str:
    """What kind of damage, for the message: the reason stays corrupt_pdf."""
    tail = data[-1024:]
    if b"%%EOF" not in tail:
        what = "truncated or cut off (no %%EOF at the end)"
    elif b"startxref" not in tail:
        what = "no startxref: the cross-reference table cannot be found"
    else:
        what = "damaged structure"
    return f"{what}: {type(e).__name__}: {e}"[:500]


def _scanned(uri: str, doc_id: str, reader: PdfReader, n_pages: int, metadata: dict[str, str],
             options: PdfOptions, started: float) -> Document | Rejected:
    """No text layer: OCR when enabled, else needs_ocr. Never an empty Document."""
    if not options.ocr:
        return _reject(uri, doc_id, "needs_ocr", f"{n_pages} page(s) without a text layer: scanned or empty; "
                                                 "OCR is off ([pdf] ocr = true to turn it on)")
    pages = reader.pages[: options.ocr_max_pages]
    try:
        result = ocr_pages(list(pages), options, started + options.max_seconds)
    except OcrUnavailable as e:
        return _reject(uri, doc_id, "needs_ocr", str(e))
    except OcrTimeout as e:
        return _reject(uri, doc_id, "parse_timeout", f"{e} (limit {options.max_seconds:g} s per document)")
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - parsers never raise
        return _reject(uri, doc_id, "corrupt_pdf", f"OCR: {type(e).__name__}: {e}"[:500])
    result.pages = [clean_text(page) for page in result.pages]
    text = "\n\n".join(result.pages)
    if len(text.strip()) < options.min_chars:
        found = f"OCR of {result.n_images} image(s) found {len(text.strip())} characters" if result.n_images \
            else "the pages have no text layer and no images to OCR"
        return _reject(uri, doc_id, "ocr_no_text", f"{found}; problems: {result.problems[:3]}")
    text, truncated = (text[: options.max_chars], True) if len(text) > options.max_chars else (text, False)
    metadata.update(ocr="tesseract", ocr_languages=options.ocr_languages, ocr_pages=str(len(result.pages)))
    if n_pages > len(result.pages):
        metadata["ocr_pages_skipped"] = str(n_pages - len(result.pages))
    if truncated:
        metadata["truncated_at_chars"] = str(options.max_chars)
    return Document(doc_id=doc_id, source="pdf", uri=uri, text=text, pages=result.pages, metadata=metadata)


def _decrypt(reader: PdfReader, uri: str, doc_id: str, passwords: list[str]) -> Rejected | None:
    """Tries the empty password, then the configured ones. Messages never contain a password."""
    candidates = ["", *passwords]
    for password in candidates:
        try:
            if reader.decrypt(password):
                return None
        except (PyPdfError, NotImplementedError, DependencyError) as e:
            return _reject(uri, doc_id, "encryption_unsupported", f"{type(e).__name__}: {e}"[:300])
    if len(candidates) > 1:
        return _reject(uri, doc_id, "wrong_password",
                       f"encrypted; none of the {len(candidates) - 1} configured password(s) opened it")
    return _reject(uri, doc_id, "encrypted_no_password", "encrypted and no password is configured for it")
