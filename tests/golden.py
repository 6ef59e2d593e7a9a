"""Golden outputs of the quick-start run (fixtures/expected/quickstart/): what the bundled fixtures give.

The tables are projected onto what a change must not move silently (uris, ids, outcomes, error reasons,
labels, field values, who decided) and kept as CSV, so a diff in review shows what moved. Regenerate
them, after a change that is meant to move answers, with

    SLUICEGATE_REGENERATE_GOLDEN=1 uv run pytest tests/flows/test_nightly.py

and commit the CSVs with the change; a test fails while the flag is set, so a regenerated run never
passes CI by itself (as docling's GEN_TEST_DATA).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "expected" / "quickstart"
REGENERATE = os.environ.get("SLUICEGATE_REGENERATE_GOLDEN") == "1"
# Share of answer cells (labels, field values, who decided) that may differ: none. Each document is
# evaluated as its own sequence, so its answers do not depend on batches or history (README, "The same
# answer every time"); with prompt-cache reuse, 1 to 3 of 78 labels used to flip between runs.
ANSWER_TOLERANCE = 0.0
KEYS = {"results": ["uri"], "labels": ["uri", "task"], "fields": ["uri", "field"], "errors": ["uri"],
        "manifest": ["uri"]}
EXACT = {"results": ["doc_id", "source", "source_id"], "labels": [], "fields": [],
         "errors": ["doc_id", "stage", "reason", "retriable"], "manifest": ["doc_id", "outcome", "done"]}


def project(out: Path, inbox: Path) -> dict[str, pl.DataFrame]:
    """The golden view of a run's tables: uris relative to the inbox, stable columns, sorted."""
    tables = {}
    for table, keys in KEYS.items():
        frame = pl.read_parquet(out / table / "**" / "*.parquet", hive_partitioning=True)
        frame = frame.with_columns(pl.col("uri").str.replace(str(inbox) + "/", "", literal=True))
        if table == "results":
            columns = ["uri", *EXACT[table], "decided_by"]
        elif table == "labels":
            columns = ["uri", "task", "label", "decided_by"]
        elif table == "fields":
            columns = ["uri", "field", "value", "value_amount", "value_date", "currency", "decided_by", "valid"]
        else:
            columns = ["uri", *EXACT[table]]
        tables[table] = frame.select(columns).sort(keys)
    return tables


def write(tables: dict[str, pl.DataFrame]) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for table, frame in tables.items():
        frame.write_csv(GOLDEN / f"{table}.csv")


def differences(tables: dict[str, pl.DataFrame]) -> tuple[list[str], list[str], int]:
    """(structural differences, answer differences, answer cells compared) against the golden CSVs."""
    structural, answers, compared = [], [], 0
    for table, keys in KEYS.items():
        got = tables[table]
        want = pl.read_csv(GOLDEN / f"{table}.csv", schema_overrides=dict(got.schema), infer_schema=False)
        if got.columns != want.columns:
            structural.append(f"{table}: columns {got.columns} != golden {want.columns}")
            continue
        got_keys, want_keys = set(got.select(keys).iter_rows()), set(want.select(keys).iter_rows())
        structural += [f"{table}: unexpected row {k}" for k in sorted(got_keys - want_keys, key=str)]
        structural += [f"{table}: missing row {k}" for k in sorted(want_keys - got_keys, key=str)]
        joined = got.join(want, on=keys, how="inner", suffix="__golden", nulls_equal=True)
        for column in [c for c in got.columns if c not in keys]:
            is_exact = column in EXACT[table]
            compared += 0 if is_exact else len(joined)
            for row in joined.filter(pl.col(column).ne_missing(pl.col(f"{column}__golden"))).iter_rows(named=True):
                where = f"{table} {[row[k] for k in keys]} {column}"
                (structural if is_exact else answers).append(
                    f"{where}: {row[column]!r} != golden {row[column + '__golden']!r}")
    return structural, answers, compared
