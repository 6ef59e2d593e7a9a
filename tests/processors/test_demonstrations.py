"""Few-shot demonstrations: the nearest labelled training examples, shown answered before the document."""

import json

from processors.datasets import LabelledExample
from processors.demonstrations import SHOT_CHARS, STORED_CHARS, DemonstrationIndex, read_examples, write_demonstrations
from processors.tasks import extract, label
from schemas.config import FieldSpec, LabelTask

EXAMPLES = [
    LabelledExample("a", "I want a refund for order 55501, it broke", "tickets", {"category": "REFUND"},
                    {"order_id": "55501"}, fields_complete=True),
    LabelledExample("b", "Where is my parcel? The delivery is late", "tickets", {"category": "DELIVERY"}, {},
                    fields_complete=True),
    LabelledExample("c", "Please refund the money for my broken order", "tickets", {"category": "REFUND"}),
    LabelledExample("d", "Invoice 42183017 total $4.11", "pdf", {}, {"invoice_number": "42183017"}),
    LabelledExample("e", "x" * 3000, "tickets", {"sentiment": "neutral"}),
]


def _index(tmp_path) -> DemonstrationIndex:
    path = write_demonstrations(EXAMPLES, tmp_path / "demonstrations.jsonl",
                                {"tickets": ["order_id"], "pdf": ["invoice_number"]})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["fields"] == {"order_id": "55501"} and rows[1]["fields"] == {"order_id": None}  # known absent
    assert "order_id" not in rows[2]["fields"]  # not known: not a field demonstration
    assert max(len(r["text"]) for r in rows) == STORED_CHARS  # stored long enough to rehearse; shown shorter
    return DemonstrationIndex.load(path)


def test_the_nearest_examples_labelled_for_the_item_and_source_come_last(tmp_path):
    index = _index(tmp_path)
    shots = index.nearest("refund my order please", "category", "tickets", 2)
    assert [s.labels["category"] for s in shots] == ["REFUND", "REFUND"]
    assert shots[-1].text.startswith("Please refund")  # the most similar sits next to the document
    # only the examples whose order_id is known (present or absent), the most similar last
    assert [s.text for s in index.nearest("parcel late", "field:order_id", "tickets", 5)] == [
        EXAMPLES[0].text, EXAMPLES[1].text]
    assert index.nearest("invoice", "field:invoice_number", "pdf", 3)[0].fields["invoice_number"] == "42183017"
    assert index.nearest("refund", "category", "pdf", 3) == []  # no pdf example has a category
    assert index.nearest("refund", "category", "tickets", 0) == []
    assert len(index.nearest("x x", "sentiment", "tickets", 1)[0].text) == SHOT_CHARS  # a shot stays short


def test_stored_examples_read_back_as_labelled_examples_with_only_their_known_fields(tmp_path):
    path = write_demonstrations(EXAMPLES, tmp_path / "heldout.jsonl", {"tickets": ["order_id"]}, limit=None)
    back = read_examples(path)
    assert [ex.labels for ex in back] == [ex.labels for ex in EXAMPLES if ex.labels]  # all, in order
    assert back[0].field_value("order_id") == (True, "55501") and back[1].field_value("order_id") == (True, None)
    assert back[2].field_value("order_id") == (False, None)  # never known: neither trained nor scored
    assert back[0].example_id == read_examples(path)[0].example_id != back[1].example_id  # stable, by text
    assert len(write_demonstrations(EXAMPLES, tmp_path / "two.jsonl", limit=2).read_text().splitlines()) == 2


def test_shots_are_answered_turns_before_the_document_and_absent_means_no_change():
    task = LabelTask(name="category", labels=["REFUND", "DELIVERY"], question="Which topic?")
    plain = label.build_prompt(task, "chatml", "tickets", "my order")
    assert label.build_prompt(task, "chatml", "tickets", "my order", []) == plain
    shot = label.build_prompt(task, "chatml", "tickets", "my order", [("refund now", "REFUND")])
    assert shot.endswith(plain.split("<|im_end|>\n", 1)[1])  # the document's turn is unchanged, last
    assert "refund now" in shot and "<|im_start|>assistant\nrefund<|im_end|>" in shot.lower()
    base = label.build_prompt(task, "base", "tickets", "my order", [("refund now", "REFUND")])
    assert base.endswith(label.build_prompt(task, "base", "tickets", "my order")) and "answer: refund" in base.lower()
    spec = FieldSpec(name="order_id", type="id")
    field = extract.build_prompt([spec], spec, "chatml", "tickets", "order 77123", [("order 55501", "55501"),
                                                                                    ("late parcel", None)])
    assert 'JSON: {"order_id": "55501"}<|im_end|>' in field and 'JSON: {"order_id": null}<|im_end|>' in field
    assert field.endswith('<|im_start|>assistant\nJSON: {"order_id":')
