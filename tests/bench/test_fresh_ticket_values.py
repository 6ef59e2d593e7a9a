"""Refilled bitext tickets: every ticket-field value is new, of the same shape, and where its offsets say."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from bench.fresh_ticket_values import FIELDS, TITLES, main, pool
from processors.datasets import load_examples

BITEXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "tickets" / "bitext"


def _shape(value: str) -> str:
    """Digits as 9 (leading zeros kept as 0), a title kept, any other word as 'w'."""
    if any(c.isdigit() for c in value):
        prefix = re.match(r"\D*", value).group()
        digits = value[len(prefix):]
        return prefix + "0" * (len(digits) - len(digits.lstrip("0"))) + "9" * len(digits.lstrip("0"))
    return " ".join(w if w in TITLES else "w" for w in value.split())


def test_validation_tickets_get_fresh_values_of_the_same_shape_that_no_training_row_holds(tmp_path):
    out = tmp_path / "fresh.csv"
    assert main(["--data", str(BITEXT / "validation.csv"), "--exclude", str(BITEXT / "train.csv"),
                 "--out", str(out), "--absent", "5"]) == 0
    with (BITEXT / "validation.csv").open(newline="", encoding="utf-8") as f:
        originals = list(csv.DictReader(f))
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    remembered = pool(BITEXT / "train.csv")

    refilled = [r for r in rows if r["entity_type"] in FIELDS]
    assert len(refilled) == sum(r["entity_type"] in FIELDS for r in originals) == 171
    assert sum(not r["entity_type"] for r in rows) == 5
    for row, original in zip(refilled, [r for r in originals if r["entity_type"] in FIELDS], strict=True):
        value = row["entity_value"]
        assert value not in remembered and not (set(value.split()) - set(TITLES)) & remembered
        assert row["utterance"][int(row["start_offset"]):int(row["end_offset"])] == value
        # the same words around a value of the same shape, with the same labels
        assert row["utterance"].replace(value, "<v>") == original["utterance"].replace(original["entity_value"], "<v>")
        assert _shape(value) == _shape(original["entity_value"]), (value, original["entity_value"])
        assert (row["intent"], row["category"]) == (original["intent"], original["category"])
    assert len({r["entity_value"] for r in refilled}) == len(refilled)  # each drawn once
    # `sluicegate evaluate --data` reads it as bitext, the fresh value as the field's expected answer
    examples = {ex.text: ex for ex in load_examples(out)}
    for row in refilled:
        assert examples[row["utterance"]].fields == {row["entity_type"]: row["entity_value"]}
