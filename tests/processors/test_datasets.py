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


def _two_classes(common: int, rare: int) -> list[LabelledExample]:
    labels = ["common"] * common + ["rare"] * rare
    return [LabelledExample(str(i), f"t{i}", labels={"k": label}) for i, label in enumerate(labels)]


def test_a_stratified_sample_keeps_the_class_priors():
    examples = _two_classes(90, 10)
    for seed in range(5):
        picked = sample(examples, 20, seed=seed, stratify="k")
        assert len(picked) == 20
        assert sum(ex.labels["k"] == "rare" for ex in picked) == 2  # 90/10 stays 18/2, not 10/10
        assert len({ex.example_id for ex in picked}) == 20
        order = [examples.index(ex) for ex in picked]
        assert order == sorted(order)  # in the data's own order
    three = [LabelledExample(str(i), f"t{i}", labels={"k": "abc"[i % 3]}) for i in range(100)]  # 34/33/33
    for n in (1, 2, 7, 10, 50, 99):
        picked = sample(three, n, seed=3, stratify="k")
        counts = [sum(ex.labels["k"] == k for ex in picked) for k in "abc"]
        assert sum(counts) == n  # exactly n, by largest remainder
        assert all(abs(c - n * share) < 1 for c, share in zip(counts, (0.34, 0.33, 0.33), strict=True))
    rare = sample(_two_classes(97, 3), 6, seed=1, stratify="k")
    assert sum(ex.labels["k"] == "rare" for ex in rare) == 0  # quota 0.18: priors win, no seat forced


def test_a_sample_is_reproducible_per_seed():
    examples = _two_classes(90, 10)
    for stratify in ("k", None):
        ids = [ex.example_id for ex in sample(examples, 20, seed=7, stratify=stratify)]
        assert ids == [ex.example_id for ex in sample(examples, 20, seed=7, stratify=stratify)]
        assert ids != [ex.example_id for ex in sample(examples, 20, seed=8, stratify=stratify)]
    unlabelled = [LabelledExample(f"u{i}", f"u{i}") for i in range(10)]
    assert len(sample(unlabelled + _two_classes(10, 10), 6, stratify="k")) == 6  # no label: one more group
    assert sample(examples, None) == examples and sample(examples, 500, stratify="k") == examples


def test_split_is_stable():
    examples = _two_classes(97, 3)
    train, held = split(examples, 0.2)
    train2, held2 = split(examples[::-1], 0.2)
    assert {e.example_id for e in held} == {e.example_id for e in held2}  # by id, not by position
    assert 5 <= len(held) <= 40 and len(train) + len(held) == 100
