"""Labelled-example loading: the documented format and the adapters for the public sets."""

from __future__ import annotations

import json

import pytest

from processors.datasets import (
    DatasetError,
    LabelledExample,
    detect_format,
    label_sets,
    load_examples,
    sample,
    split,
)
from tests.conftest import SHARED_DATA


def test_public_sets_load_through_their_adapters():
    bitext = load_examples(SHARED_DATA / "tickets/bitext/validation.csv")
    assert len(bitext) == 810
    assert set(label_sets(bitext)) == {"category", "intent"}
    assert len(label_sets(bitext)["intent"]) == 27
    with_order = next(ex for ex in bitext if "order_id" in ex.fields)
    assert with_order.fields["order_id"] in with_order.text
    assert with_order.field_value("invoice_id") == (True, None)  # one entity annotated: others are absent

    airline = load_examples(SHARED_DATA / "sentiment/airline_dev.csv")
    assert detect_format(SHARED_DATA / "sentiment/airline_dev.csv") == "airline"
    assert set(label_sets(airline)["sentiment"]) == {"negative", "neutral", "positive"}

    invoices = load_examples(SHARED_DATA / "invoices/invoice2data")
    oyo = next(ex for ex in invoices if ex.example_id == "oyo.pdf")
    assert oyo.source == "pdf" and oyo.fields["invoice_number"] == "IBZY2087"
    assert oyo.field_value("person_name") == (False, None)  # not annotated: unknown, not absent


def test_generic_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("id,text,urgency,field.order_id\n"
                        "a,Where is order 123?,high,123\n"
                        "b,Thanks a lot,low,\n"
                        "c,,high,\n", encoding="utf-8")  # no text: skipped
    examples = load_examples(csv_path)
    assert [ex.example_id for ex in examples] == ["a", "b"]
    assert examples[0].labels == {"urgency": "high"} and examples[0].fields == {"order_id": "123"}
    assert examples[1].fields == {"order_id": None}

    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(json.dumps({"text": "Invoice 77 please", "category": "INVOICE", "fields": {"invoice_id": "77"}})
                     + "\n{not json\n", encoding="utf-8")
    (ex,) = load_examples(jsonl)
    assert ex.labels == {"category": "INVOICE"} and ex.fields == {"invoice_id": "77"}


def test_unusable_files_raise_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("body,label\nhello,x\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no 'text' column"):
        load_examples(bad)
    with pytest.raises(DatasetError, match="no such file"):
        load_examples(tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="unknown format"):
        load_examples(bad, format="nope")


def test_sample_is_stratified_and_split_is_stable():
    examples = [LabelledExample(str(i), f"t{i}", labels={"k": "rare" if i < 3 else "common"}) for i in range(100)]
    picked = sample(examples, 6, seed=1, stratify="k")
    assert sum(ex.labels["k"] == "rare" for ex in picked) == 3  # round-robin keeps the rare label
    train, held = split(examples, 0.2)
    train2, held2 = split(examples[::-1], 0.2)
    assert {e.example_id for e in held} == {e.example_id for e in held2}  # by id, not by position
    assert 5 <= len(held) <= 40 and len(train) + len(held) == 100
