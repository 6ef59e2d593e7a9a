import csv
import shutil

import pytest

from processors.ingest.pdf import PASSWORDS_ENV, parse_pdf, read_pdf
from schemas.config import PdfOptions
from schemas.records import Document, Rejected
from tests.conftest import FIXTURE_DATE, FIXTURES, SHARED_DATA
from tests.robustness.hostile import brotli_stored, hostile_pdfs

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
    opened = needed_password = 0
    for row in rows:
        pw = row["user_password"] or row["owner_password"]
        options = PdfOptions(passwords={row["file"]: pw} if pw else {}, min_chars=1)
        data = (folder / row["file"]).read_bytes()
        result = read_pdf(row["file"], data, options)
        # Decrypted means: a Document, or pages without any text (needs_ocr), never an encryption error.
        assert isinstance(result, Document) or result.reason == "needs_ocr", (row["file"], result.reason)
        opened += isinstance(result, Document)
        if row["user_password"]:  # without it: a clear error (or the empty owner password of R5/R6 opens it)
            without = read_pdf(row["file"], data, PdfOptions())
            assert isinstance(without, Document) or without.reason == "encrypted_no_password", row["file"]
            needed_password += isinstance(without, Rejected)
    assert opened >= len(rows) - 1 and needed_password >= 5


def test_image_only_pdf_needs_ocr():
    # A real PDF with one blank page: no text layer at all.
    from io import BytesIO

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = BytesIO()
    writer.write(buffer)
    rejected = read_pdf("scan.pdf", buffer.getvalue(), PdfOptions())
    assert rejected.reason == "needs_ocr" and "OCR is off" in rejected.message


# ---- hostile PDFs, generated here (tests/robustness/hostile.py) ----

@pytest.fixture(scope="module")
def hostile():
    return hostile_pdfs()


@pytest.mark.parametrize("name, reason, detail", [
    ("truncated.pdf", "corrupt_pdf", "no %%EOF"),
    ("garbage.pdf", "corrupt_pdf", ""),
    ("random_bytes.pdf", "not_a_pdf", "no %PDF- header"),
    ("empty.pdf", "empty_file", ""),
    ("html_named.pdf", "not_a_pdf", "looks like HTML"),
    ("missing_eof.pdf", "corrupt_pdf", "no %%EOF"),
    ("no_xref.pdf", "corrupt_pdf", ""),
    ("encrypted.pdf", "encrypted_no_password", ""),
    ("bomb.pdf", "decompression_bomb", "limit"),
    ("many_pages.pdf", "too_many_pages", "3000 pages"),
    ("scanned.pdf", "needs_ocr", "OCR is off"),
])
def test_hostile_pdf_is_an_error_with_its_reason(hostile, name, reason, detail):
    result = read_pdf(name, hostile[name], PdfOptions())
    assert isinstance(result, Rejected), name
    assert (result.reason, result.stage, result.source) == (reason, "ingest", "pdf")
    assert detail in result.message and result.doc_id


def test_broken_xref_is_rebuilt_and_read(hostile):
    doc = read_pdf("broken_xref.pdf", hostile["broken_xref.pdf"], PdfOptions())
    assert isinstance(doc, Document) and "INV-2041" in doc.text


def test_generated_encrypted_pdf_opens_with_its_password_and_not_with_another(hostile):
    doc = read_pdf("encrypted.pdf", hostile["encrypted.pdf"], PdfOptions(passwords={"enc*.pdf": "s3cret-pw"}))
    assert isinstance(doc, Document) and "refund" in doc.text and doc.metadata["encrypted"] == "true"
    wrong = read_pdf("encrypted.pdf", hostile["encrypted.pdf"], PdfOptions(passwords={"*": "guess-1234"}))
    assert wrong.reason == "wrong_password" and "guess-1234" not in wrong.message


def test_brotli_stream_is_read(hostile):
    result = read_pdf("brotli.pdf", hostile["brotli.pdf"], PdfOptions())  # pypdf[brotli] is a dependency
    assert isinstance(result, Document) and "INV-77" in result.text


def test_brotli_encoder_of_the_tests_is_valid_brotli():
    import brotli

    for data in (b"", b"hello", bytes(range(256)) * 300):
        assert brotli.decompress(brotli_stored(data)) == data


def test_a_page_that_makes_the_parser_spin_is_stopped_at_the_time_limit(hostile):
    result = read_pdf("spinning.pdf", hostile["spinning.pdf"], PdfOptions(max_seconds=2))
    assert result.reason == "parse_timeout" and "2 s" in result.message and result.retriable  # under load: retry
    # The next document gets a fresh worker and is read normally.
    assert isinstance(read_pdf("good.pdf", hostile["good.pdf"], PdfOptions()), Document)


def test_page_and_byte_limits_are_configurable(hostile):
    many = hostile["many_pages.pdf"]
    doc = read_pdf("many.pdf", many, PdfOptions(max_pages=5000, max_chars=100_000))
    assert isinstance(doc, Document) and doc.metadata["n_pages"] == "3000"
    assert read_pdf("many.pdf", many, PdfOptions(max_bytes=len(many) - 1)).reason == "too_large"


def test_text_beyond_max_chars_is_cut_and_marked(hostile):
    doc = read_pdf("many.pdf", hostile["many_pages.pdf"], PdfOptions(max_pages=5000, max_chars=1000))
    assert isinstance(doc, Document) and len(doc.text) <= 1000
    assert doc.metadata["truncated_at_chars"] == "1000" and int(doc.metadata["pages_read"]) < 3000


def test_parse_in_process_agrees_with_the_isolated_parse(hostile):
    for name in ("good.pdf", "truncated.pdf", "bomb.pdf", "encrypted.pdf"):
        inline, isolated = parse_pdf(name, hostile[name], PdfOptions()), read_pdf(name, hostile[name], PdfOptions())
        assert type(inline) is type(isolated) and getattr(inline, "reason", None) == getattr(isolated, "reason", None)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed (.ci/run installs it)")
def test_scanned_pdf_text_is_recovered_by_ocr(hostile):
    doc = read_pdf("scanned.pdf", hostile["scanned.pdf"], PdfOptions(ocr=True))
    assert isinstance(doc, Document), getattr(doc, "message", "")
    words = doc.text.split()
    for word in ("INVOICE", "4711", "Acme", "Widgets", "1234.50", "EUR"):
        assert word in words, (word, doc.text)
    assert doc.metadata["ocr"] == "tesseract" and doc.metadata["ocr_pages"] == "1"


def test_ocr_without_the_tesseract_binary_is_needs_ocr_with_the_install_hint(hostile):
    options = PdfOptions(ocr=True, tesseract="/nonexistent/tesseract")
    rejected = read_pdf("scanned.pdf", hostile["scanned.pdf"], options)
    assert rejected.reason == "needs_ocr" and "apt-get install tesseract-ocr" in rejected.message


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed (.ci/run installs it)")
def test_blank_page_with_ocr_on_is_an_error_not_empty_text():
    from io import BytesIO

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = BytesIO()
    writer.write(buffer)
    assert read_pdf("blank.pdf", buffer.getvalue(), PdfOptions(ocr=True)).reason == "ocr_no_text"


def test_memory_cap_stops_a_parse_that_needs_more(hostile):
    # The bomb inflates to pypdf's 75 MB limit; under a 256 MB address-space cap the worker runs out first.
    rejected = read_pdf("bomb.pdf", hostile["bomb.pdf"], PdfOptions(max_memory_mb=256))
    assert rejected.reason == "memory_limit" and "256 MB" in rejected.message
    assert isinstance(read_pdf("good.pdf", hostile["good.pdf"], PdfOptions(max_memory_mb=256)), Document)


@pytest.mark.parametrize("value", ['{"encrypted_with_password.pdf": "asdfzxcv"', '["asdfzxcv"]',
                                   '{"encrypted_with_password.pdf": 12345}'])
def test_a_malformed_password_variable_is_a_clear_error_that_never_shows_it(monkeypatch, value):
    from processors.ingest.pdf import passwords_from_env

    monkeypatch.setenv(PASSWORDS_ENV, value)
    with pytest.raises(ValueError, match=PASSWORDS_ENV) as raised:
        passwords_from_env()
    assert "asdfzxcv" not in str(raised.value) and "12345" not in str(raised.value)
    rejected = _read("encrypted_with_password.pdf")  # outside the flow (which fails first): one error
    assert isinstance(rejected, Rejected) and rejected.reason == "invalid_passwords" and rejected.retriable


def test_failures_a_later_run_may_not_repeat_are_retriable():
    no_password = _read("encrypted_no_password.pdf")
    wrong = _read("encrypted_with_password.pdf", PdfOptions(passwords={"*.pdf": "not-it"}))
    corrupt = _read("broken_truncated.pdf")
    assert (no_password.reason, no_password.retriable) == ("encrypted_no_password", True)
    assert (wrong.reason, wrong.retriable) == ("wrong_password", True)
    assert (corrupt.reason, corrupt.retriable) == ("corrupt_pdf", False)  # the same bytes fail the same way
