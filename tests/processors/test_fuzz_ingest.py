"""Property tests of ingest: any bytes in, records out, never an exception out of the stage."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ingest import ingest
from processors.ingest.pdf import parse_pdf, read_pdf
from processors.ingest.tickets import read_tickets
from schemas.config import Config, PdfOptions, TicketOptions
from schemas.records import Document, Rejected
from tests.robustness.hostile import text_pdf

GOOD_PDF = text_pdf(["Invoice INV-2041 dated 2026-11-03", "Total due: 120.50 EUR"])
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _check(records: list, name: str) -> None:
    assert records, "every input file gives at least one record"
    for record in records:
        assert isinstance(record, (Document, Rejected))
        assert record.uri == name or record.uri.startswith(name + "#")
        if isinstance(record, Rejected):
            assert record.reason and record.stage
        else:
            assert record.text.strip(), "never empty text to the model"
            record.text.encode("utf-8")  # Parquet-safe: no lone surrogates
            for k, v in record.metadata.items():
                (k + v).encode("utf-8")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)
ticket_records = st.dictionaries(st.sampled_from(["id", "subject", "body", "created_at", "other", ""]), json_values,
                                 max_size=5)


@FUZZ
@given(data=st.binary(max_size=4000), suffix=st.sampled_from([".jsonl", ".csv", ".ndjson", ".txt"]))
def test_tickets_any_bytes(data, suffix):
    _check(read_tickets("t" + suffix, data, TicketOptions(max_body_chars=500)), "t" + suffix)


@FUZZ
@given(rows=st.lists(ticket_records, max_size=6), junk=st.lists(st.binary(max_size=40), max_size=3),
       encoding=st.sampled_from(["utf-8", "cp1252", "utf-16"]))
def test_tickets_jsonl_shaped_input(rows, junk, encoding):
    import json

    lines = [json.dumps(r, ensure_ascii=False).encode(encoding, errors="replace") for r in rows] + junk
    records = read_tickets("t.jsonl", b"\n".join(lines), TicketOptions())
    _check(records, "t.jsonl")
    assert len({r.uri for r in records}) == len(records)


@FUZZ
@given(cells=st.lists(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=20), max_size=5),
                      max_size=6), quote_breaks=st.lists(st.integers(0, 400), max_size=3))
def test_tickets_csv_shaped_input(cells, quote_breaks):
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "subject", "body"])
    writer.writerows(cells)
    text = buffer.getvalue()
    for at in quote_breaks:  # stray quotes anywhere
        text = text[:at] + '"' + text[at:]
    records = read_tickets("t.csv", text.encode("utf-8", errors="surrogatepass"), TicketOptions())
    _check(records, "t.csv")


@FUZZ
@given(data=st.binary(max_size=3000), header=st.booleans())
def test_pdf_any_bytes(data, header):
    data = b"%PDF-1.7\n" + data if header else data  # with a header, pypdf itself gets the bytes
    _check([parse_pdf("x.pdf", data, PdfOptions())], "x.pdf")


@FUZZ
@given(cut=st.integers(0, len(GOOD_PDF)), flips=st.lists(st.tuples(st.integers(0, len(GOOD_PDF) - 1),
                                                                   st.integers(0, 255)), max_size=8))
def test_pdf_mutations_of_a_good_file(cut, flips):
    data = bytearray(GOOD_PDF)
    for at, value in flips:
        data[at] = value
    _check([parse_pdf("x.pdf", bytes(data[:max(cut, 1)]), PdfOptions())], "x.pdf")


@settings(deadline=None, max_examples=15, derandomize=True)
@given(flips=st.lists(st.tuples(st.integers(0, len(GOOD_PDF) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_pdf_mutations_through_the_isolated_worker(flips):
    data = bytearray(GOOD_PDF)
    for at, value in flips:
        data[at] = value
    _check([read_pdf("x.pdf", bytes(data), PdfOptions(max_seconds=20))], "x.pdf")


@FUZZ
@given(data=st.binary(max_size=500), source=st.sampled_from(["pdf", "tickets", "email"]),
       name=st.sampled_from(["a.pdf", "a.jsonl", "a.csv", "a"]))
def test_ingest_dispatch_never_raises(data, source, name):
    records = ingest(name, source, data, Config())
    assert records and all(isinstance(r, (Document, Rejected)) for r in records)
