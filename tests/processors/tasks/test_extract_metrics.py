"""The extract task's own scorer: values compared after normalisation; exact match, precision, recall."""

import math

from processors.tasks.extract import comparable, field_match, field_metrics


def test_fields_match_after_normalisation():
    assert field_match("date", "2023-03-20", "March 20, 2023")
    assert field_match("amount", "279.84", "$279.84")
    assert field_match("amount", "1499", "1,499.00")
    assert field_match("currency", "USD", "$")
    assert field_match("id", "#37777", "37777")
    assert field_match("name", "Anna Freeman", "anna  freeman")
    assert field_match("id", None, None) and field_match("id", None, "  ")
    assert not field_match("amount", "279.84", "262.90")
    assert not field_match("id", "12345", None)


def test_comparable_tidies_what_does_not_normalise():
    assert comparable("string", "  Two   Words ") == "two words"
    assert comparable("date", "not a date") == "not a date"
    assert comparable("id", "") is None


def test_exact_match_precision_and_recall():
    gold = ["A1", None, "B2", "C3"]
    pred = ["A1", None, "XX", None]
    correct = [field_match("id", g, p) for g, p in zip(gold, pred, strict=True)]
    m = field_metrics(gold, pred, correct)
    assert m.exact_match == 0.5 and m.quality == m.exact_match  # A1, and absent = absent
    assert m.precision == 0.5  # of A1 and XX given, A1 matches
    assert m.recall == 1 / 3  # of A1, B2, C3, A1 found
    none = field_metrics([None], [" "], [True])
    assert none.exact_match == 1.0 and math.isnan(none.precision) and math.isnan(none.recall)
