"""A label task's own scorer: accuracy and macro-F1 on gold labels."""

import math

import pytest

from processors.tasks.label import label_metrics


def test_accuracy_and_macro_f1():
    m = label_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m.accuracy == 0.75 and m.quality == m.accuracy
    # a: precision 1, recall 1/2 -> F1 2/3; b: precision 2/3, recall 1 -> F1 4/5
    assert m.macro_f1 == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_an_invalid_answer_is_wrong_but_no_label_of_its_own():
    m = label_metrics(["a", "b"], ["a", None])
    assert m.accuracy == 0.5
    assert m.macro_f1 == pytest.approx((1 + 0) / 2)  # a: F1 1; b: never predicted (the invalid answer is no label)


def test_a_predicted_label_outside_gold_counts_in_macro_f1():
    assert label_metrics(["a", "a"], ["a", "c"]).macro_f1 == pytest.approx((2 / 3 + 0) / 2)


def test_nothing_to_score():
    m = label_metrics([], [])
    assert math.isnan(m.accuracy) and math.isnan(m.macro_f1)


def test_each_gold_label_has_its_items_and_recall():
    m = label_metrics(["a", "a", "a", "b", "c"], ["a", "a", "b", "b", None])
    assert m.label_support == {"a": 3, "b": 1, "c": 1}
    # a predicted label no gold has ("d" would be one) gets no recall: recall is over gold items
    assert m.label_recall == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.0})
    assert label_metrics([], []).label_recall == {}
