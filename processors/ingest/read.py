"""Reading an input: one (uri, source) -> its records, with the inbox boundary and the rerun's skip.

Used by the pipeline's Ingest step and by distillation (which reads past inputs again); no Beam here.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

import fsspec

from processors.ingest import ingest
from processors.ingest.pdf import pdf_doc_id
from schemas.config import Config
from schemas.records import Document, Rejected


@dataclass(frozen=True)
class AlreadyDone:
    """A PDF whose bytes this version already processed (in the manifest): recognised by its hash and
    never parsed again, so a rerun of a done date costs one read per PDF."""

    uri: str
    source: str
    doc_id: str


def read_and_ingest(item: tuple[str, str], config: Config, inbox: str | None = None,
                    done: frozenset[tuple[str, str]] = frozenset()) -> list[Document | Rejected | AlreadyDone]:
    """Reads one input's bytes (any fsspec URL) and ingests it. I/O failures become retriable errors.

    inbox: the root every input must stay under. A path that leaves it (a symlink to elsewhere, '..')
    is an outside_root error and is never opened. done: (uri, doc_id) already processed with this
    version; such a PDF is not parsed (a ticket export is: its records are cheap and each has its own id).
    """
    uri, source = item
    escaped = outside_root(uri, inbox) if inbox else None
    try:
        if escaped:
            return [Rejected(uri, source, "read", "outside_root", escaped)]
        with fsspec.open(uri, "rb") as f:
            size = getattr(f, "size", None)
            limit = config.pdf.max_bytes if source == "pdf" else config.tickets.max_bytes
            if size is not None and size > limit:
                return [Rejected(uri, source, "ingest", "too_large", f"{size} bytes > limit {limit}")]
            # read at most limit + 1 bytes: a size the file system did not report cannot exhaust memory
            data = f.read(limit + 1)
            doc_id = pdf_doc_id(data) if source == "pdf" and done else ""
            if (uri, doc_id) in done:
                return [AlreadyDone(uri, source, doc_id)]
            return ingest(uri, source, data, config)
    except IsADirectoryError:
        return [Rejected(uri, source, "read", "not_a_file", "the input is a directory (e.g. a linked one)")]
    except OSError as e:
        return [Rejected(uri, source, "read", "read_failed", f"{type(e).__name__}: {e}"[:500], retriable=True)]


def outside_root(uri: str, root: str) -> str | None:
    """Why `uri` is not under `root` (None: it is). Local paths are resolved (symlinks, '..') first."""
    if "://" in root or "://" in uri:
        if "://" in uri and not uri.startswith("file://"):
            path, base = posixpath.normpath(uri.split("://", 1)[1]), posixpath.normpath(root.split("://", 1)[-1])
            return None if path == base or path.startswith(base.rstrip("/") + "/") else \
                "the path leaves the inbox root ('..' or another location)"
        uri, root = uri.removeprefix("file://"), root.removeprefix("file://")
    real, base = os.path.realpath(uri), os.path.realpath(root)
    if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
        return None
    what = "a symbolic link" if os.path.islink(uri) else "the path"
    return f"{what} resolves outside the inbox root; it is not read"
