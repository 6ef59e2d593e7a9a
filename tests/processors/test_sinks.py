from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processors import sinks
from schemas.records import Document, FieldPrediction, LabelPrediction, Rejected, Usage
from schemas.tables import ERRORS_SCHEMA, FIELDS_SCHEMA, LABELS_SCHEMA, MANIFEST_SCHEMA, RESULTS_SCHEMA, SCHEMA_VERSION


def _doc() -> Document:
    doc = Document(doc_id="abc", source="tickets", uri="f.jsonl#L1", text="hello", pages=["hello"],
                   metadata={"ticket_id": "T-1", "created_at": "2026-11-20T08:02:11+00:00", "channel": "email"})
    doc.labels["category"] = LabelPrediction("category", "ORDER", 0.9, {"ORDER": 0.9}, "large")
    doc.fields["order_id"] = FieldPrediction("order_id", "123", "123", 0.8, 1, 0, 3, True, "small")
    doc.decided_by = {"category": "large", "field:order_id": "small"}
    doc.usage = {"small": Usage(10, 2, 0.5), "large": Usage(30, 1, 1.0)}
    doc.model_versions = {"small": "s@1", "large": "l@2"}
    return doc


def test_rows_match_their_schemas_and_carry_versions(config, tmp_path):
    row = sinks.result_row(_doc(), config, "run-1", "cfg")
    assert row["decided_by"] == "large" and row["small_model_version"] == "s@1"
    assert not any(c in row for c in ("category", "category_decided_by", "sentiment"))  # labels live in labels
    path = tmp_path / "results.parquet"
    sinks.write_partition(path, [row], RESULTS_SCHEMA)
    back = pl.read_parquet(path)
    assert back["schema_version"].to_list() == [SCHEMA_VERSION]
    assert pq.read_schema(path).equals(RESULTS_SCHEMA, check_metadata=False)
    labels = sinks.label_rows(_doc(), config, "run-1")
    assert [(r["task"], r["label"], r["confidence"], r["decided_by"]) for r in labels] == [
        ("category", "ORDER", 0.9, "large")]  # sentiment was not answered: no row
    sinks.write_partition(tmp_path / "labels.parquet", labels, LABELS_SCHEMA)
    assert pl.read_parquet(tmp_path / "labels.parquet")["task"].to_list() == ["category"]
    fields = sinks.field_rows(_doc(), config, "run-1")
    sinks.write_partition(tmp_path / "fields.parquet", fields, FIELDS_SCHEMA)
    assert pl.read_parquet(tmp_path / "fields.parquet")["decided_by"].to_list() == ["small"]


def test_a_tickets_id_and_creation_time_are_typed_columns_not_metadata(config, tmp_path):
    row = sinks.result_row(_doc(), config, "run-1", "cfg")
    assert row["source_id"] == "T-1" and row["created_at"] == datetime(2026, 11, 20, 8, 2, 11, tzinfo=UTC)
    assert dict(row["metadata"]) == {"channel": "email"}
    sinks.write_partition(tmp_path / "results.parquet", [row], RESULTS_SCHEMA)
    back = pl.read_parquet(tmp_path / "results.parquet")
    assert back.schema["created_at"] == pl.Datetime("us", "UTC") and back["source_id"].to_list() == ["T-1"]
    pdf = Document(doc_id="p", source="pdf", uri="a.pdf", text="x", metadata={"ticket_id": "not a ticket"})
    row = sinks.result_row(pdf, config, "run-1", "cfg")
    assert row["source_id"] is None and row["created_at"] is None and dict(row["metadata"]) == {
        "ticket_id": "not a ticket"}  # a PDF's info keys are its own


@pytest.mark.parametrize(("type_", "value", "normalized", "amount", "day", "currency"), [
    ("amount", "$1,234.5", "1234.50", Decimal("1234.5000"), None, "USD"),
    ("amount", "1200 dollars", "1200.00", Decimal("1200.0000"), None, "USD"),
    ("amount", "EUR 3,10", "3.10", Decimal("3.1000"), None, "EUR"),
    ("amount", "160", "160.00", Decimal("160.0000"), None, None),  # no currency written with it
    ("amount", "12 parsecs", "12.00", Decimal("12.0000"), None, None),  # unknown unit: no currency
    ("amount", "1e30", "1E+30", None, None, None),  # beyond decimal(18, 4): null, the text stays
    ("amount", "n/a", None, None, None, None),
    ("date", "August 3 , 2014", "2014-08-03", None, date(2014, 8, 3), None),
    ("date", "someday", None, None, None, None),
    ("currency", "Dollars", "USD", None, None, "USD"),
    ("id", "2014-08-03", "2014-08-03", None, None, None),  # the type decides, not the text's look
    (None, "5", "5", None, None, None),
])
def test_typed_field_values_follow_the_field_type(tmp_path, type_, value, normalized, amount, day, currency):
    typed = sinks.typed_value(type_, value, normalized)
    assert typed == {"value_amount": amount, "value_date": day, "currency": currency}
    row = {"doc_id": "d", "uri": "u", "field": "f", "type": type_, "value": value, "normalized": normalized,
           **typed, "decided_by": "small", "valid": True, "schema_version": SCHEMA_VERSION, "run_id": "r"}
    sinks.write_partition(tmp_path / "fields.parquet", [row], FIELDS_SCHEMA)
    back = pl.read_parquet(tmp_path / "fields.parquet")
    assert back.schema["value_amount"] == pl.Decimal(18, 4) and back.schema["value_date"] == pl.Date
    assert back.row(0, named=True)["value_amount"] == amount and back.row(0, named=True)["value_date"] == day


def test_field_rows_fill_the_typed_columns_from_the_configured_types(config):
    doc = _doc()
    doc.source = "pdf"
    doc.fields = {"total_amount": FieldPrediction("total_amount", "$4.11", "4.11", 0.9, 1, 0, 5, True, "small"),
                  "date": FieldPrediction("date", "August 3 , 2014", "2014-08-03", 0.9, 1, 0, 9, True, "small")}
    types = {f.name: f.type for f in config.fields["pdf"]}
    assert types["total_amount"] == "amount" and types["date"] == "date"
    rows = {r["field"]: r for r in sinks.field_rows(doc, config, "run-1")}
    assert rows["total_amount"]["value_amount"] == Decimal("4.11") and rows["total_amount"]["currency"] == "USD"
    assert rows["date"]["value_date"] == date(2014, 8, 3) and rows["date"]["value_amount"] is None


def test_a_field_row_carries_why_routing_sent_it_up_apart_from_its_validators(config, tmp_path):
    doc = _doc()
    doc.fields["invoice_id"] = FieldPrediction("invoice_id", "123", "123", 0.01, 1, 0, 3, True, "large")
    doc.decided_by["field:invoice_id"] = "review"
    doc.escalation_reasons = ["small:category:low_confidence(0.40<0.60)",
                              "small:field:invoice_id:low_confidence(0.01<0.60)",
                              "large:field:invoice_id:low_confidence(0.30<0.50)"]
    rows = {r["field"]: r for r in sinks.field_rows(doc, config, "run-1")}
    low = rows["invoice_id"]
    assert low["valid"] and low["problems"] == []  # the value passed its validators ...
    assert low["routing_reasons"] == ["small:low_confidence(0.01<0.60)", "large:low_confidence(0.30<0.50)"]
    assert low["decided_by"] == "review"  # ... but was never decided by the small tier
    assert rows["order_id"]["routing_reasons"] == []
    doc.escalation_reasons = ["large:failed(field:invoice_id+field:order_id: timeout)"]
    rows = {r["field"]: r for r in sinks.field_rows(doc, config, "run-1")}
    assert rows["order_id"]["routing_reasons"] == ["large:failed(field:invoice_id+field:order_id: timeout)"]
    sinks.write_partition(tmp_path / "fields.parquet", list(rows.values()), FIELDS_SCHEMA)
    assert pl.read_parquet(tmp_path / "fields.parquet")["routing_reasons"].to_list()[0]


def test_rewrite_replaces_the_partition_and_leaves_no_temp_files(tmp_path):
    path = sinks.partition_path(str(tmp_path), "errors", "2026-11-20", "pdf")
    bad = Rejected("a.pdf", "pdf", "ingest", "corrupt_pdf", "x")
    sinks.write_partition(path, [sinks.error_row(bad, "r1")] * 3, ERRORS_SCHEMA)
    sinks.write_partition(path, [sinks.error_row(bad, "r2")], ERRORS_SCHEMA)
    assert pl.read_parquet(path)["run_id"].to_list() == ["r2"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_write_keeps_the_old_partition(tmp_path):
    path = tmp_path / "part-00000.parquet"
    bad = Rejected("a.pdf", "pdf", "ingest", "corrupt_pdf", "x")
    sinks.write_partition(path, [sinks.error_row(bad, "r1")], ERRORS_SCHEMA)
    with pytest.raises((ValueError, TypeError)):  # pyarrow: a null in a non-null column
        sinks.write_partition(path, [{"uri": None}], ERRORS_SCHEMA)  # violates a non-null column
    assert pl.read_parquet(path)["run_id"].to_list() == ["r1"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_write_sweeps_temp_files_left_by_a_killed_write(tmp_path):
    path = sinks.partition_path(str(tmp_path), "errors", "2026-11-20", "pdf")
    path.parent.mkdir(parents=True)
    left = path.parent / f".{path.name}.0123abcd.tmp"  # what a write killed before its rename leaves
    left.write_bytes(b"half a parquet file")
    other = path.parent / ".part-00001.parquet.0123abcd.tmp"  # another shard's: not this write's to sweep
    other.write_bytes(b"x")
    bad = Rejected("a.pdf", "pdf", "ingest", "corrupt_pdf", "x")
    sinks.write_partition(path, [sinks.error_row(bad, "r1")], ERRORS_SCHEMA)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, other.name])


def test_read_table_joins_dates_and_sources_and_names_the_source(tmp_path):
    out = str(tmp_path)
    for day, source, run in (("2026-11-20", "pdf", "a"), ("2026-11-21", "pdf", "b"), ("2026-11-21", "tickets", "c")):
        bad = Rejected(f"{run}.x", source, "ingest", "corrupt_pdf", "x")
        sinks.write_partition(sinks.partition_path(out, "errors", day, source), [sinks.error_row(bad, run)],
                              ERRORS_SCHEMA)
    both = sinks.read_table(out, "errors", ["2026-11-20", "2026-11-21", "2026-11-22"])
    assert sorted(zip(both["run_id"], both["source"], strict=True)) == [("a", "pdf"), ("b", "pdf"), ("c", "tickets")]
    only = sinks.read_table(out, "errors", ["2026-11-21"], sources=["tickets"])
    assert only["run_id"].to_list() == ["c"]
    assert sinks.read_table(out, "errors", ["2026-11-19"]).is_empty()


def test_a_commit_killed_midway_is_finished_by_recover_and_orphans_are_swept(tmp_path):
    """An input whose outcome flips moves from one table to another: the renames of a run go together.
    The kill is raised from commit's after-each hook, the only way to stop it between two renames."""
    out, day = str(tmp_path), "2026-11-20"
    bad = Rejected("a.jsonl#L1", "tickets", "ingest", "malformed_json", "x")
    staged = []
    for table, rows in (("errors", [sinks.error_row(bad, "r2")]), ("manifest", [])):
        path = sinks.partition_path(out, table, day, "tickets")
        tmp, _ = sinks.stage_partition(path, rows, ERRORS_SCHEMA if table == "errors" else MANIFEST_SCHEMA)
        staged.append((str(tmp), str(path)))
    orphan, _ = sinks.stage_partition(sinks.partition_path(out, "fields", day, "tickets"), [], FIELDS_SCHEMA)

    def killed() -> None:
        raise SystemExit("killed after the first rename")

    with pytest.raises(SystemExit):
        sinks.commit(out, day, "r2", staged, after_each=killed)
    errors, manifest = (sinks.partition_path(out, t, day, "tickets") for t in ("errors", "manifest"))
    assert errors.exists() and not manifest.exists()  # data first, the manifest last
    assert sinks.recover(out, day) == 1
    assert manifest.exists() and pl.read_parquet(errors)["uri"].to_list() == ["a.jsonl#L1"]
    assert not orphan.exists() and not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("r2.json"))
    assert sinks.recover(out, day) == 0  # nothing left to do


def _legacy_results(path, rows: list[dict]) -> None:
    """A results partition as schema 1 wrote it: three columns per label task."""
    legacy = pa.schema([*[f for f in RESULTS_SCHEMA if f.name not in ("source_id", "created_at")],
                        pa.field("category", pa.string()), pa.field("category_confidence", pa.float64()),
                        pa.field("category_decided_by", pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=legacy), path)


def test_a_rerun_keeps_the_answers_of_inputs_written_before_the_labels_table(config, tmp_path):
    """Schema 1 kept label answers in results; a rerun that keeps such an input's rows (not seen, or
    skipped) writes its answers into labels instead of dropping them with the old columns."""
    out, day = str(tmp_path), "2026-11-20"
    old = {"doc_id": "d1", "uri": "gone.jsonl#L1", "decided_by": "large", "schema_version": "1", "run_id": "r1",
           "category": "ORDER", "category_confidence": 0.7, "category_decided_by": "large"}
    _legacy_results(sinks.partition_path(out, "results", day, "tickets"), [old])
    before = sinks.read_table(out, "labels", [day])  # readers see schema 1's answers as labels rows
    assert before.select("uri", "task", "label", "decided_by", "source").rows() == [
        ("gone.jsonl#L1", "category", "ORDER", "large", "tickets")]
    staged = []
    for table in ("labels", "results"):
        tmp, final, _ = sinks.stage_table_partition(out, table, day, "tickets", [], config,
                                                    keep_uris={"gone.jsonl#L1"})
        staged.append((str(tmp), str(final)))
    sinks.commit(out, day, "r2", staged)
    labels = pl.read_parquet(sinks.partition_path(out, "labels", day, "tickets"))
    assert labels.select("task", "label", "confidence", "decided_by", "run_id").rows() == [
        ("category", "ORDER", 0.7, "large", "r1")]
    results = pl.read_parquet(sinks.partition_path(out, "results", day, "tickets"))
    assert results["uri"].to_list() == ["gone.jsonl#L1"] and "category" not in results.columns


def test_with_labels_gives_the_wide_view(config):
    results = pl.DataFrame({"uri": ["a", "b"], "doc_id": ["1", "2"], "source": ["tickets", "pdf"]})
    labels = pl.DataFrame({"uri": ["a", "a", "b"], "doc_id": ["1", "1", "2"], "source": ["tickets"] * 2 + ["pdf"],
                           "task": ["category", "sentiment", "sentiment"], "label": ["ORDER", "neutral", "positive"],
                           "confidence": [0.9, 0.8, 0.7], "decided_by": ["small", "linear", "large"]})
    wide = sinks.with_labels(results, labels).sort("uri")
    assert wide["category"].to_list() == ["ORDER", None] and wide["sentiment_decided_by"].to_list() == [
        "linear", "large"]
    assert sinks.with_labels(results, pl.DataFrame()).equals(results)


def test_a_shard_of_a_superseded_run_does_not_commit(tmp_path):
    """The flow claims the date before its shards start; a shard still running for an earlier run whose
    flow died (a dask task goes on after its client is gone) then raises instead of renaming its files."""
    out = str(tmp_path)
    sinks.check_date_owner(out, "2026-11-20", "old")  # no claim yet: nothing to check
    sinks.claim_date(out, "2026-11-20", "old")
    sinks.check_date_owner(out, "2026-11-20", "old")
    sinks.claim_date(out, "2026-11-20", "new")
    with pytest.raises(sinks.Superseded, match="run new owns the date"):
        sinks.check_date_owner(out, "2026-11-20", "old")
    assert sinks.recover(out, "2026-11-20") == 0  # the claim is not a journal
