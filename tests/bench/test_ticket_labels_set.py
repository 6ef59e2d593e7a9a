"""The ticket label set: the fresh-value tickets plus every other validation ticket without a ticket field,
labels only, and never a training row."""

from __future__ import annotations

import csv

import pytest

from bench.fresh_ticket_values import main as fresh_main
from bench.ticket_labels_set import main
from processors.datasets import load_examples
from tests.bench.test_fresh_ticket_values import BITEXT


def test_fresh_tickets_plus_the_unused_validation_tickets_labels_only(tmp_path):
    fresh = tmp_path / "fresh.csv"
    assert fresh_main(["--data", str(BITEXT / "validation.csv"), "--exclude", str(BITEXT / "train.csv"),
                       "--out", str(fresh), "--absent", "0"]) == 0
    out = tmp_path / "labels.csv"
    assert main(["--fresh", str(fresh), "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "source", "category", "intent"]
    assert len(rows) == 810 and len({r["text"] for r in rows}) == 810
    fresh_texts = {e.text for e in load_examples(fresh)}
    assert sum(r["text"] in fresh_texts for r in rows) == len(fresh_texts) == 280
    examples = load_examples(out)  # read back as labels only: no field is scored
    assert all(set(e.labels) == {"category", "intent"} and not e.fields for e in examples)


def test_a_training_row_in_the_set_is_refused(tmp_path):
    fresh = tmp_path / "fresh.csv"
    assert fresh_main(["--data", str(BITEXT / "validation.csv"), "--exclude", str(BITEXT / "train.csv"),
                       "--out", str(fresh), "--absent", "0"]) == 0
    with pytest.raises(SystemExit, match="training split"):
        main(["--fresh", str(fresh), "--train", str(BITEXT / "validation.csv"), "--out", str(tmp_path / "x.csv")])
