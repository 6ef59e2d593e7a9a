"""PDF ingest with pypdf: text per page, page count, metadata; encrypted files opened with configured passwords."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from fnmatch import fnmatch
from pathlib import PurePosixPath

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PyPdfError

from schemas.config import PdfOptions
from schemas.records import Document, Rejected

# pypdf logs a warning for every odd object in a damaged file; the errors table has what matters.
logging.getLogger("pypdf").setLevel(logging.ERROR)

PASSWORDS_ENV = "SLUICEGATE_PDF_PASSWORDS"  # JSON object: file name glob -> password


def _reject(uri: str, doc_id: str, reason: str, message: str) -> Rejected:
    return Rejected(uri=uri, source="pdf", stage="ingest", reason=reason, message=message, doc_id=doc_id)


def _candidate_passwords(uri: str, options: PdfOptions) -> list[str]:
    """Passwords configured for this file name: the config file, then the environment (never logged)."""
    passwords = dict(options.passwords)
    try:
        passwords.update(json.loads(os.environ.get(PASSWORDS_ENV, "{}")))
    except json.JSONDecodeError:
        pass
    name = PurePosixPath(uri.split("://")[-1]).name
    return [pw for pattern, pw in passwords.items() if fnmatch(name, pattern)]


def read_pdf(uri: str, data: bytes, options: PdfOptions) -> Document | Rejected:
    doc_id = hashlib.sha256(data).hexdigest()
    if not data:
        return _reject(uri, doc_id, "empty_file", "the file has no bytes")
    if len(data) > options.max_bytes:
        return _reject(uri, doc_id, "too_large", f"{len(data)} bytes > limit {options.max_bytes}")
    if b"%PDF-" not in data[:1024]:
        return _reject(uri, doc_id, "not_a_pdf", f"no %PDF- header; starts with {data[:16]!r}")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
        if encrypted:
            rejected = _decrypt(reader, uri, doc_id, options)
            if rejected:
                return rejected
        n_pages = len(reader.pages)
        if n_pages > options.max_pages:
            return _reject(uri, doc_id, "too_many_pages", f"{n_pages} pages > limit {options.max_pages}")
        pages = [(page.extract_text() or "") for page in reader.pages]
        meta = {k.lstrip("/"): str(v) for k, v in (reader.metadata or {}).items() if v is not None}
    except FileNotDecryptedError as e:
        return _reject(uri, doc_id, "encrypted_no_password", str(e))
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, AssertionError, ZeroDivisionError, OverflowError) as e:
        # pypdf raises more than PyPdfError on damaged files; all mean the same to us.
        return _reject(uri, doc_id, "corrupt_pdf", f"{type(e).__name__}: {e}"[:500])
    text = "\n\n".join(pages)
    if len(text.strip()) < options.min_chars:
        return _reject(uri, doc_id, "needs_ocr",
                       f"{n_pages} page(s) with {len(text.strip())} characters of text: scanned or empty")
    metadata = {k: v[:500] for k, v in meta.items()}
    metadata.update(n_pages=str(n_pages), encrypted=str(encrypted).lower())
    return Document(doc_id=doc_id, source="pdf", uri=uri, text=text, pages=pages, metadata=metadata)


def _decrypt(reader: PdfReader, uri: str, doc_id: str, options: PdfOptions) -> Rejected | None:
    """Tries the empty password, then the configured ones. Messages never contain a password."""
    candidates = ["", *_candidate_passwords(uri, options)]
    for password in candidates:
        try:
            if reader.decrypt(password):
                return None
        except (PyPdfError, NotImplementedError) as e:
            return _reject(uri, doc_id, "encryption_unsupported", f"{type(e).__name__}: {e}"[:300])
    if len(candidates) > 1:
        return _reject(uri, doc_id, "wrong_password",
                       f"encrypted; none of the {len(candidates) - 1} configured password(s) opened it")
    return _reject(uri, doc_id, "encrypted_no_password", "encrypted and no password is configured for it")
