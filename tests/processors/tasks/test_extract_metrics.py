"""The extract task's scorer: values compared after normalisation; P/R/F1 over present values, absent accuracy."""

import math

import pytest

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


def test_precision_recall_f1_over_present_values_and_absent_accuracy():
    gold = ["A1", None, "B2", "C3", None]
    pred = ["A1", None, "XX", None, "ZZ"]
    correct = [field_match("id", g, p) for g, p in zip(gold, pred, strict=True)]
    m = field_metrics(gold, pred, correct)
    assert m.precision == 1 / 3  # of A1, XX and ZZ given, A1 matches
    assert m.recall == 1 / 3  # of A1, B2, C3, A1 found
    assert m.f1 == pytest.approx(1 / 3) and m.quality == m.f1
    assert m.absent_accuracy == 0.5  # of the two absent golds, one answered absent
    none = field_metrics([None], [" "], [True])
    assert math.isnan(none.precision) and math.isnan(none.recall) and math.isnan(none.f1)
    assert none.absent_accuracy == 1.0


def test_answering_null_everywhere_scores_zero_f1_not_high_exact_match():
    # 9 of 10 fields absent: "null" everywhere would be 90 % exact match; F1 says it found nothing.
    gold = [None] * 9 + ["370795561790"]
    pred = [None] * 10
    m = field_metrics(gold, pred, [field_match("id", g, p) for g, p in zip(gold, pred, strict=True)])
    assert m.f1 == 0.0 and m.recall == 0.0 and math.isnan(m.precision) and m.absent_accuracy == 1.0
