"""Configuration: one TOML file, validated by these pydantic models.

Every option has a default, so an empty file is a valid configuration; `fixtures/sluicegate.toml`
is the shipped example. Paths in the file are resolved relative to the file's folder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FieldType = Literal["string", "id", "date", "amount", "currency", "email", "name"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in the file is an error, not a silent default


class LabelTask(_Strict):
    """A named label set: the model picks exactly one label per document."""

    name: str
    labels: list[str]
    # What the task asks, in the prompt. Keep it short: it is paid for on every document.
    question: str = "Which label fits this document?"
    # Label -> words the model sees (default: the label, lower-cased, '_' as space).
    verbalizers: dict[str, str] = Field(default_factory=dict)
    sources: list[Literal["pdf", "tickets"]] = ["pdf", "tickets"]

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError("a label task needs at least two distinct labels")
        return labels

    def verbalizer(self, label: str) -> str:
        return self.verbalizers.get(label, label.lower().replace("_", " "))


class FieldSpec(_Strict):
    name: str
    type: FieldType = "string"
    description: str = ""


class TierModel(_Strict):
    """One model tier. `model` is a packaged model name (see processors/models/weights.py) or a .gguf path."""

    runtime: Literal["llamacpp"] = "llamacpp"
    model: str
    adapter: str | None = None  # optional llama.cpp LoRA adapter (.gguf)
    prompt_style: Literal["base", "chatml"] = "base"
    # Divide label probabilities by those of content-free inputs ("N/A" ...): base models need it.
    contextual_calibration: bool = True
    # Keep threads x parallel model workers <= cores: llama.cpp threads spin while waiting.
    threads: int = 2
    parallel_sequences: int = 8  # documents decoded together in one batch (llama.cpp slots)
    context_per_sequence: int = 1536  # tokens of context per slot
    max_doc_chars: int = 2000  # document text given to the model is cut to this many characters
    max_field_tokens: int = 40  # generation budget per field value (also bounded by the field's type)
    top_logprobs: int = 40  # candidate tokens read per label position
    price_per_million_tokens: float = 0.0  # estimated cost, for the runs table


class Thresholds(_Strict):
    """Below `small` the small tier's answer escalates; below `large` the large tier's goes to review."""

    small: float = 0.6
    large: float = 0.5


class PdfOptions(_Strict):
    # File name (or glob) -> password. Prefer the SLUICEGATE_PDF_PASSWORDS env var (JSON) for secrets.
    passwords: dict[str, str] = Field(default_factory=dict)
    max_bytes: int = 50_000_000
    max_pages: int = 500
    min_chars: int = 20  # less text than this: a scan or an empty document (reason needs_ocr)


class TicketColumns(_Strict):
    """Maps a ticket export's columns to ours. Other columns are kept as metadata."""

    id: str = "id"
    subject: str = "subject"
    body: str = "body"
    created_at: str = "created_at"


class TicketOptions(_Strict):
    # Column mapping per file-name glob, first match wins; '*' is the default.
    columns: dict[str, TicketColumns] = Field(default_factory=lambda: {"*": TicketColumns()})
    encoding: str = "utf-8"
    max_body_chars: int = 20_000  # longer bodies are cut (recorded in metadata 'truncated')

    def columns_for(self, filename: str) -> TicketColumns:
        from fnmatch import fnmatch

        for pattern, cols in self.columns.items():
            if fnmatch(filename, pattern):
                return cols
        return TicketColumns()


class Inputs(_Strict):
    inbox: str = "inbox"  # root: <inbox>/<source>/<YYYY-MM-DD>/** (local path or fsspec URL)
    sources: list[Literal["pdf", "tickets"]] = ["tickets", "pdf"]


class Output(_Strict):
    root: str = "out"  # a local folder (atomic renames and the per-date lock need a local file system)


class Schedule(_Strict):
    """When the nightly deployment runs; its default run date is yesterday in this time zone."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"  # IANA name, e.g. Europe/Berlin


def _default_tasks() -> list[LabelTask]:
    return [
        LabelTask(
            name="category",
            labels=["ACCOUNT", "CANCELLATION_FEE", "CONTACT", "DELIVERY", "FEEDBACK", "INVOICE",
                    "NEWSLETTER", "ORDER", "PAYMENT", "REFUND", "SHIPPING_ADDRESS"],
            question="Which topic is this about?",
        ),
        LabelTask(
            name="sentiment",
            labels=["negative", "neutral", "positive"],
            question="Is the writer's tone negative, neutral or positive?",
        ),
    ]


class Config(_Strict):
    inputs: Inputs = Inputs()
    output: Output = Output()
    schedule: Schedule = Schedule()
    tasks: list[LabelTask] = Field(default_factory=_default_tasks)
    fields: dict[Literal["pdf", "tickets"], list[FieldSpec]] = Field(default_factory=dict)
    small: TierModel = TierModel(model="gemma3-270m")
    large: TierModel = TierModel(
        model="qwen2.5-coder-1.5b-instruct", prompt_style="chatml", contextual_calibration=False,
        parallel_sequences=2, max_doc_chars=1500, price_per_million_tokens=0.0,
    )
    # Price per million tokens of a hosted large model, to show what sending everything there would cost.
    hosted_price_per_million_tokens: float = 0.60
    thresholds: dict[str, Thresholds] = Field(default_factory=dict)  # task or 'fields' -> thresholds
    pdf: PdfOptions = PdfOptions()
    tickets: TicketOptions = TicketOptions()

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique: {names}")
        return self

    def thresholds_for(self, task: str) -> Thresholds:
        return self.thresholds.get(task, Thresholds())

    def tasks_for(self, source: str) -> list[LabelTask]:
        return [t for t in self.tasks if source in t.sources]


def load_config(path: str | Path | None) -> Config:
    """Reads and validates a TOML configuration; relative paths resolve against its folder."""
    if path is None:
        return Config()
    path = Path(path)
    with path.open("rb") as f:
        raw = tomllib.load(f)
    config = Config.model_validate(raw)
    base = path.resolve().parent
    config.inputs.inbox = _resolve(config.inputs.inbox, base)
    config.output.root = _resolve(config.output.root, base)
    for tier in (config.small, config.large):
        if tier.model.endswith(".gguf"):
            tier.model = _resolve(tier.model, base)
        if tier.adapter:
            tier.adapter = _resolve(tier.adapter, base)
    return config


def _resolve(value: str, base: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())
