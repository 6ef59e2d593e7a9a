import pytest

from processors.ingest.tickets import read_tickets
from schemas.config import TicketColumns, TicketOptions
from schemas.records import Document, Rejected
from tests.conftest import FIXTURE_DATE, FIXTURES
from tests.robustness.hostile import hostile_tickets

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


# ---- hostile exports, generated here (tests/robustness/hostile.py) ----

def _by_uri(name: str, options: TicketOptions | None = None) -> dict[str, Document | Rejected]:
    records = read_tickets(name, hostile_tickets()[name], options or TicketOptions())
    by_uri = {r.uri: r for r in records}
    assert len(by_uri) == len(records), "every record has its own uri"
    return by_uri


def _reason(record: Document | Rejected) -> str:
    return record.reason if isinstance(record, Rejected) else "doc"


def test_hostile_jsonl_one_record_per_line_with_specific_reasons():
    got = {uri.split("#")[1]: _reason(r) for uri, r in _by_uri("hostile.jsonl").items()}
    assert got == {"L1": "doc", "L2": "malformed_json", "L3": "malformed_record", "L4": "empty_body",
                   "L5": "missing_body", "L6": "doc", "L7": "doc", "L8": "doc", "L9": "doc", "L10": "doc"}


def test_one_megabyte_body_is_cut_to_max_body_chars_and_marked():
    doc = _by_uri("hostile.jsonl", TicketOptions(max_body_chars=5000))["hostile.jsonl#L6"]
    assert len(doc.text) == 5000 and doc.metadata["truncated_from_chars"] == "1000000"


def test_duplicate_ids_are_kept_and_point_to_the_first():
    records = _by_uri("hostile.jsonl")
    assert records["hostile.jsonl#L7"].metadata["duplicate_of"] == "hostile.jsonl#L1"
    # The same line twice: same doc_id (same bytes), two inputs with their own uri.
    assert records["hostile.jsonl#L10"].doc_id == records["hostile.jsonl#L1"].doc_id
    assert "duplicate_of" not in records["hostile.jsonl#L1"].metadata


def test_control_characters_are_removed_and_nested_values_kept_as_json():
    doc = _by_uri("hostile.jsonl")["hostile.jsonl#L8"]
    assert not any(ord(c) < 32 and c not in "\t\n\r" for c in doc.text)
    assert doc.text.startswith("bell") and doc.metadata["extra"] == '{"nested": [1]}'


def test_lone_surrogates_and_c1_controls_never_reach_the_tables():
    [doc] = read_tickets("t.jsonl", b'{"body": "ok \\ud800 half \\u0085 c1 \\u2028 sep", "k\\udfff": "v"}\n',
                         TicketOptions())
    doc.text.encode("utf-8")  # would raise on a lone surrogate
    assert "\x85" not in doc.text and "\u2028" in doc.text and "k" in doc.metadata


def test_line_separator_inside_a_json_string_does_not_split_the_line():
    data = '{"body": "first\u2028second\x1cthird"}\n'.encode()
    [doc] = read_tickets("t.jsonl", data, TicketOptions())
    assert isinstance(doc, Document) and doc.uri == "t.jsonl#L1" and "second" in doc.text


def test_csv_broken_quoting_is_one_error_and_the_rows_after_it_are_read():
    got = {uri.split("#")[1]: _reason(r) for uri, r in _by_uri("broken_quoting.csv").items()}
    assert got == {"R1": "doc", "R2": "malformed_csv", "R3": "doc"}


def test_csv_with_a_multiline_quoted_body_is_one_row():
    data = b'id,body\n1,"line one\nline two, with comma"\n2,next\n'
    records = read_tickets("t.csv", data, TicketOptions())
    assert [_reason(r) for r in records] == ["doc", "doc"] and "line two" in records[0].text
    assert records[1].uri == "t.csv#R2"


def test_csv_cells_longer_than_the_csv_module_default_limit():
    data = b"id,body\n1," + b"y" * 300_000 + b"\n"
    [doc] = read_tickets("t.csv", data, TicketOptions())
    assert doc.metadata["truncated_from_chars"] == "300000"


def test_missing_and_extra_columns():
    [missing] = _by_uri("missing_columns.csv").values()
    assert missing.reason == "missing_body" and "ident, text" in missing.message
    extra = _by_uri("extra_columns.csv")
    assert extra["extra_columns.csv#R1"].metadata["_extra_cells"] == '["EXTRA", "MORE"]'
    assert _reason(extra["extra_columns.csv#R2"]) == "doc"


def test_encodings_are_decided_per_line():
    records = _by_uri("mixed_encodings.jsonl")
    assert records["mixed_encodings.jsonl#L1"].text == "café crème"
    assert records["mixed_encodings.jsonl#L1"].metadata["encoding"] == "utf-8"
    assert records["mixed_encodings.jsonl#L2"].text == "naïve résumé"
    assert records["mixed_encodings.jsonl#L2"].metadata["encoding"] == "cp1252"
    assert isinstance(records["mixed_encodings.jsonl#L3"], Document)  # undecodable bytes: cp1252, never a crash
    [utf16] = _by_uri("utf16.jsonl").values()
    assert utf16.text == "utf-16 encoded export" and utf16.metadata["encoding"] == "utf-16"


def test_file_level_errors():
    for name, reason in (("empty.jsonl", "empty_file"), ("whitespace.csv", "empty_file"),
                         ("binary.jsonl", "binary_file"), ("tickets.xml", "unsupported_format")):
        [record] = _by_uri(name).values()
        assert (record.reason, record.uri) == (reason, name)
    data = hostile_tickets()["hostile.jsonl"]
    [too_large] = read_tickets("t.jsonl", data, TicketOptions(max_bytes=1000))
    assert too_large.reason == "too_large" and str(len(data)) in too_large.message


def test_an_integer_past_python_s_4300_digit_limit_is_one_malformed_line():
    export = b'{"id": "T-1", "body": "fine"}\n{"id": ' + b"9" * 5000 + b', "body": "x"}\n'
    records = read_tickets("x.jsonl", export, TicketOptions())
    assert [_reason(r) for r in records] == ["doc", "malformed_json"]
    assert "4300" in records[1].message


def test_the_id_and_creation_time_are_carried_typed_not_as_metadata_columns(config):
    """The mapped id and created_at columns become results.source_id / created_at (the sink takes them out
    of metadata); the export's other columns stay metadata."""
    from datetime import UTC, datetime

    from processors.ingest.tickets import pop_typed_metadata

    path = TICKETS / "web_form.csv"  # id,title,message,submitted,...: columns mapped in fixtures/sluicegate.toml
    doc = next(r for r in read_tickets(str(path), path.read_bytes(), config.tickets) if isinstance(r, Document))
    assert "id" not in doc.metadata and "submitted" not in doc.metadata and "priority" in doc.metadata
    metadata = dict(doc.metadata)
    assert pop_typed_metadata(metadata) == ("W-2001", datetime(2026, 11, 20, 7, 55, 40, tzinfo=UTC))
    assert "ticket_id" not in metadata and "created_at" not in metadata


def test_an_unparseable_creation_time_is_kept_as_text():
    from processors.ingest.tickets import pop_typed_metadata

    [doc] = read_tickets("t.jsonl", b'{"id": "7", "body": "hi", "created_at": "last tuesday"}\n', TicketOptions())
    assert doc.metadata["created_at_unparsed"] == "last tuesday"
    metadata = dict(doc.metadata)
    assert pop_typed_metadata(metadata) == ("7", None)
    [doc] = read_tickets("t.jsonl", b'{"body": "no id, no time"}\n', TicketOptions())
    assert pop_typed_metadata(dict(doc.metadata)) == (None, None) and "created_at_unparsed" not in doc.metadata


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-20T08:02:11Z", "2026-11-20T08:02:11+00:00"),
    ("2026-11-20T09:02:11+01:00", "2026-11-20T08:02:11+00:00"),
    ("2026-11-20 08:02:11", "2026-11-20T08:02:11+00:00"),  # no offset: UTC
    ("2026-11-20", "2026-11-20T00:00:00+00:00"),
    ("1795161731", "2026-11-20T08:02:11+00:00"),  # Unix seconds
    ("1795161731000", "2026-11-20T08:02:11+00:00"),  # Unix milliseconds
    ("", None), ("last tuesday", None), ("2026-13-45", None), ("99999999999999999999", None),
])
def test_creation_times_parse_to_utc(text, expected):
    from processors.ingest.tickets import parse_created_at

    parsed = parse_created_at(text)
    assert (parsed.isoformat() if parsed else None) == expected
