"""Reading an input: one (uri, source) -> its records, with the inbox boundary and the rerun's skip.

Used by the pipeline's Ingest step and by distillation (which reads past inputs again); no Beam here.
"""

from __future__ import annotations

import os
import posixpath
import stat
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
    """Reads one input's bytes (any fsspec URL) and ingests it. Never raises: every input ends as records
    (documents, or errors with a reason); I/O failures are retriable errors.

    inbox: the root every input must stay under. A path that leaves it (a symlink to elsewhere, '..')
    is an outside_root error and is never opened. done: (uri, doc_id) already processed with this
    version; such a PDF is not parsed (a ticket export is: its records are cheap and each has its own id).
    """
    raw_uri, source = item
    uri = printable_uri(raw_uri)
    if uri != raw_uri:  # a name the tables (UTF-8) cannot hold: one error row that shows its bytes, never read
        return [Rejected(uri, source, "read", "bad_file_name",
                         "the file name is not valid UTF-8; rename the file to process it")]
    escaped = outside_root(uri, inbox) if inbox else None
    try:
        if escaped:
            return [Rejected(uri, source, "read", "outside_root", escaped)]
        limit = config.pdf.max_bytes if source == "pdf" else config.tickets.max_bytes
        data = _read_local(uri, source, limit) if _is_local(uri) else _read_url(uri, source, limit)
        if isinstance(data, Rejected):
            return [data]
        doc_id = pdf_doc_id(data) if source == "pdf" and done else ""
        if (uri, doc_id) in done:
            return [AlreadyDone(uri, source, doc_id)]
        return ingest(uri, source, data, config)
    except IsADirectoryError:
        return [Rejected(uri, source, "read", "not_a_file", "the input is a directory (e.g. a linked one)")]
    except OSError as e:
        return [Rejected(uri, source, "read", "read_failed", f"{type(e).__name__}: {e}"[:500], retriable=True)]
    except Exception as e:  # noqa: BLE001 - a reader bug must cost one error row, not the date
        return [Rejected(uri, source, "ingest", "ingest_failed", f"{type(e).__name__}: {e}"[:500], retriable=True)]


def printable_uri(uri: str) -> str:
    """The uri as the tables store it: a file name that is not valid UTF-8 (Python holds its bytes as
    surrogates) gets its bytes backslash-escaped; any other uri is unchanged."""
    return uri.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _too_large(uri: str, source: str, size: int, limit: int) -> Rejected:
    return Rejected(uri, source, "ingest", "too_large", f"{size} bytes > limit {limit}")


def _read_local(uri: str, source: str, limit: int) -> bytes | Rejected:
    """A local file's first limit + 1 bytes. Opened without blocking and checked to be a regular file
    first: a named pipe would block the read (and the date's lock) forever, a device never end."""
    fd = os.open(uri.removeprefix("file://"), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(uri)
        if not stat.S_ISREG(st.st_mode):
            return Rejected(uri, source, "read", "not_a_file", "not a regular file (a named pipe, socket or device)")
        if st.st_size > limit:
            return _too_large(uri, source, st.st_size, limit)
        os.set_blocking(fd, True)
        return f.read(limit + 1)


def _read_url(uri: str, source: str, limit: int) -> bytes | Rejected:
    with fsspec.open(uri, "rb") as f:
        size = getattr(f, "size", None)
        if size is not None and size > limit:
            return _too_large(uri, source, size, limit)
        # read at most limit + 1 bytes: a size the file system did not report cannot exhaust memory
        return f.read(limit + 1)


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
