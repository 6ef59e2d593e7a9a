import polars as pl
import pyarrow.parquet as pq
import pytest

from processors import sinks
from schemas.records import Document, FieldPrediction, LabelPrediction, Rejected, Usage
from schemas.tables import ERRORS_SCHEMA, FIELDS_SCHEMA, MANIFEST_SCHEMA, SCHEMA_VERSION, results_schema


def _doc() -> Document:
    doc = Document(doc_id="abc", source="tickets", uri="f.jsonl#L1", text="hello", pages=["hello"],
                   metadata={"ticket_id": "T-1"})
    doc.labels["category"] = LabelPrediction("category", "ORDER", 0.9, {"ORDER": 0.9}, "large")
    doc.fields["order_id"] = FieldPrediction("order_id", "123", "123", 0.8, 1, 0, 3, True, "small")
    doc.decided_by = {"category": "large", "field:order_id": "small"}
    doc.usage = {"small": Usage(10, 2, 0.5), "large": Usage(30, 1, 1.0)}
    doc.model_versions = {"small": "s@1", "large": "l@2"}
    return doc


def test_rows_match_their_schemas_and_carry_versions(config, tmp_path):
    row = sinks.result_row(_doc(), config, "run-1", "cfg")
    assert row["decided_by"] == "large" and row["category_decided_by"] == "large"
    assert row["sentiment"] is None and row["small_model_version"] == "s@1"
    path = tmp_path / "results.parquet"
    sinks.write_partition(path, [row], results_schema([t.name for t in config.tasks]))
    back = pl.read_parquet(path)
    assert back["schema_version"].to_list() == [SCHEMA_VERSION]
    assert pq.read_schema(path).equals(results_schema([t.name for t in config.tasks]), check_metadata=False)
    fields = sinks.field_rows(_doc(), config, "run-1")
    sinks.write_partition(tmp_path / "fields.parquet", fields, FIELDS_SCHEMA)
    assert pl.read_parquet(tmp_path / "fields.parquet")["decided_by"].to_list() == ["small"]


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
