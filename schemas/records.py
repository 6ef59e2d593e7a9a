"""The one record type that flows through the pipeline, and the rejection record.

A `Document` is created by ingest and then carries everything later stages add to it
(label predictions, extracted fields, routing decisions), like datatrove's Document.
Plain dataclasses: they pickle cheaply across Beam workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Source = Literal["pdf", "tickets"]
Tier = Literal["linear", "small", "large", "review"]  # linear: tier 0 (TF-IDF), label tasks only


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

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds


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
    escalation_failed: bool = False  # the large tier was needed but failed: small answer stands
    usage: dict[str, Usage] = field(default_factory=dict)  # tier -> usage
    model_versions: dict[str, str] = field(default_factory=dict)  # tier -> model version id
    error: str | None = None  # set when a stage failed for this document: it goes to errors


@dataclass
class Rejected:
    """An input that could not become a Document. It lands in the errors table."""

    uri: str
    source: Source
    stage: str  # discover | ingest | inference | sink
    reason: str  # short machine-readable reason, e.g. encrypted_no_password
    message: str  # human-readable detail (never contains secrets)
    retriable: bool = False
    doc_id: str | None = None
