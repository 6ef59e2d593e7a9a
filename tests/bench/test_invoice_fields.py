"""The invoice-fields benchmark holds the real invoices out by issuer: no file and no shop's template is on both
sides."""

from __future__ import annotations

from bench.invoice_fields import REAL, split_real
from processors.datasets import load_examples


def test_real_invoices_are_split_by_issuer_into_two_readable_folders(tmp_path):
    train, held = split_real(REAL, tmp_path / "train", tmp_path / "held")
    assert train and held and not set(train) & set(held)
    assert {"coolblue1.pdf", "coolblue2.pdf"} <= set(train) or {"coolblue1.pdf", "coolblue2.pdf"} <= set(held)
    assert len(train) + len(held) == len(list(REAL.glob("*.json")))
    # each side is an invoice2data folder the product reads, with exactly its own files
    assert sorted(ex.example_id for ex in load_examples(tmp_path / "train")) == sorted(train)
    assert sorted(ex.example_id for ex in load_examples(tmp_path / "held")) == sorted(held)
