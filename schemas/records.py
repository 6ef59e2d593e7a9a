"""The one record type that flows through the pipeline, and the rejection record.

A `Document` is created by ingest and then carries everything later stages add to it
(label predictions, extracted fields, routing decisions), like datatrove's Document.
Plain dataclasses: they pickle cheaply across Beam workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Source = Literal["pdf", "tickets"]
# Who decided an item, lowest first; linear: tier 0 (TF-IDF), label tasks only. A document's decided_by
# is the highest tier any of its items needed.
Tier = Literal["linear", "small", "large", "review"]
TIERS: tuple[Tier, ...] = get_args(Tier)

# Where an input was rejected: read (the bytes could not be had), ingest (parsing), inference (a model
# stage failed on it), sink (its rows could not be written).
Stage = Literal["read", "ingest", "inference", "sink"]

# Every reason the errors table can hold, and what it means: the one list, read by the tests and by the
# data dictionary in README ("Error reasons"). A new reason is added here first.
ERROR_REASONS: dict[str, str] = {
    # read
    "outside_root": "the path (a symbolic link, '..') resolves outside the inbox root; it is not read",
    "not_a_file": "the input is a directory or another non-regular file",
    "read_failed": "the bytes could not be read (I/O error); retried by the next run",
    "bad_file_name": "the file name is not valid UTF-8 (the uri shows its bytes escaped); rename the file",
    # ingest, any source
    "unknown_source": "the source is neither pdf nor tickets",
    "too_large": "the file is larger than the source's max_bytes",
    "empty_file": "the file has no content (or no ticket lines or rows)",
    "ingest_failed": "the reader failed unexpectedly (a bug: please report it); retried by the next run",
    # ingest, PDFs
    "not_a_pdf": "no %PDF- header: another kind of file",
    "corrupt_pdf": "pypdf could not read the structure (truncated, broken cross-reference, no pages)",
    "too_many_pages": "more pages than pdf.max_pages",
    "encrypted_no_password": "encrypted, and no password is configured for the file; retried by the next run",
    "wrong_password": "encrypted, and the configured password does not open it; retried by the next run",
    "invalid_passwords": "SLUICEGATE_PDF_PASSWORDS is set but is not a JSON object of name -> password; "
                         "retried by the next run",
    "encryption_unsupported": "an encryption method the reader cannot decrypt",
    "decompression_bomb": "a stream decodes past the parser's safety limit",
    "unsupported_filter": "a stream uses a compression filter the parser does not support",
    "parse_timeout": "parsing (or OCR) took longer than pdf.max_seconds; the worker was killed; retried by the "
                     "next run",
    "memory_limit": "parsing needed more memory than pdf.max_memory_mb",
    "parser_crashed": "the parser's worker process died; retried by the next run",
    "needs_ocr": "pages without a text layer (a scan) and OCR is off or unavailable",
    "ocr_no_text": "OCR ran but found too little text",
    # ingest, tickets
    "unsupported_format": "a ticket file that is not .jsonl, .ndjson or .csv",
    "binary_file": "mostly control bytes: not a text export",
    "malformed_json": "a JSONL line that is not valid JSON",
    "malformed_record": "a JSONL line that is valid JSON but not an object",
    "malformed_csv": "a CSV row with broken quoting; reading resumes on the next line",
    "missing_body": "the body column is missing from the record",
    "empty_body": "the body is empty or whitespace only",
    # inference
    "model_failed": "the small tier failed on the document; retried by the next run",
}
ErrorReason = Literal[tuple(ERROR_REASONS)]  # type: ignore[valid-type]  # the keys above, as a closed type


@dataclass
class LabelPrediction:
    """One label task's answer for one document, from one tier."""

    task: str
    label: str | None  # None when the output could not be parsed into the label set
    confidence: float  # calibrated probability of `label` within the label set, 0 if invalid
    probabilities: dict[str, float]  # calibrated distribution over the label set
    tier: Tier
    valid: bool = True
    error: str | None = None


@dataclass
class FieldPrediction:
    """One extracted field for one document, from one tier."""

    field: str
    value: str | None  # the value as written in the document (None: absent)
    normalized: str | None  # ISO date, decimal amount, ISO currency, lower-cased email ...
    confidence: float  # min token probability over the value (length-robust)
    page: int | None  # 1-based page where the evidence span starts (PDFs)
    span_start: int | None  # character span of the evidence in Document.text
    span_end: int | None
    valid: bool
    tier: Tier
    problems: list[str] = field(default_factory=list)  # failed validators, e.g. "not_in_source"


@dataclass
class Usage:
    """Tokens and time spent on one document by one tier."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    computed_tokens: int = 0  # prompt tokens the runtime evaluated rather than took from a cache (0: unknown)

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds
        self.computed_tokens += other.computed_tokens


@dataclass
class Document:
    doc_id: str  # sha256 of the raw input bytes
    source: Source
    uri: str  # file path or URL; tickets add '#L<line>' / '#R<row>'
    text: str
    pages: list[str] = field(default_factory=list)  # per-page text (PDFs); tickets have one page
    metadata: dict[str, str] = field(default_factory=dict)
    # Filled in by the tiers:
    labels: dict[str, LabelPrediction] = field(default_factory=dict)  # task -> final answer
    fields: dict[str, FieldPrediction] = field(default_factory=dict)  # field -> final answer
    decided_by: dict[str, Tier] = field(default_factory=dict)  # task or 'field:<name>' -> tier
    escalation_reasons: list[str] = field(default_factory=list)
    # The small tier's answers the large tier replaced (item -> answer): a reviewer sees both tiers.
    superseded: dict[str, LabelPrediction | FieldPrediction] = field(default_factory=dict)
    escalation_failed: bool = False  # the large tier was needed but failed: small answer stands
    usage: dict[str, Usage] = field(default_factory=dict)  # tier -> usage
    model_versions: dict[str, str] = field(default_factory=dict)  # tier -> model version id
    error: str | None = None  # set when a stage failed for this document: it goes to errors


@dataclass
class Rejected:
    """An input that could not become a Document. It lands in the errors table."""

    uri: str
    source: Source
    stage: Stage
    reason: ErrorReason  # one of ERROR_REASONS, e.g. encrypted_no_password
    message: str  # human-readable detail (never contains secrets)
    retriable: bool = False
    doc_id: str | None = None
