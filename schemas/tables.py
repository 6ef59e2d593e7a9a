"""Explicit pyarrow schemas of the output tables. Analysts' queries depend on these names.

Partition columns (`run_date`, `source`) live in the hive path, not in the files:
read with `pl.scan_parquet(f"{out}/results/**/*.parquet", hive_partitioning=True)`.
Add columns freely; renaming or removing one needs a SCHEMA_VERSION bump.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

RESULT_TABLES = ("results", "fields", "errors", "manifest")  # written by the pipeline, by run_date/source
RUNS_TABLE = "runs"  # one row per run, partitioned by run_date

_common = [
    pa.field("schema_version", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
]


def results_schema(task_names: list[str]) -> pa.Schema:
    """results: one row per document. Label task columns are generated from the configuration."""
    per_task = []
    for task in task_names:
        per_task += [
            pa.field(task, pa.string()),
            pa.field(f"{task}_confidence", pa.float64()),
            pa.field(f"{task}_decided_by", pa.string()),
        ]
    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            *per_task,
            pa.field("decided_by", pa.string(), nullable=False),  # small | large | review (highest needed)
            pa.field("escalation_reasons", pa.list_(pa.string())),
            pa.field("escalation_failed", pa.bool_()),  # large tier was needed but failed; retried next run
            # Each tier's answer for the items that left the small tier (what a reviewer compares).
            pa.field("tier_answers", pa.list_(pa.struct([
                pa.field("item", pa.string()), pa.field("tier", pa.string()), pa.field("value", pa.string()),
                pa.field("confidence", pa.float64())]))),
            pa.field("n_pages", pa.int32()),
            pa.field("n_chars", pa.int64()),
            pa.field("metadata", pa.map_(pa.string(), pa.string())),
            pa.field("model_version_id", pa.string()),  # the registry's model version (adapter, labels, thresholds)
            pa.field("small_model_version", pa.string()),
            pa.field("large_model_version", pa.string()),
            pa.field("task_versions", pa.map_(pa.string(), pa.string())),
            pa.field("config_hash", pa.string()),
            pa.field("small_prompt_tokens", pa.int64()),
            pa.field("small_completion_tokens", pa.int64()),
            pa.field("large_prompt_tokens", pa.int64()),
            pa.field("large_completion_tokens", pa.int64()),
            pa.field("small_seconds", pa.float64()),
            pa.field("large_seconds", pa.float64()),
            *_common,
        ]
    )


FIELDS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("type", pa.string()),
        pa.field("value", pa.string()),  # as written in the document; null when absent
        pa.field("normalized", pa.string()),  # ISO date, decimal amount, ISO 4217 currency ...
        pa.field("confidence", pa.float64()),
        pa.field("page", pa.int32()),
        pa.field("span_start", pa.int64()),  # character span of the evidence in the document text
        pa.field("span_end", pa.int64()),
        pa.field("decided_by", pa.string(), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("problems", pa.list_(pa.string())),  # the validators' findings: valid is false when any
        # Why routing sent the value up: '<tier>:low_confidence(<conf><<threshold>)', '<tier>:<problem>', ...
        pa.field("routing_reasons", pa.list_(pa.string())),
        pa.field("model_version", pa.string()),
        pa.field("model_version_id", pa.string()),  # the registry's model version
        pa.field("task_version", pa.string()),
        *_common,
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("retriable", pa.bool_(), nullable=False),
        *_common,
    ]
)

# What each input's last processing produced, and with which versions: a rerun skips the inputs that
# are done with the current version_key (unless reprocess), and keeps their rows as they are.
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("outcome", pa.string(), nullable=False),  # result | error
        pa.field("done", pa.bool_(), nullable=False),  # false: retried next run (retriable error, failed escalation)
        pa.field("version_key", pa.string(), nullable=False),  # models + config + task and schema versions
        *_common,
    ]
)

RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("sources", pa.list_(pa.string())),
        pa.field("n_inputs", pa.int64(), nullable=False),
        pa.field("n_results", pa.int64(), nullable=False),
        pa.field("n_errors", pa.int64(), nullable=False),
        pa.field("n_skipped", pa.int64()),  # inputs already done with this version: rows kept as they were
        # inputs with rows for the date that the run did not see (deleted or moved files): rows kept
        pa.field("n_unseen_kept", pa.int64()),
        pa.field("n_pruned", pa.int64()),  # such inputs whose rows the run dropped (prune_missing)
        pa.field("invariant_ok", pa.bool_(), nullable=False),
        pa.field("parameters", pa.map_(pa.string(), pa.string())),
        pa.field("escalation_rate", pa.map_(pa.string(), pa.float64())),  # task -> share escalated
        pa.field("review_rate", pa.map_(pa.string(), pa.float64())),
        pa.field("tokens", pa.map_(pa.string(), pa.int64())),  # tier -> prompt+completion tokens
        pa.field("estimated_cost", pa.map_(pa.string(), pa.float64())),  # tier (and 'hosted_all') -> money
        pa.field("model_versions", pa.map_(pa.string(), pa.string())),
        pa.field("code_version", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("timings", pa.map_(pa.string(), pa.float64())),  # stage -> seconds
        pa.field("docs_per_second_small", pa.float64()),
    ]
)


def table_schema(table: str, task_names: list[str]) -> pa.Schema:
    if table == "results":
        return results_schema(task_names)
    return {"fields": FIELDS_SCHEMA, "errors": ERRORS_SCHEMA, "manifest": MANIFEST_SCHEMA, "runs": RUNS_SCHEMA}[table]
