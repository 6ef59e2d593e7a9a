"""Distillation input: the large tier's decisions read back from tables the pipeline's sinks wrote."""

from __future__ import annotations

import shutil
from datetime import date

from processors.finetune.distill import distilled_examples
from processors.ingest.read import read_and_ingest
from processors.sinks import field_rows, label_rows, partition_path, result_row, write_partition
from schemas.records import Document, FieldPrediction, LabelPrediction
from schemas.tables import FIELDS_SCHEMA, LABELS_SCHEMA, RESULTS_SCHEMA
from tests.conftest import FIXTURE_DATE, FIXTURES


def _write_night(config, out, inbox_file):
    docs = [r for r in read_and_ingest((str(inbox_file), "tickets"), config) if isinstance(r, Document)]
    first, second, third = docs[:3]
    for doc in docs[:3]:
        doc.labels["category"] = LabelPrediction("category", "ORDER", 0.4, {}, "small")
        doc.decided_by["category"] = "small"
    # the large tier decided first's category and second's order_id; third stayed with the small tier
    first.labels["category"] = LabelPrediction("category", "ORDER", 0.9, {}, "large")
    first.decided_by["category"] = "large"
    second.fields["order_id"] = FieldPrediction("order_id", "37777", "37777", 0.9, 1, 0, 5, True, "large")
    second.decided_by["field:order_id"] = "large"
    third.fields["order_id"] = FieldPrediction("order_id", "999", "999", 0.3, 1, 0, 3, False, "large")
    third.decided_by["field:order_id"] = "review"  # not valid: not taught
    rows = [result_row(d, config, "run-1", "cfg") for d in docs[:3]]
    write_partition(partition_path(str(out), "results", FIXTURE_DATE, "tickets"), rows, RESULTS_SCHEMA)
    write_partition(partition_path(str(out), "labels", FIXTURE_DATE, "tickets"),
                    [r for d in docs[:3] for r in label_rows(d, config, "run-1")], LABELS_SCHEMA)
    write_partition(partition_path(str(out), "fields", FIXTURE_DATE, "tickets"),
                    [r for d in docs[:3] for r in field_rows(d, config, "run-1")], FIELDS_SCHEMA)
    return first, second, third


def test_large_tier_decisions_become_examples_and_corrections_win(config, tmp_path):
    inbox_file = tmp_path / "support_export.jsonl"
    shutil.copy(FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl", inbox_file)
    first, second, third = _write_night(config, tmp_path / "out", inbox_file)
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(f"doc_id,category,field.order_id\n{second.doc_id},INVOICE,\n"
                           f"{third.doc_id},,null\n", encoding="utf-8")
    day = date.fromisoformat(FIXTURE_DATE)
    examples, stats = distilled_examples(config, str(tmp_path / "out"), day, day, corrections)
    by_id = {ex.example_id: ex for ex in examples}
    assert set(by_id) == {first.doc_id, second.doc_id, third.doc_id}
    assert by_id[first.doc_id].labels == {"category": "ORDER"}  # the large tier's label
    assert by_id[first.doc_id].text == first.text  # re-read from its uri with the nightly ingest
    assert by_id[second.doc_id].fields == {"order_id": "37777"}
    assert by_id[second.doc_id].labels == {"category": "INVOICE"}  # a human correction wins
    assert by_id[third.doc_id].fields == {"order_id": None}  # corrected to absent; its invalid value is not used
    assert stats["large_labels"] == 1 and stats["large_fields"] == 1 and stats["corrected"] == 2
    # outside the date range: nothing
    assert distilled_examples(config, str(tmp_path / "out"), date(2026, 11, 21), date(2026, 11, 22))[0] == []


def test_dates_written_before_the_labels_table_still_teach(config, tmp_path):
    """Schema 1 kept label answers in results (`<task>`, `<task>_decided_by` ...): those dates still teach."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    inbox_file = tmp_path / "support_export.jsonl"
    shutil.copy(FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl", inbox_file)
    doc = next(r for r in read_and_ingest((str(inbox_file), "tickets"), config) if isinstance(r, Document))
    legacy = pa.schema([*[f for f in RESULTS_SCHEMA if f.name not in ("source_id", "created_at")],
                        pa.field("category", pa.string()), pa.field("category_confidence", pa.float64()),
                        pa.field("category_decided_by", pa.string())])
    row = {**result_row(doc, config, "run-0", "cfg"), "schema_version": "1", "category": "REFUND",
           "category_confidence": 0.8, "category_decided_by": "large"}
    path = partition_path(str(tmp_path / "out"), "results", FIXTURE_DATE, "tickets")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=legacy), path)
    day = date.fromisoformat(FIXTURE_DATE)
    examples, stats = distilled_examples(config, str(tmp_path / "out"), day, day)
    assert [(e.example_id, e.labels) for e in examples] == [(doc.doc_id, {"category": "REFUND"})]
    assert stats["large_labels"] == 1
