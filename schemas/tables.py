"""Explicit pyarrow schemas of the output tables, and their data dictionary. Analysts' queries depend on these names.

Partition columns (`run_date`, `source`) live in the hive path, not in the files:
read with `pl.scan_parquet(f"{out}/results/**/*.parquet", hive_partitioning=True)`.
Every table has one schema whatever the configured tasks, so a glob over old and new partitions reads
without `union_by_name`: label answers are rows of `labels`, never columns of `results`.
Add columns freely; renaming or removing one needs a SCHEMA_VERSION bump (and a line in SCHEMA_HISTORY).

Each column carries its meaning (`description` in the field metadata, written into every Parquet file);
docs/tables.md is generated from this module: `uv run python -m schemas.tables > docs/tables.md`.
"""

from __future__ import annotations

import re

import pyarrow as pa

SCHEMA_VERSION = "2"
SCHEMA_HISTORY = {
    "1": "results had three columns per label task (`<task>`, `<task>_confidence`, `<task>_decided_by`)",
    "2": "label answers moved to the `labels` table (one row per document and task); results gained "
         "`source_id` and `created_at`; fields gained `value_amount`, `value_date` and `currency`",
}

RESULT_TABLES = ("results", "labels", "fields", "errors", "manifest")  # written by the pipeline, by run_date/source
RUNS_TABLE = "runs"  # one row per run, partitioned by run_date
PARTITION_KEYS = ("run_date", "source")  # hive path keys: never a column inside the files

AMOUNT_TYPE = pa.decimal128(18, 4)  # fixed scale: sums are exact; amounts beyond 10^14 are left null
DECIDED_BY = ("who decided: `linear` (tier 0, a TF-IDF linear model; label tasks only), `small`, `large`, or "
              "`review` (the large tier was unsure too: a person decides)")


def _col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    """A column with its meaning in the field metadata (Parquet files written with the schema carry it)."""
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


def _table(name: str, description: str, columns: list[pa.Field]) -> pa.Schema:
    return pa.schema(columns, metadata={"table": name, "description": description,
                                        "schema_version": SCHEMA_VERSION})


_common = [
    _col("schema_version", pa.string(), "the SCHEMA_VERSION of the code that computed the row", nullable=False),
    _col("run_id", pa.string(), "the run that computed the row (`<date>-<time>-<hex>`; a key of `runs`)",
         nullable=False),
]
_doc_id = _col("doc_id", pa.string(), "sha256 of the raw input (a ticket: of its line or row)", nullable=False)
_uri = _col("uri", pa.string(), "where the input was read; a ticket adds `#L<line>` (JSONL) or `#R<row>` (CSV)",
            nullable=False)
_model_version_id = _col("model_version_id", pa.string(),
                         "the registry's model version (adapter, label sets, calibration, thresholds)")

RESULTS_SCHEMA = _table("results", "one row per document (an input that was read and answered)", [
    _doc_id,
    _uri,
    _col("source_id", pa.string(), "the ticket's own id (the `[tickets.columns]` `id` column); null for PDFs "
                                   "and tickets without one"),
    _col("created_at", pa.timestamp("us", tz="UTC"),
         "when the ticket was created (the `created_at` column; a time without an offset is read as UTC); "
         "null for PDFs and when missing or unparseable (then metadata `created_at_unparsed` keeps the text)"),
    _col("decided_by", pa.string(), "the highest tier any item (label task or field) of the document needed: "
                                    "linear | small | large | review", nullable=False),
    _col("escalation_reasons", pa.list_(pa.string()),
         "why items left a tier: `<tier>:<item>:<why>`, e.g. `small:category:low_confidence(0.41<0.62)`"),
    _col("escalation_failed", pa.bool_(), "the large tier was needed but failed: the small answers stand, and "
                                          "the next run retries the document"),
    _col("tier_answers", pa.list_(pa.struct([
        pa.field("item", pa.string()), pa.field("tier", pa.string()), pa.field("value", pa.string()),
        pa.field("confidence", pa.float64())])),
         "for every item the small tier did not decide, each tier's answer (`item`, `tier`, `value`, "
         "`confidence`): the small answer the large tier replaced, then the one that stands"),
    _col("n_pages", pa.int32(), "pages read (1 for a ticket)"),
    _col("n_chars", pa.int64(), "characters of document text"),
    _col("metadata", pa.map_(pa.string(), pa.string()),
         "everything else the input carried: a ticket's other columns, a PDF's info and reading notes"),
    _model_version_id,
    _col("small_model_version", pa.string(), "the small tier's model and adapter, with their hashes"),
    _col("large_model_version", pa.string(), "the large tier's model, with its hash (null: not called)"),
    _col("task_versions", pa.map_(pa.string(), pa.string()), "prompt/task version per task kind (label, extract)"),
    _col("config_hash", pa.string(), "hash of the run's configuration"),
    _col("small_prompt_tokens", pa.int64(), "prompt tokens the small tier spent on the document"),
    _col("small_completion_tokens", pa.int64(), "tokens the small tier generated for the document"),
    _col("large_prompt_tokens", pa.int64(), "prompt tokens the large tier spent on the document"),
    _col("large_completion_tokens", pa.int64(), "tokens the large tier generated for the document"),
    _col("small_seconds", pa.float64(), "seconds of small-tier inference for the document"),
    _col("large_seconds", pa.float64(), "seconds of large-tier inference for the document"),
    *_common,
])

LABELS_SCHEMA = _table("labels", "one row per document and label task it was asked (a task configured for its "
                                 "source): the long form, stable whatever tasks a model version adds", [
    _doc_id,
    _uri,
    _col("task", pa.string(), "the label task, e.g. `category`, `sentiment`, or one a model version learned",
         nullable=False),
    _col("label", pa.string(), "the answer, one of the task's labels; null when no tier gave a valid one"),
    _col("confidence", pa.float64(), "calibrated probability of `label` within the label set (0 when invalid)"),
    _col("decided_by", pa.string(), DECIDED_BY, nullable=False),
    _model_version_id,
    *_common,
])

FIELDS_SCHEMA = _table("fields", "one row per document and extracted field configured for its source", [
    _doc_id,
    _uri,
    _col("field", pa.string(), "the field's configured name, e.g. `invoice_number`", nullable=False),
    _col("type", pa.string(), "the field's type: string | id | date | amount | currency | email | name"),
    _col("value", pa.string(), "the value as written in the document; null when absent"),
    _col("normalized", pa.string(), "the value normalized as text: ISO date, decimal amount, ISO 4217 currency, "
                                    "lower-cased email ..."),
    _col("value_amount", AMOUNT_TYPE, "an amount field's normalized value as a decimal; null for other types "
                                      "and when it does not parse"),
    _col("value_date", pa.date32(), "a date field's normalized value as a date; null for other types and when "
                                    "it does not parse"),
    _col("currency", pa.string(), "ISO 4217 code: a currency field's value, or the currency written with an "
                                  "amount (`$12.50` -> USD); null otherwise"),
    _col("confidence", pa.float64(), "min token probability over the value (length-robust)"),
    _col("page", pa.int32(), "1-based page where the evidence starts (PDFs)"),
    _col("span_start", pa.int64(), "character offset of the evidence in the document text"),
    _col("span_end", pa.int64(), "end (exclusive) of the evidence in the document text"),
    _col("decided_by", pa.string(), "who decided: `small`, `large`, or `review` (the large tier was unsure too: "
                                    "a person decides)", nullable=False),
    _col("valid", pa.bool_(), "the value passed its validators (false when `problems` is not empty)", nullable=False),
    _col("problems", pa.list_(pa.string()), "the validators' findings, e.g. `not_in_source`, `unparseable_date`"),
    _col("routing_reasons", pa.list_(pa.string()),
         "why routing sent the value up: `<tier>:low_confidence(<conf><<threshold>)`, `<tier>:<problem>`, ..."),
    _col("model_version", pa.string(), "the model (and adapter) of the tier whose answer stands"),
    _model_version_id,
    _col("task_version", pa.string(), "the extraction prompt's version"),
    *_common,
])

ERRORS_SCHEMA = _table("errors", "one row per rejected input: nothing is dropped", [
    _uri,
    _col("doc_id", pa.string(), "sha256 of the raw input, when it could be read"),
    _col("stage", pa.string(), "where it was rejected: read | ingest | inference | sink", nullable=False),
    _col("reason", pa.string(), "one of a closed list (README, \"Error reasons\")", nullable=False),
    _col("message", pa.string(), "human-readable detail (never a secret)"),
    _col("retriable", pa.bool_(), "the next run of the date tries the input again", nullable=False),
    *_common,
])

# What each input's last processing produced, and with which versions: a rerun skips the inputs that
# are done with the current version_key (unless reprocess), and keeps their rows as they are.
MANIFEST_SCHEMA = _table("manifest", "one row per input: what its last processing produced, and with which "
                                     "versions; reruns skip the inputs done with the current version", [
    _uri,
    _col("doc_id", pa.string(), "sha256 of the raw input, when it could be read"),
    _col("outcome", pa.string(), "result (a row in results) | error (a row in errors)", nullable=False),
    _col("done", pa.bool_(), "not to be processed again with this version (false: a retriable error or a failed "
                             "escalation, retried next run)", nullable=False),
    _col("version_key", pa.string(), "hash of the models, configuration, task and schema versions",
         nullable=False),
    *_common,
])

RUNS_SCHEMA = _table("runs", "one row per run, partitioned by run_date only (`part-<run_id>.parquet`)", [
    _col("run_id", pa.string(), "the run (`<date>-<time>-<hex>`)", nullable=False),
    _col("schema_version", pa.string(), "the SCHEMA_VERSION of the code that ran", nullable=False),
    _col("started_at", pa.timestamp("us", tz="UTC"), "when the run started"),
    _col("finished_at", pa.timestamp("us", tz="UTC"), "when the run finished"),
    _col("sources", pa.list_(pa.string()), "the sources the run processed"),
    _col("n_inputs", pa.int64(), "inputs seen (a ticket line or row is one input)", nullable=False),
    _col("n_results", pa.int64(), "rows of results for the date after the run", nullable=False),
    _col("n_errors", pa.int64(), "rows of errors for the date after the run", nullable=False),
    _col("n_skipped", pa.int64(), "inputs already done with this version: rows kept as they were"),
    _col("n_unseen_kept", pa.int64(), "inputs with rows for the date that the run did not see (deleted or moved "
                                      "files): rows kept"),
    _col("n_pruned", pa.int64(), "such inputs whose rows the run dropped (prune_missing)"),
    _col("invariant_ok", pa.bool_(), "n_inputs == n_results + n_errors, and every input's uri is in one of the two",
         nullable=False),
    _col("parameters", pa.map_(pa.string(), pa.string()), "the run's parameters (date, inbox, out, config ...)"),
    _col("escalation_rate", pa.map_(pa.string(), pa.float64()), "task (and `fields`) -> share of items escalated"),
    _col("review_rate", pa.map_(pa.string(), pa.float64()), "task (and `fields`) -> share of items left to review"),
    _col("tokens", pa.map_(pa.string(), pa.int64()), "tier -> prompt + completion tokens"),
    _col("estimated_cost", pa.map_(pa.string(), pa.float64()),
         "tier (and `hosted_all`: every token at the hosted price) -> money"),
    _col("model_versions", pa.map_(pa.string(), pa.string()), "tier -> model version"),
    _col("code_version", pa.string(), "package version and git commit"),
    _col("config_hash", pa.string(), "hash of the run's configuration"),
    _col("timings", pa.map_(pa.string(), pa.float64()), "stage -> seconds"),
    _col("docs_per_second_small", pa.float64(), "documents per second of small-tier inference"),
])

SCHEMAS = {"results": RESULTS_SCHEMA, "labels": LABELS_SCHEMA, "fields": FIELDS_SCHEMA, "errors": ERRORS_SCHEMA,
           "manifest": MANIFEST_SCHEMA, "runs": RUNS_SCHEMA}


def table_schema(table: str) -> pa.Schema:
    return SCHEMAS[table]


# A task name is a value of labels.task, an item name in escalation reasons ('<tier>:<task>:<why>') and a
# key of runs' rate maps; analysts also pivot it into a column. So: a plain lower-case identifier, and none
# of the tables' own column names or partition keys.
_SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_NAMES = frozenset(PARTITION_KEYS) | {f.name for s in SCHEMAS.values() for f in s} | {"fields", "field"}


def check_task_name(name: str) -> str:
    """The name, or ValueError when it is not a safe identifier or is a column or partition key of a table."""
    if not _SAFE_NAME.match(name):
        raise ValueError(f"task name {name!r} must be a lower-case identifier: a letter, then letters, digits "
                         "or '_' (at most 63 characters)")
    if name in RESERVED_NAMES:
        raise ValueError(f"task name {name!r} is reserved: it is a column or partition key of the output tables")
    return name


def check_task_names(names: list[str]) -> list[str]:
    """All the names (check_task_name each); for a configuration's and a model version's tasks."""
    for name in names:
        check_task_name(name)
    return names


PARTITION_MEANINGS = {"run_date": "the date the run processed (YYYY-MM-DD), from the path",
                      "source": "`pdf` or `tickets`, from the path"}


def _describe(field: pa.Field) -> str:
    return (field.metadata or {}).get(b"description", b"").decode()


def data_dictionary() -> str:
    """docs/tables.md: every table's columns with type, nullability and meaning (Markdown)."""
    lines = [
        "# Output tables: data dictionary",
        "",
        "<!-- Generated from schemas/tables.py: `uv run python -m schemas.tables > docs/tables.md`. "
        "Do not edit by hand; tests/schemas/test_tables.py fails when the two differ. -->",
        "",
        f"Schema version {SCHEMA_VERSION}. Every table is Parquet under the output root, one folder per table, "
        "Hive-partitioned: `<out>/<table>/run_date=YYYY-MM-DD/source=pdf|tickets/part-<shard>.parquet`, one file "
        "per shard of the run (`part-00000` for a one-process run; read the folder, never one file) (runs: "
        "`<out>/runs/run_date=YYYY-MM-DD/part-<run_id>.parquet`). `run_date` and `source` are in the path, not "
        "in the files: read with `hive_partitioning=True`. Each Parquet file carries these descriptions in its "
        "field metadata.",
        "",
        "Schema versions:",
        "",
        *[f"- {version}: {what}" for version, what in SCHEMA_HISTORY.items()],
    ]
    for name, schema in SCHEMAS.items():
        description = (schema.metadata or {}).get(b"description", b"").decode()
        lines += ["", f"## {name}", "", description[0].upper() + description[1:] + ".", "",
                  "| column | type | nullable | meaning |", "|---|---|---|---|"]
        keys = PARTITION_KEYS if name in RESULT_TABLES else PARTITION_KEYS[:1]
        lines += [f"| `{key}` | partition | no | {PARTITION_MEANINGS[key]} |" for key in keys]
        for field in schema:
            meaning = _describe(field).replace("|", "\\|")  # a '|' inside a cell would split it
            lines.append(f"| `{field.name}` | `{field.type}` | {'yes' if field.nullable else 'no'} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(data_dictionary(), end="")
