"""The cold benchmark says who decided each item, read back from the run's own labels and fields tables."""

from __future__ import annotations

import polars as pl

from bench.cold import DATE, decided_by_item


def test_who_decided_each_item_is_counted_from_the_partitioned_tables(tmp_path):
    for table, item, rows in (
        ("labels", "task", [("sentiment", "small"), ("sentiment", "large"), ("sentiment", "large"),
                            ("category", "linear")]),
        ("fields", "field", [("order_id", "review"), ("order_id", "small")]),
    ):
        for part, half in enumerate((rows[::2], rows[1::2])):  # two partitions: both are read
            folder = tmp_path / table / f"run_date={DATE}" / f"source=s{part}"
            folder.mkdir(parents=True)
            pl.DataFrame({item: [r[0] for r in half], "decided_by": [r[1] for r in half],
                          "doc_id": [f"d{i}" for i in range(len(half))]}).write_parquet(folder / "part-0.parquet")
    assert decided_by_item(str(tmp_path)) == {
        "labels:category": {"linear": 1}, "labels:sentiment": {"large": 2, "small": 1},
        "fields:order_id": {"review": 1, "small": 1}}
    assert decided_by_item(str(tmp_path / "nothing")) == {}
