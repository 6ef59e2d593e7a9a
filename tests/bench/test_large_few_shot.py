"""The few-shot bench's sentiment rows are the version's judged ones, and its cascade figure routes as stored."""

from __future__ import annotations

import polars as pl

from bench.large_few_shot import cascade_accuracy, sentiment_judged
from schemas.config import load_config
from schemas.versions import apply_version, resolve
from tests.conftest import FIXTURES


def test_the_judged_sentiment_rows_are_rebuilt_by_id_with_their_gold_labels():
    config = load_config(FIXTURES / "sluicegate.toml")
    version, folder = resolve(config.models.registry, None)
    examples, rows = sentiment_judged(apply_version(config, version, folder), version, folder)
    gold = dict(zip(rows["example_id"].to_list(), rows["gold"].to_list(), strict=True))
    assert len(examples) == len(gold) == rows.height > 200  # every judged row, once
    assert all(ex.labels["sentiment"] == gold[ex.example_id] for ex in examples)
    assert any(ex.example_id.startswith("airline_unused:") for ex in examples)
    assert any(":" not in ex.example_id for ex in examples)  # the version's held-out rows too


def test_the_cascade_takes_the_large_answer_exactly_where_the_stored_routing_escalated():
    judged = pl.DataFrame({"example_id": ["a", "b", "c", "d"], "decided_by": ["small", "large", "review", "small"],
                           "small_correct": [True, False, False, False]})
    assert cascade_accuracy(judged, {"a": False, "b": True, "c": True, "d": True}) == (0.75, 0.5)
    assert cascade_accuracy(judged, {"a": True, "b": False, "c": False, "d": True}) == (0.25, 0.5)
