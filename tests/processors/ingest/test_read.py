"""Reading an input: the inbox boundary, and skipping work a rerun already has."""

import hashlib

from processors.ingest.read import AlreadyDone, outside_root, read_and_ingest
from schemas.records import Document, Rejected
from tests.robustness.hostile import spinning_pdf, text_pdf


def test_a_done_pdf_is_recognised_by_its_bytes_and_never_parsed(config, tmp_path):
    # The spinning PDF keeps the parser busy until its time limit: only an unparsed skip returns at once
    # with AlreadyDone (a parse would end in parse_timeout).
    data = spinning_pdf()
    path = tmp_path / "spinning.pdf"
    path.write_bytes(data)
    done = frozenset({(str(path), hashlib.sha256(data).hexdigest())})
    assert list(read_and_ingest((str(path), "pdf"), config, str(tmp_path), done)) == [
        AlreadyDone(str(path), "pdf", hashlib.sha256(data).hexdigest())]


def test_changed_bytes_at_a_done_uri_are_parsed_again(config, tmp_path):
    path = tmp_path / "invoice.pdf"
    path.write_bytes(b"%PDF-1.4 an older version of this file")
    done = frozenset({(str(path), hashlib.sha256(path.read_bytes()).hexdigest())})
    data = text_pdf(["Invoice INV-9 total 12.50 EUR"])
    path.write_bytes(data)
    [record] = read_and_ingest((str(path), "pdf"), config, str(tmp_path), done)
    # The skip relies on a PDF's doc_id being the hash of its bytes.
    assert isinstance(record, Document) and record.doc_id == hashlib.sha256(data).hexdigest()
    assert "INV-9" in record.text


def test_a_link_out_of_the_inbox_is_an_error_and_never_read(config, tmp_path):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.jsonl").write_text('{"id": "1", "body": "not yours"}\n')
    (inbox / "link.jsonl").symlink_to(elsewhere / "secret.jsonl")
    assert outside_root(str(inbox / "link.jsonl"), str(inbox)).startswith("a symbolic link")
    assert outside_root(str(inbox / "a" / ".." / ".." / "elsewhere" / "secret.jsonl"), str(inbox))
    assert outside_root("s3://bucket/inbox/../other/x.pdf", "s3://bucket/inbox")
    assert outside_root("s3://bucket/inbox/tickets/x.jsonl", "s3://bucket/inbox") is None
    [record] = read_and_ingest((str(inbox / "link.jsonl"), "tickets"), config, str(inbox))
    assert isinstance(record, Rejected) and (record.stage, record.reason) == ("read", "outside_root")


def test_unreadable_inputs_are_errors_not_crashes(config, tmp_path):
    [missing] = read_and_ingest((str(tmp_path / "gone.pdf"), "pdf"), config)
    assert isinstance(missing, Rejected) and missing.reason == "read_failed" and missing.retriable
    (tmp_path / "folder.pdf").mkdir()
    [folder] = read_and_ingest((str(tmp_path / "folder.pdf"), "pdf"), config)
    assert isinstance(folder, Rejected) and folder.reason == "not_a_file"


def test_a_named_pipe_is_an_error_at_once_not_a_read_that_blocks_forever(config, tmp_path):
    import os
    import threading

    pipe = tmp_path / "export.jsonl"
    os.mkfifo(pipe)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(read_and_ingest((str(pipe), "tickets"), config,
                                                                        str(tmp_path))), daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # the old read blocks until a writer opens the pipe: open and close one to free it
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    assert not reader.is_alive() and [(r.reason, r.stage) for r in got] == [("not_a_file", "read")]


def test_a_file_name_that_is_not_utf8_is_one_error_row_parquet_can_hold(config, tmp_path):
    import os

    from processors import sinks
    from schemas.tables import ERRORS_SCHEMA

    path = tmp_path / os.fsdecode(b"caf\xe9.jsonl")  # latin-1 bytes on disk: not UTF-8
    path.write_text('{"body": "hello"}\n')
    [record] = read_and_ingest((str(path), "tickets"), config, str(tmp_path))
    assert isinstance(record, Rejected) and record.reason == "bad_file_name"
    assert record.uri == f"{tmp_path}/caf\\xe9.jsonl"  # its byte shown escaped
    sinks.write_partition(tmp_path / "errors.parquet", [sinks.error_row(record, "r1")], ERRORS_SCHEMA)


def test_fake_reader_bug_costs_one_retriable_error_not_the_run(config, tmp_path, monkeypatch):
    import processors.ingest.read as read

    def broken(*args):
        raise KeyError("a bug")

    monkeypatch.setattr(read, "ingest", broken)  # a fault no real input provokes today
    path = tmp_path / "export.jsonl"
    path.write_text('{"body": "hello"}\n')
    [record] = read_and_ingest((str(path), "tickets"), config, str(tmp_path))
    assert (record.reason, record.retriable) == ("ingest_failed", True)
