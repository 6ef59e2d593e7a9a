import csv

import pytest

from processors.ingest.pdf import PASSWORDS_ENV, read_pdf
from schemas.config import PdfOptions
from schemas.records import Document, Rejected
from tests.conftest import FIXTURE_DATE, FIXTURES, SHARED_DATA

PDF_INBOX = FIXTURES / "inbox" / "pdf" / FIXTURE_DATE


def _read(name: str, options: PdfOptions | None = None):
    path = PDF_INBOX / name
    return read_pdf(str(path), path.read_bytes(), options or PdfOptions())


def test_invoice_text_pages_and_metadata():
    doc = _read("AmazonWebServices.pdf")
    assert isinstance(doc, Document)
    assert "42183017" in doc.text and len(doc.pages) == 1
    assert doc.metadata["n_pages"] == "1" and doc.metadata["encrypted"] == "false"
    assert len(doc.doc_id) == 64


def test_multi_page_pdf_keeps_pages():
    doc = _read("pdflatex-4-pages.pdf")
    assert isinstance(doc, Document) and len(doc.pages) == 4
    assert doc.text.startswith(doc.pages[0])


@pytest.mark.parametrize("name, reason", [
    ("broken_truncated.pdf", "corrupt_pdf"),
    ("not_a_pdf.pdf", "not_a_pdf"),
    ("encrypted_no_password.pdf", "encrypted_no_password"),
])
def test_bad_pdfs_are_rejected_with_a_reason(name, reason):
    rejected = _read(name)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == reason and rejected.stage == "ingest" and rejected.doc_id


def test_empty_and_oversized_files():
    assert read_pdf("x.pdf", b"", PdfOptions()).reason == "empty_file"
    data = (PDF_INBOX / "oyo.pdf").read_bytes()
    assert read_pdf("x.pdf", data, PdfOptions(max_bytes=100)).reason == "too_large"
    assert read_pdf("x.pdf", (PDF_INBOX / "pdflatex-4-pages.pdf").read_bytes(), PdfOptions(max_pages=2)).reason \
        == "too_many_pages"


def test_encrypted_with_configured_password_opens_and_message_hides_password():
    options = PdfOptions(passwords={"encrypted_with_password.pdf": "asdfzxcv"})
    assert isinstance(_read("encrypted_with_password.pdf", options), Document)
    wrong = _read("encrypted_with_password.pdf", PdfOptions(passwords={"*.pdf": "not-it-secret"}))
    assert wrong.reason == "wrong_password" and "not-it-secret" not in wrong.message


def test_password_from_environment(monkeypatch):
    monkeypatch.setenv(PASSWORDS_ENV, '{"encrypted_with_password.pdf": "asdfzxcv"}')
    assert isinstance(_read("encrypted_with_password.pdf"), Document)


def test_every_shared_encrypted_pdf_opens_with_its_password():
    folder = SHARED_DATA / "pdfs" / "encrypted"
    rows = list(csv.DictReader((folder / "passwords.csv").open()))
    assert len(rows) >= 15
    opened = 0
    for row in rows:
        pw = row["user_password"] or row["owner_password"]
        options = PdfOptions(passwords={row["file"]: pw} if pw else {}, min_chars=1)
        result = read_pdf(row["file"], (folder / row["file"]).read_bytes(), options)
        # Decrypted means: a Document, or a page without a text layer (needs_ocr), never an encryption error.
        assert isinstance(result, Document) or result.reason == "needs_ocr", (row["file"], result.reason)
        opened += isinstance(result, Document)
    assert opened >= len(rows) - 2


def test_image_only_pdf_needs_ocr():
    # A real PDF with one blank page: no text layer at all.
    from io import BytesIO

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = BytesIO()
    writer.write(buffer)
    assert read_pdf("scan.pdf", buffer.getvalue(), PdfOptions()).reason == "needs_ocr"
