from processors.ingest.tickets import read_tickets
from schemas.config import TicketColumns, TicketOptions
from schemas.records import Document, Rejected
from tests.conftest import FIXTURE_DATE, FIXTURES

TICKETS = FIXTURES / "inbox" / "tickets" / FIXTURE_DATE


def test_jsonl_fixture_one_record_per_line_with_the_malformed_line_rejected(config):
    path = TICKETS / "support_export.jsonl"
    records = read_tickets(str(path), path.read_bytes(), config.tickets)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(records) == len(lines)
    bad = [r for r in records if isinstance(r, Rejected)]
    assert [r.reason for r in bad] == ["malformed_json"] and bad[0].uri.endswith("#L9")
    doc = next(r for r in records if isinstance(r, Document))
    assert doc.metadata["ticket_id"].startswith("T-") and "customer_email" in doc.metadata
    assert doc.uri.endswith("#L1")


def test_csv_fixture_uses_column_mapping_and_rejects_empty_body(config):
    path = TICKETS / "web_form.csv"
    records = read_tickets(str(path), path.read_bytes(), config.tickets)
    assert len(records) == 8
    assert [r.reason for r in records if isinstance(r, Rejected)] == ["empty_body"]
    doc = next(r for r in records if isinstance(r, Document))
    assert doc.metadata["ticket_id"].startswith("W-") and "priority" in doc.metadata


def test_doc_id_is_sha256_of_the_raw_line():
    import hashlib

    line = '{"id": "1", "body": "where is my order 123?"}'
    [doc] = read_tickets("t.jsonl", (line + "\n").encode(), TicketOptions())
    assert doc.doc_id == hashlib.sha256(line.encode()).hexdigest()


def test_hostile_lines_never_raise():
    data = b'\n'.join([b'[1,2]', b'{"body": "   "}', b'{"subject": "no body"}', b'\xff\xfe{"body": "x"}',
                       b'{"body": "ok \x01 control"}', b''])
    records = read_tickets("t.jsonl", data, TicketOptions())
    reasons = [r.reason if isinstance(r, Rejected) else "doc" for r in records]
    assert reasons[:3] == ["malformed_record", "empty_body", "missing_body"]
    assert reasons[-1] == "doc" and "\x01" not in records[-1].text
    assert len(records) == 5


def test_long_body_is_truncated_and_marked():
    body = "a" * 50_000
    [doc] = read_tickets("t.jsonl", f'{{"body": "{body}"}}'.encode(), TicketOptions(max_body_chars=1000))
    assert len(doc.text) == 1000 and doc.metadata["truncated_from_chars"] == "50000"


def test_csv_with_extra_cells_and_other_encoding():
    data = "id,body\n1,café crème,EXTRA\n".encode("cp1252")
    [doc] = read_tickets("t.csv", data, TicketOptions(columns={"*": TicketColumns()}))
    assert "café" in doc.text and "EXTRA" in doc.metadata["_extra_cells"] and doc.metadata["encoding"] == "cp1252"


def test_unsupported_and_empty_files():
    assert read_tickets("t.xml", b"<x/>", TicketOptions())[0].reason == "unsupported_format"
    assert read_tickets("t.jsonl", b"\n\n", TicketOptions())[0].reason == "empty_file"
