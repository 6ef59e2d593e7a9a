"""Ingest: raw bytes -> Document | Rejected. Never raises for bad input.

read.py reads an input (its uri) and calls ingest; pdf.py and tickets.py are the parsers.
"""

from __future__ import annotations

from processors.ingest.pdf import read_pdf
from processors.ingest.tickets import read_tickets
from schemas.config import Config
from schemas.records import Document, Rejected

__all__ = ["ingest", "read_pdf", "read_tickets"]


def ingest(uri: str, source: str, data: bytes, config: Config) -> list[Document | Rejected]:
    """One input file -> its records. A PDF is one record; a ticket export is one per line/row."""
    if source == "pdf":
        return [read_pdf(uri, data, config.pdf)]
    if source == "tickets":
        return read_tickets(uri, data, config.tickets)
    return [Rejected(uri=uri, source=source, stage="ingest", reason="unknown_source",  # type: ignore[arg-type]
                     message=f"no reader for source {source!r}")]
