"""The synthetic invoices: real PDFs whose fields the product reads back, grounded among values that are not them."""

from __future__ import annotations

import json

import pytest

from bench.make_invoices import LAYOUTS, write_invoices
from processors.datasets import load_examples
from processors.tasks.candidates import find_candidates
from processors.tasks.normalize import normalize

TYPES = {"invoice_number": "id", "date": "date", "total_amount": "amount", "currency": "currency"}


def _value(field_type: str, text: str) -> str | None:
    return text.lstrip("#") if field_type == "id" else normalize(field_type, text)[0]


def test_every_layout_writes_pdfs_whose_fields_are_among_the_candidates_with_decoys(tmp_path):
    written = write_invoices(tmp_path, list(LAYOUTS), per_layout=2, seed=0)
    assert len(written) == 2 * len(LAYOUTS)
    examples = load_examples(tmp_path)  # as `sluicegate finetune --train DIR` reads them
    assert sorted(ex.example_id for ex in examples) == sorted(p.name for p in written)
    for ex in examples:
        expected = json.loads((tmp_path / ex.example_id).with_suffix(".json").read_text())[0]
        assert ex.source == "pdf" and ex.fields["invoice_number"] == expected["invoice_number"], ex.example_id
        assert _value("amount", ex.fields["total_amount"]) == f"{expected['amount']:.2f}"
        for name, field_type in TYPES.items():
            found = {_value(field_type, c.text) for c in find_candidates(field_type, ex.text)}
            assert _value(field_type, ex.fields[name]) in found, (ex.example_id, name, ex.fields[name], found)
        # values of the same type that are not the answer stand beside it: the customer and order numbers,
        # the subtotal where tax is charged, and the amount of every line
        ids = {_value("id", c.text) for c in find_candidates("id", ex.text)}
        assert {expected["customer_number"], expected["order_number"]} & ids, (ex.example_id, ids)  # as printed
        amounts = {_value("amount", c.text) for c in find_candidates("amount", ex.text)}
        letter = ex.example_id.startswith("letter")  # it lists unit prices, not line amounts
        decoys = set() if letter else {f"{float(line['price_unit']) * line['quantity']:.2f}"
                                       for line in expected["lines"]}
        if expected["amount_untaxed"] != expected["amount"]:
            decoys.add(f"{expected['amount_untaxed']:.2f}")
        assert decoys <= amounts, (ex.example_id, decoys - amounts)


def test_the_same_seed_writes_the_same_invoices_and_a_layout_does_not_depend_on_the_others(tmp_path):
    one = write_invoices(tmp_path / "a", ["letter"], per_layout=2, seed=3)
    both = write_invoices(tmp_path / "b", ["classic", "letter"], per_layout=2, seed=3)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in both if p.name.startswith("letter")]
    other = write_invoices(tmp_path / "c", ["letter"], per_layout=2, seed=4)
    assert one[0].with_suffix(".json").read_text() != other[0].with_suffix(".json").read_text()
    with pytest.raises(ValueError, match="unknown layouts"):
        write_invoices(tmp_path / "d", ["classic", "fax"], per_layout=1)
