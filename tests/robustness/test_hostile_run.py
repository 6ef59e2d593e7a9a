"""The robustness suite: a day of hostile inputs of every kind, generated here (plus real PDFs from
../shared/data/pdfs), through the real nightly flow (the session's Prefect server, Beam, the real small model).

The invariant must hold on the tables as written: n_inputs == n_results + n_errors, every input's uri
in exactly one of them, and each hostile input ends where it should, with its specific reason.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil

import polars as pl
import pytest

from processors.ingest.read import printable_uri
from processors.sinks import with_labels
from tests.conftest import SENTIMENT_RUN, SHARED_DATA
from tests.robustness.hostile import hostile_pdfs, hostile_tickets

DATE = "2026-11-21"
SHARED_ENCRYPTED = ["r6-user-password.pdf", "crazyones-encrypted-256.pdf", "r4-aes-user-password.pdf"]
OCR = shutil.which("tesseract") is not None
BROTLI = importlib.util.find_spec("brotli") is not None

# uri (relative to the inbox date folder) -> "result" or the reason of its errors row
EXPECTED_PDF = {
    "good.pdf": "result", "truncated.pdf": "corrupt_pdf", "garbage.pdf": "corrupt_pdf",
    "random_bytes.pdf": "not_a_pdf", "empty.pdf": "empty_file", "html_named.pdf": "not_a_pdf",
    "missing_eof.pdf": "corrupt_pdf", "broken_xref.pdf": "result", "no_xref.pdf": "corrupt_pdf",
    "encrypted.pdf": "result", "encrypted_unknown.pdf": "encrypted_no_password",
    "brotli.pdf": "result" if BROTLI else "unsupported_filter", "bomb.pdf": "decompression_bomb",
    "many_pages.pdf": "too_many_pages", "spinning.pdf": "parse_timeout",
    "scanned.pdf": "result" if OCR else "needs_ocr", "injection.pdf": "result",
    "link_outside.pdf": "outside_root", "linked_dir": "outside_root", "link_inside.pdf": "result",
    **{f"shared/{name}": "result" for name in SHARED_ENCRYPTED},
}
EXPECTED_TICKETS = {
    **{f"hostile.jsonl#L{i}": "result" for i in (1, 6, 7, 8, 9, 10)},
    "hostile.jsonl#L2": "malformed_json", "hostile.jsonl#L3": "malformed_record",
    "hostile.jsonl#L4": "empty_body", "hostile.jsonl#L5": "missing_body",
    "broken_quoting.csv#R1": "result", "broken_quoting.csv#R2": "malformed_csv", "broken_quoting.csv#R3": "result",
    "missing_columns.csv#R1": "missing_body", "extra_columns.csv#R1": "result", "extra_columns.csv#R2": "result",
    "utf16.jsonl#L1": "result", **{f"mixed_encodings.jsonl#L{i}": "result" for i in (1, 2, 3)},
    "empty.jsonl": "empty_file", "whitespace.csv": "empty_file", "binary.jsonl": "binary_file",
    "tickets.xml": "unsupported_format", "link_outside.jsonl": "outside_root",
    "huge_int.jsonl#L1": "result", "huge_int.jsonl#L2": "malformed_json",
    "pipe.jsonl": "not_a_file",  # a named pipe: reading it would block (holding the date's lock) forever
    "bad-\\xff.jsonl": "bad_file_name",  # a name that is not UTF-8, stored with its byte escaped
}
RETRIED = {"parse_timeout", "encrypted_no_password"}  # errors a later run may not repeat: not done

CONFIG = SENTIMENT_RUN.replace('sources = ["tickets"]', 'sources = ["tickets", "pdf"]') + """
[small]
model = "gemma3-270m"
threads = 1
[large]                 # the small model again, and nothing escalates: this suite is about inputs
model = "gemma3-270m"
threads = 1
[thresholds.sentiment]
small = 0.0
large = 0.0
[pdf]
max_seconds = 5
ocr = {ocr}
passwords = {passwords}
[tickets]
max_body_chars = 2000
"""


def _toml_table(mapping: dict[str, str]) -> str:
    return "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in mapping.items()) + " }"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, prefect_in_process):
    from flows.nightly import nightly

    root = tmp_path_factory.mktemp("hostile")
    outside = root / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.pdf").write_bytes(hostile_pdfs()["good.pdf"])
    (outside / "secret.jsonl").write_text('{"body": "a ticket outside the inbox"}\n')
    (outside / "dir" / "a.pdf").write_bytes(b"%PDF-1.4 outside")

    pdf_day, ticket_day = root / "inbox" / "pdf" / DATE, root / "inbox" / "tickets" / DATE
    (pdf_day / "shared").mkdir(parents=True)
    ticket_day.mkdir(parents=True)
    pdfs = hostile_pdfs()
    pdfs["encrypted_unknown.pdf"] = pdfs["encrypted.pdf"]  # same bytes, no password configured for this name
    for name, data in pdfs.items():
        (pdf_day / name).write_bytes(data)
    for name, data in hostile_tickets().items():
        (ticket_day / name).write_bytes(data)
    os.mkfifo(ticket_day / "pipe.jsonl")
    (ticket_day / os.fsdecode(b"bad-\xff.jsonl")).write_text('{"body": "hello"}\n')
    os.symlink(outside / "secret.pdf", pdf_day / "link_outside.pdf")
    os.symlink("../../../outside/dir", pdf_day / "linked_dir")  # relative, with '..'
    os.symlink(pdf_day / "good.pdf", pdf_day / "link_inside.pdf")
    os.symlink(outside / "secret.jsonl", ticket_day / "link_outside.jsonl")

    passwords = {"encrypted.pdf": "s3cret-pw"}
    encrypted = SHARED_DATA / "pdfs" / "encrypted"
    for row in csv.DictReader((encrypted / "passwords.csv").open()):
        if row["file"] in SHARED_ENCRYPTED:
            shutil.copy(encrypted / row["file"], pdf_day / "shared" / row["file"])
            passwords[row["file"]] = row["user_password"] or row["owner_password"]
    config = root / "sluicegate.toml"
    config.write_text(CONFIG.format(ocr=str(OCR).lower(), passwords=_toml_table(passwords)))

    summary = nightly(run_date=DATE, config_path=str(config))
    return summary, root / "out", root / "inbox"


def _table(out, name) -> pl.DataFrame:
    return pl.read_parquet(out / name / "**" / "*.parquet", hive_partitioning=True)


@pytest.mark.slow
def test_hostile_day_keeps_the_invariant(hostile_run):
    summary, out, inbox = hostile_run
    results, errors = _table(out, "results"), _table(out, "errors")
    assert summary["invariant_ok"]
    assert summary["n_inputs"] == results.height + errors.height == len(EXPECTED_PDF) + len(EXPECTED_TICKETS)
    uris = results["uri"].to_list() + errors["uri"].to_list()
    assert len(uris) == len(set(uris)), "an input has more than one row"
    for source in ("pdf", "tickets"):
        day = inbox / source / DATE
        for path in day.rglob("*"):  # every discovered file (links included) has its rows
            if path.is_symlink() or path.is_file() or path.is_fifo():
                uri = printable_uri(str(path))
                assert any(u == uri or u.startswith(f"{uri}#") for u in uris), path


@pytest.mark.slow
def test_each_hostile_input_ends_with_its_reason(hostile_run):
    _, out, inbox = hostile_run
    results, errors = _table(out, "results"), _table(out, "errors")
    got = {}
    for row in results.iter_rows(named=True):
        got[row["uri"]] = "result"
    for row in errors.iter_rows(named=True):
        got[row["uri"]] = row["reason"]
    want = {str(inbox / "pdf" / DATE / k): v for k, v in EXPECTED_PDF.items()}
    want |= {str(inbox / "tickets" / DATE / k): v for k, v in EXPECTED_TICKETS.items()}
    assert got == want
    retried = errors.filter(pl.col("reason").is_in(RETRIED))
    assert retried.height == 2 and retried["retriable"].all()  # the manifest does not mark them done


@pytest.mark.slow
def test_no_document_reached_the_model_without_text_and_nothing_outside_was_read(hostile_run):
    _, out, _ = hostile_run
    results, errors = _table(out, "results"), _table(out, "errors")
    assert (results["n_chars"] > 0).all()
    assert with_labels(results, _table(out, "labels")).filter(pl.col("sentiment").is_null()).is_empty()
    outside = errors.filter(pl.col("reason") == "outside_root")
    assert outside.height == 3 and outside["doc_id"].is_null().all()  # never opened, so no hash of its bytes
    assert not errors["message"].str.contains("s3cret-pw").any()
