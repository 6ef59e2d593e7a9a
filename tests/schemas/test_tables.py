"""The output tables' contract: one schema per table whatever the tasks, a data dictionary that matches the
schemas, descriptions inside the Parquet files, and task names that cannot collide with columns."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from processors import sinks
from schemas.config import LabelTask
from schemas.records import Document, FieldPrediction, LabelPrediction, Rejected
from schemas.tables import (
    PARTITION_KEYS,
    RESULT_TABLES,
    SCHEMAS,
    check_task_name,
    check_task_names,
    data_dictionary,
    table_schema,
)

ROOT = Path(__file__).resolve().parents[2]
INTENT = LabelTask(name="intent", labels=["cancel_order", "track_order"], sources=["tickets"])


def test_docs_tables_md_is_generated_from_the_schemas():
    """docs/tables.md drifts from schemas/tables.py: regenerate it with
    `uv run python -m schemas.tables > docs/tables.md`."""
    assert (ROOT / "docs" / "tables.md").read_text(encoding="utf-8") == data_dictionary()
    generated = subprocess.run([sys.executable, "-m", "schemas.tables"], cwd=ROOT, capture_output=True, text=True,
                               check=True, timeout=60).stdout
    assert generated == data_dictionary()


def test_every_column_has_a_meaning_and_the_dictionary_lists_each_with_type_and_nullability():
    text = data_dictionary()
    for name, schema in SCHEMAS.items():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for field in schema:
            description = (field.metadata or {}).get(b"description", b"").decode()
            assert len(description) > 10, f"{name}.{field.name} needs a description"
            cell = description.replace("|", "\\|")
            row = f"| `{field.name}` | `{field.type}` | {'yes' if field.nullable else 'no'} | {cell} |"
            assert row in section, row
        assert name in RESULT_TABLES or name == "runs"
        assert not set(PARTITION_KEYS) & set(schema.names), "partition keys live in the path only"


def test_a_written_parquet_file_carries_the_descriptions(config, tmp_path):
    doc = Document(doc_id="d", source="tickets", uri="t.jsonl#L1", text="x", pages=["x"],
                   metadata={"ticket_id": "T-1", "created_at": ""})
    doc.labels["sentiment"] = LabelPrediction("sentiment", "neutral", 0.8, {}, "small")
    doc.decided_by["sentiment"] = "small"
    rows = {"results": [sinks.result_row(doc, config, "r", "c")], "labels": sinks.label_rows(doc, config, "r"),
            "fields": [], "errors": [], "manifest": [sinks.manifest_row(doc, "k", "r")]}
    for table, table_rows in rows.items():
        path = sinks.partition_path(str(tmp_path), table, "2026-11-20", "tickets")
        sinks.write_partition(path, table_rows, table_schema(table))
        written = pq.read_schema(path)
        assert written.metadata[b"table"] == table.encode()
        for field in table_schema(table):
            assert written.field(field.name).metadata[b"description"] == field.metadata[b"description"]
    labels_file = sinks.partition_path(str(tmp_path), "labels", "2026-11-20", "tickets")
    assert b"linear" in pq.read_schema(labels_file).field("decided_by").metadata[b"description"]


@pytest.mark.parametrize("name", ["category", "intent", "sentiment", "urgency", "refund_reason_2"])
def test_plain_task_names_pass(name):
    assert check_task_name(name) == name


@pytest.mark.parametrize("name", ["doc_id", "uri", "run_date", "source", "decided_by", "label", "task",
                                  "confidence", "schema_version", "fields"])
def test_task_names_that_are_columns_or_partition_keys_are_refused(name):
    with pytest.raises(ValueError, match="reserved"):
        check_task_name(name)


@pytest.mark.parametrize("name", ["", "Category", "1st", "my task", "a-b", "x;drop", "field:total", "é", "a" * 64,
                                  "_private"])
def test_task_names_that_are_not_safe_identifiers_are_refused(name):
    with pytest.raises(ValueError, match="identifier"):
        check_task_name(name)


def test_a_list_is_checked_name_by_name():
    assert check_task_names(["category", "sentiment"]) == ["category", "sentiment"]
    with pytest.raises(ValueError, match="'source'"):
        check_task_names(["category", "source"])


def _night(out: str, day: str, config, answers: dict[str, str], run_id: str) -> None:
    """One date's partitions, written and committed as the pipeline does (stage every table, commit)."""
    docs = []
    for i, source in enumerate(["tickets", "pdf"]):
        doc = Document(doc_id=f"{day}-{i}", source=source, uri=f"/in/{source}/{day}/{i}", text="t", pages=["t"],
                       metadata={"ticket_id": f"T-{i}", "created_at": f"{day}T08:00:00+00:00"}
                       if source == "tickets" else {})
        for task in config.tasks:
            if source in task.sources:
                doc.labels[task.name] = LabelPrediction(task.name, answers[task.name], 0.9, {}, "small")
                doc.decided_by[task.name] = "small"
        doc.fields["total"] = FieldPrediction("total", "$5", "5.00", 0.9, 1, 0, 2, True, "small")
        docs.append(doc)
    bad = Rejected(f"/in/pdf/{day}/broken.pdf", "pdf", "ingest", "corrupt_pdf", "x")
    staged = []
    for source in ("tickets", "pdf"):
        mine = [d for d in docs if d.source == source]
        rows = {"results": [sinks.result_row(d, config, run_id, "c") for d in mine],
                "labels": [r for d in mine for r in sinks.label_rows(d, config, run_id)],
                "fields": [r for d in mine for r in sinks.field_rows(d, config, run_id)],
                "errors": [sinks.error_row(bad, run_id)] if source == "pdf" else [],
                "manifest": [sinks.manifest_row(d, "k", run_id) for d in mine]}
        assert set(rows) == set(RESULT_TABLES)
        for table, table_rows in rows.items():
            tmp, final, _ = sinks.stage_table_partition(out, table, day, source, table_rows, config)
            staged.append((str(tmp), str(final)))
    sinks.commit(out, day, run_id, staged)


@pytest.fixture
def two_nights(config, tmp_path) -> str:
    """2026-11-20 with tasks [category, sentiment]; 2026-11-21 with a version that adds `intent`."""
    out = str(tmp_path)
    assert [t.name for t in config.tasks] == ["category", "sentiment"]
    later = config.model_copy(update={"tasks": [*config.tasks, INTENT]})
    _night(out, "2026-11-20", config, {"category": "ORDER", "sentiment": "neutral"}, "r1")
    _night(out, "2026-11-21", later, {"category": "REFUND", "sentiment": "negative", "intent": "cancel_order"}, "r2")
    return out


def test_polars_reads_dates_before_and_after_a_version_adds_a_task(two_nights):
    """A promoted version that learns `intent` adds no column: a glob over both dates reads in one scan."""
    out = two_nights

    results = pl.scan_parquet(f"{out}/results/**/*.parquet", hive_partitioning=True).collect()
    assert results.height == 4
    assert set(results.columns) == {*table_schema("results").names, *PARTITION_KEYS}
    assert sorted(zip(results["run_date"], results["source"], results["source_id"], strict=True),
                  key=str) == sorted([(date(2026, 11, 20), "pdf", None), (date(2026, 11, 20), "tickets", "T-0"),
                                      (date(2026, 11, 21), "pdf", None), (date(2026, 11, 21), "tickets", "T-0")],
                                     key=str)

    labels = pl.scan_parquet(f"{out}/labels/**/*.parquet", hive_partitioning=True)
    got = labels.select("run_date", "source", "task", "label").collect().sort("run_date", "source", "task").rows()
    assert got == [
        (date(2026, 11, 20), "pdf", "sentiment", "neutral"),
        (date(2026, 11, 20), "tickets", "category", "ORDER"),
        (date(2026, 11, 20), "tickets", "sentiment", "neutral"),
        (date(2026, 11, 21), "pdf", "sentiment", "negative"),
        (date(2026, 11, 21), "tickets", "category", "REFUND"),
        (date(2026, 11, 21), "tickets", "intent", "cancel_order"),
        (date(2026, 11, 21), "tickets", "sentiment", "negative"),
    ]
    # the analyst's joins and filters: per-task counts, and results with their labels
    per_task = labels.group_by("task").len().collect().sort("task").rows()
    assert per_task == [("category", 2), ("intent", 1), ("sentiment", 4)]
    joined = results.join(labels.filter(pl.col("task") == "intent").collect(), on=["run_date", "source", "uri"])
    assert joined["label"].to_list() == ["cancel_order"] and joined["doc_id"].to_list() == ["2026-11-21-0"]
    fields = pl.scan_parquet(f"{out}/fields/**/*.parquet", hive_partitioning=True).collect()
    assert fields["currency"].to_list() == [None] * 4  # `total` has no configured type here
    for table in ("errors", "manifest"):
        assert pl.scan_parquet(f"{out}/{table}/**/*.parquet", hive_partitioning=True).collect().height > 0
    # the wide view, for whoever wants it: built from labels, null where a task was not asked
    wide = sinks.with_labels(results, labels.collect()).sort("run_date", "source")
    assert wide["intent"].to_list() == [None, None, None, "cancel_order"]


def test_duckdb_reads_them_without_union_by_name(two_nights):
    duckdb = pytest.importorskip("duckdb")  # not a dependency today: runs where it is installed
    out, con = two_nights, duckdb.connect()
    for table in ("results", "labels"):
        n = con.execute(f"select count(*) from read_parquet('{out}/{table}/**/*.parquet', "
                        "hive_partitioning = true)").fetchone()[0]
        assert n == {"results": 4, "labels": 7}[table]
    intent = con.execute(f"select label from read_parquet('{out}/labels/**/*.parquet', hive_partitioning = true) "
                         "where task = 'intent'").fetchall()
    assert intent == [("cancel_order",)]
