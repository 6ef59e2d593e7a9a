"""Configuration: one TOML file, validated by these pydantic models.

Every option has a default, so an empty file is a valid configuration; `fixtures/sluicegate.toml`
is the shipped example. Paths in the file are resolved relative to the file's folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.tables import check_task_name

FieldType = Literal["string", "id", "date", "amount", "currency", "email", "name"]


class Strict(BaseModel):
    """Base of every contract read from a file: a typo in the file is an error, not a silent default.

    Errors name the key, never its value: a stray `api_key = "..."` must not reach a terminal or a log.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


def insecure_endpoint_host(endpoint: str | None) -> str | None:
    """The host of a plain http:// endpoint that is not loopback (an API key sent there crosses the
    network in clear text); None for https://, loopback (127.0.0.0/8, ::1, localhost) and anything else."""
    try:
        parts = urlsplit(endpoint or "")
    except ValueError:
        return None  # malformed (e.g. an unclosed '[' ): no request can be sent to it at all
    if parts.scheme.lower() != "http":
        return None
    host = (parts.hostname or "").rstrip(".")
    if host == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or None  # a name: it may resolve anywhere
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return None if ip.is_loopback or (mapped is not None and mapped.is_loopback) else host


def insecure_key_message(host: str) -> str:
    """Why an API key is not sent to `host`, and what to do; never the key."""
    return (f"refusing to send the API key in clear text to {host}: the endpoint is plain http:// on a "
            "host that is not loopback. Use https://, or set allow_insecure = true for this tier if the "
            "network is trusted")


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def local_output_root(root: str) -> str:
    """The local folder an output root names: a path, or a file:// URL. Raises ValueError for any other
    URL (s3://, gs://, az://, http(s)://, memory:// ...): without this, `s3://bucket` became a local
    folder named `s3:`."""
    match = _SCHEME.match(root.strip())
    if match and match.group(1).lower() != "file":
        # Only the scheme is echoed: a URL may carry credentials (s3://KEY:SECRET@bucket).
        raise ValueError(
            f"output root {match.group(1)}://... is not supported: object stores (and other URLs) are not "
            "supported as output roots, because the tables are published by atomic renames and guarded "
            "by a per-date lock file, which need a local (POSIX) file system. Write to a local or NFS "
            "folder and sync it to the bucket afterwards (e.g. `aws s3 sync`, `gcloud storage rsync`)")
    if match:
        root = unquote(root.strip()[len(match.group(0)):])
        if root.startswith("localhost/"):  # file://localhost/srv/out
            root = root[len("localhost"):]
        elif root and not root.startswith("/"):
            raise ValueError("output root file:// URL names a host; use file:///absolute/path or a plain path")
    if not root:
        raise ValueError("output root is empty")
    return root


class LabelTask(Strict):
    """A named label set: the model picks exactly one label per document."""

    name: str
    labels: list[str]
    # What the task asks, in the prompt. Keep it short: it is paid for on every document.
    question: str = "Which label fits this document?"
    # Label -> words the model sees (default: the label, lower-cased, '_' as space).
    verbalizers: dict[str, str] = Field(default_factory=dict)
    sources: list[Literal["pdf", "tickets"]] = ["pdf", "tickets"]

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_task_name(name)  # a plain identifier, and no column or partition key of the output tables

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError("a label task needs at least two distinct labels")
        return labels

    def verbalizer(self, label: str) -> str:
        return self.verbalizers.get(label, label.lower().replace("_", " "))


class FieldSpec(Strict):
    name: str
    type: FieldType = "string"
    description: str = ""
    # Checks beyond the type's own validators; a value that fails one is invalid and escalates.
    # "total" (amount fields): the value is no part of a sum written in the document. Where it plus another
    # written amount makes a third printed after that one (a subtotal and its tax make the total), it is a
    # subtotal or a net amount, not the total.
    checks: list[Literal["total"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _checks_fit_the_type(self) -> FieldSpec:
        if "total" in self.checks and self.type != "amount":
            raise ValueError(f"field {self.name!r}: the check 'total' is for amount fields")
        return self


class TierModel(Strict):
    """One model tier. `model` is a packaged model name (see processors/models/weights.py) or a .gguf path;
    with runtime "http", the model name the endpoint serves."""

    runtime: Literal["llamacpp", "http"] = "llamacpp"
    model: str
    adapter: str | None = None  # optional llama.cpp LoRA adapter (.gguf)
    prompt_style: Literal["base", "chatml"] = "base"
    # Divide label probabilities by those of content-free inputs ("N/A" ...): base models need it.
    contextual_calibration: bool = True
    # Label tasks asked without their option list: the adapter learned these label sets, so listing them (77
    # labels: hundreds of tokens per prompt) buys nothing. Set from the active model version (replacing any
    # value here); by hand only for an adapter trained that way elsewhere. A model that did not learn a task
    # needs its options, so [large] refuses it.
    tasks_without_options: list[str] = Field(default_factory=list)
    # Keep threads x parallel model workers <= cores: llama.cpp threads spin while waiting.
    threads: int = 2
    # In-process llama.cpp: copies of the model, each with threads / copies threads and its own slot, each
    # taking whole documents (at most one copy per thread). A document gets the same answer on any copy. On 2
    # cores two 1-thread copies of the 270M read 10.4 tickets/s, one 2-thread copy 8.2 (llama.cpp's threads
    # wait on each other at every layer of a small model); each copy holds its own weights (about 0.3 GB for
    # the 270M), so keep 1 for a large model.
    copies: int = Field(default=1, ge=1)
    parallel_sequences: int = 8  # documents handed to the tier per batch (an http tier: per request wave)
    context_per_sequence: int = 1536  # tokens of context for one prompt (in-process llama.cpp)
    max_doc_chars: int = 2000  # document text given to the model is cut to this many characters
    max_field_tokens: int = 40  # generation budget per 'string' value (also bounded by its type); for a grounded
    # field, the deepest token read while scoring its candidates (long ids share leading digits)
    top_logprobs: int = 40  # candidate tokens read per label position
    # Few-shot: show the k training examples of the model version nearest to the document (TF-IDF)
    # before it, answered (0: zero-shot). Used when the version stores demonstrations; meant for [large].
    demonstrations: int = 0
    # runtime "http" only: let a llama.cpp server reuse cached prefixes of earlier prompts. Faster, but a
    # probability then depends on what the server computed before (near-tie labels flip between runs).
    # The in-process runtime always evaluates each document as its own sequence (the same answer every time).
    reuse_prompt_cache: bool = False
    price_per_million_tokens: float = 0.0  # estimated cost, for the runs table
    # runtime "http": any OpenAI-compatible /v1/completions endpoint (llama.cpp server, vLLM, Ollama, hosted).
    endpoint: str | None = None  # base URL, e.g. http://127.0.0.1:8080 (".../v1" also accepted)
    api_key_env: str | None = None  # name of the environment variable holding the API key (never the key)
    api_key_secret: str | None = None  # or a Prefect Secret block name; the flow puts it in api_key_env
    request_timeout_seconds: float = 60.0  # per HTTP request
    max_retries: int = 3  # retries on connection errors, timeouts, 429, 5xx and garbage bodies
    retry_backoff_seconds: float = 0.5  # first retry delay; doubles per retry, with jitter
    max_concurrency: int = 4  # requests in flight per worker
    circuit_breaker_failures: int = 5  # consecutive failed requests that open the circuit ...
    circuit_breaker_cooldown_seconds: float = 30.0  # ... which then fails fast for this long
    # Mask emails, phone numbers, IBANs and card numbers before text reaches the model; restored in
    # field values. Default: on for runtime "http" (text leaves the machine), off for in-process models.
    mask_pii: bool = False
    # An API key is refused over plain http:// to a host other than loopback (anyone on the path reads
    # it). true: send it anyway (a trusted network, or a TLS-terminating sidecar on another host).
    allow_insecure: bool = False

    @model_validator(mode="after")
    def _http_defaults(self) -> TierModel:
        if "mask_pii" not in self.model_fields_set:
            self.mask_pii = self.runtime == "http"
        if self.runtime == "http" and not self.endpoint:
            raise ValueError("runtime 'http' needs an endpoint")
        if self.runtime == "http" and self.copies > 1:
            raise ValueError("copies is for the in-process runtime: an http endpoint is scaled where it runs "
                             "(its own parallel slots; max_concurrency sets the requests in flight)")
        if self.runtime == "llamacpp" and self.reuse_prompt_cache:
            raise ValueError("reuse_prompt_cache is for runtime 'http' only: the in-process runtime evaluates "
                             "each document as its own sequence, so it gets the same answer alone, in any batch "
                             "and on any rerun")
        host = insecure_endpoint_host(self.endpoint) if self.runtime == "http" else None
        if host and (self.api_key_env or self.api_key_secret) and not self.allow_insecure:
            raise ValueError(insecure_key_message(host))
        return self



class Thresholds(Strict):
    """Below `small` the small tier's answer escalates; below `large` the large tier's goes to review."""

    small: float = 0.6
    large: float = 0.5


class TaskCalibration(Strict):
    """Maps a tier's raw confidence to a calibrated probability for one task (or 'fields')."""

    method: Literal["none", "temperature", "isotonic"] = "none"
    temperature: float = 1.0  # label distributions: p_i ** (1/T), renormalised
    # isotonic: piecewise-linear map from raw confidence (x, ascending) to observed accuracy (y)
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)


class LinearTier(Strict):
    """Tier 0 for one label task: TF-IDF + a linear model; confident items skip the language models."""

    path: str  # tier-0 JSON file, linear-<task>.json (inside the model version's folder)
    threshold: float  # predicted probability at or above which tier 0 decides


class Models(Strict):
    """Where fine-tuned model versions live (see schemas/versions.py)."""

    registry: str | None = None  # folder with registry.json and versions/<id>/; none: the base model
    version: str | None = None  # pin a version id; default: the registry's promoted version
    active: str | None = None  # set when the configuration is loaded: the version in use (in every row)
    # Set with `active`: where the configuration and the version differ (untrained fields and tasks, which
    # run anyway; changes the version overrides). Every run's summary lists them.
    notes: list[str] = Field(default_factory=list)


class PdfOptions(Strict):
    # File name (or glob) -> password. Prefer the SLUICEGATE_PDF_PASSWORDS env var (JSON) for secrets,
    # or a Prefect Secret block holding the same JSON object (the flow merges it in; the variable wins).
    passwords: dict[str, str] = Field(default_factory=dict)
    passwords_secret: str | None = None
    # Per-document limits, so one file cannot stall the night or exhaust memory. A PDF is parsed in a
    # worker process that is killed at max_seconds (reason parse_timeout) and capped at max_memory_mb
    # of address space (memory_limit).
    max_bytes: int = Field(50_000_000, gt=0)  # larger files: too_large, not read
    max_pages: int = Field(500, gt=0)  # more pages: too_many_pages
    max_chars: int = Field(1_000_000, gt=0)  # text beyond this is cut (metadata truncated_at_chars)
    max_seconds: float = Field(60.0, gt=0)  # parse + OCR of one file
    max_memory_mb: int = Field(2048, ge=256)
    min_chars: int = 20  # less text than this: a scan or an empty document (OCR, else reason needs_ocr)
    # OCR of scanned pages with the Tesseract binary (Debian: apt-get install tesseract-ocr).
    ocr: bool = False
    ocr_languages: str = "eng"  # tesseract -l, e.g. "eng+deu"
    ocr_max_pages: int = Field(20, gt=0)  # a longer scan is OCRed up to this page, the rest is marked
    tesseract: str = "tesseract"  # the binary: a name on PATH or a path


class TicketColumns(Strict):
    """Maps a ticket export's columns to ours. Other columns are kept as metadata."""

    id: str = "id"
    subject: str = "subject"
    body: str = "body"
    created_at: str = "created_at"


class TicketOptions(Strict):
    # Column mapping per file-name glob, first match wins; '*' is the default.
    columns: dict[str, TicketColumns] = Field(default_factory=lambda: {"*": TicketColumns()})
    encoding: str = "utf-8"  # tried first, per line; then UTF-8, then cp1252 (metadata 'encoding' says which)
    max_bytes: int = Field(500_000_000, gt=0)  # a larger export file is one error (too_large), not read
    # A longer body is cut to this many characters, never split: metadata 'truncated_from_chars' has its length.
    max_body_chars: int = Field(20_000, gt=0)

    def columns_for(self, filename: str) -> TicketColumns:
        from fnmatch import fnmatch

        for pattern, cols in self.columns.items():
            if fnmatch(filename, pattern):
                return cols
        return TicketColumns()


class Inputs(Strict):
    inbox: str = "inbox"  # root: <inbox>/<source>/<YYYY-MM-DD>/** (local path or fsspec URL)
    sources: list[Literal["pdf", "tickets"]] = ["tickets", "pdf"]


class Output(Strict):
    root: str = "out"  # a local folder (atomic renames and the per-date lock need a local file system)

    @field_validator("root")
    @classmethod
    def _local(cls, root: str) -> str:
        return local_output_root(root)


class Schedule(Strict):
    """When the nightly deployment runs; its default run date is yesterday in this time zone."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"  # IANA name, e.g. Europe/Berlin


class Alerts(Strict):
    """When a night needs a person. Every nightly run emits a Prefect event with its counts
    (`sluicegate.nightly.completed`, plus `sluicegate.nightly.degraded` past these limits); `serve` and
    `deploy` create automations on them. Not part of the version key: changing it recomputes nothing."""

    max_error_rate: float = Field(0.25, ge=0, le=1)  # errors / inputs above this: degraded
    # A task's (or fields') escalation rate above this: degraded. Drift: the small model is suddenly unsure.
    max_escalation_rate: float = Field(0.5, ge=0, le=1)
    # A nightly run still not completed this many hours after it started: alert (stuck or very late).
    completed_within_hours: float = Field(6.0, gt=0)
    # No nightly run completed for this many hours: alert (a night that never ran: no worker, paused).
    silence_hours: float = Field(26.0, gt=0)
    # A Prefect notification block, '<block type slug>/<name>' (e.g. 'slack-webhook/ops'), the automations
    # send to. None: they only record (the UI's Automations and Events pages show each firing).
    notify_block: str | None = None


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


class Engine(Strict):
    """Where a night's shards run. Not part of the version key: changing it recomputes nothing.

    kind = "local": this process runs the shards one after another (one shard unless earlier runs left
    more). kind = "dask": a dask.distributed cluster runs them, each shard today's Beam graph in-process.
    """

    kind: Literal["local", "dask"] = "local"
    # "tcp://host:8786": an existing scheduler. Empty with kind = "dask": a LocalCluster on 127.0.0.1 with
    # `workers` processes of `threads_per_worker` threads, started by the run and kept for its process.
    address: str = ""
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)  # shards a worker runs at once (each loads no model twice)
    shards: int = Field(0, ge=0)  # 0: automatic (twice the cluster's threads, at most one per input file)
    # A shard whose worker died, or that raised, is run again this many times before the run fails.
    retries: int = Field(1, ge=0)
    # llama.cpp threads per model in a LocalCluster's workers. 0: the machine's cores / workers (the tiers'
    # own `threads` would oversubscribe the cores). A remote cluster's workers use the tiers' `threads`.
    model_threads: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fits_this_machine(self) -> Engine:
        if self.kind == "dask" and not self.address:
            cores = os.cpu_count() or 1
            if self.workers * self.threads_per_worker > cores:
                raise ValueError(f"[engine] a LocalCluster of workers {self.workers} x threads_per_worker "
                                 f"{self.threads_per_worker} needs more than this machine's {cores} cores")
            if self.workers * self.model_threads > cores:
                raise ValueError(f"[engine] workers {self.workers} x model_threads {self.model_threads} is more "
                                 f"than this machine's {cores} cores")
        if self.address and not re.match(r"^(tcp|tls|inproc|ucx)://", self.address):
            raise ValueError("[engine] address is a scheduler address such as tcp://host:8786")
        return self


class Config(Strict):
    inputs: Inputs = Inputs()
    output: Output = Output()
    schedule: Schedule = Schedule()
    alerts: Alerts = Alerts()
    tasks: list[LabelTask] = Field(default_factory=_default_tasks)
    fields: dict[Literal["pdf", "tickets"], list[FieldSpec]] = Field(default_factory=dict)
    small: TierModel = TierModel(model="gemma3-270m")
    large: TierModel = TierModel(
        model="qwen2.5-coder-1.5b-instruct", prompt_style="chatml", contextual_calibration=False,
        parallel_sequences=2, max_doc_chars=1500, price_per_million_tokens=0.0,
    )
    # Price per million tokens of a hosted large model, to show what sending everything there would cost.
    hosted_price_per_million_tokens: float = 0.60
    thresholds: dict[str, Thresholds] = Field(default_factory=dict)  # task, 'fields' or 'fields:<source>'
    models: Models = Models()
    # '<tier>:<task>' (or '<tier>:fields') -> calibration; normally filled from the model version.
    calibration: dict[str, TaskCalibration] = Field(default_factory=dict)
    linear: dict[str, LinearTier] = Field(default_factory=dict)  # task -> tier 0; from the model version
    demonstrations: str | None = None  # the model version's demonstrations.jsonl (few-shot examples)
    pdf: PdfOptions = PdfOptions()
    tickets: TicketOptions = TicketOptions()
    engine: Engine = Engine()

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique: {names}")
        if self.large.tasks_without_options:
            raise ValueError("[large] tasks_without_options: the large tier is not fine-tuned, it needs the options")
        return self

    def thresholds_for(self, task: str) -> Thresholds:
        return self.thresholds.get(task, Thresholds())

    def tasks_for(self, source: str) -> list[LabelTask]:
        return [t for t in self.tasks if source in t.sources]


def load_config(path: str | Path | None) -> Config:
    """Reads and validates a TOML configuration; relative paths resolve against its folder.

    Only the file: the promoted model version is applied by `schemas.versions.with_model_version`.
    """
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
    if config.models.registry:
        config.models.registry = _resolve(config.models.registry, base)
    return config


def _resolve(value: str, base: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())
