"""The pipeline's input step: reading, the inbox boundary, and skipping work a rerun already has."""

import hashlib

from processors.pipeline import AlreadyDone, read_and_ingest
from schemas.records import Document
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
