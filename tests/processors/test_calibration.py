"""Calibration and threshold choice: pure functions on synthetic data with a known answer."""

import math

import numpy as np
import pytest

from processors import calibration as cal
from processors.routing import route
from schemas.config import TaskCalibration, Thresholds
from schemas.records import FieldPrediction, LabelPrediction

LABELS = ["a", "b", "c", "d"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int, temperature: float, seed: int = 0) -> tuple[list[dict[str, float]], list[str]]:
    """Gold drawn from softmax(z); the model reports softmax(z * T): T > 1 is overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, len(LABELS)))
    truth = _softmax(z)
    gold = [LABELS[rng.choice(len(LABELS), p=p)] for p in truth]
    reported = _softmax(z * temperature)
    return [dict(zip(LABELS, map(float, p), strict=True)) for p in reported], gold


def _conf_correct(dists, gold):
    conf = [max(d.values()) for d in dists]
    correct = [max(d, key=d.get) == g for d, g in zip(dists, gold, strict=True)]
    return conf, correct


def test_temperature_fit_recovers_the_known_temperature():
    dists, gold = _overconfident(4000, temperature=2.5)
    fitted = cal.fit_temperature(dists, gold)
    assert fitted.method == "temperature"
    assert fitted.temperature == pytest.approx(2.5, rel=0.1)


def test_temperature_scaling_lowers_ece_and_keeps_the_label():
    dists, gold = _overconfident(3000, temperature=3.0, seed=1)
    fitted = cal.fit_temperature(dists, gold)
    scaled = [cal.apply_label(d, fitted) for d in dists]
    assert all(max(d, key=d.get) == max(s, key=s.get) for d, s in zip(dists, scaled, strict=True))
    assert all(math.isclose(sum(s.values()), 1.0) for s in scaled)
    before = cal.ece(*_conf_correct(dists, gold))
    after = cal.ece(*_conf_correct(scaled, gold))
    assert before > 0.1 and after < before / 3


def test_too_few_items_fit_nothing():
    dists, gold = _overconfident(5, temperature=2.0)
    assert cal.fit_temperature(dists, gold).method == "none"
    assert cal.fit_isotonic([0.5] * 5, [True] * 5).method == "none"


def test_isotonic_is_monotone_and_lowers_ece():
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 1, 2000)
    correct = rng.uniform(0, 1, 2000) < raw**3  # raw confidence overstates accuracy
    fitted = cal.fit_isotonic(raw, correct)
    assert fitted.method == "isotonic" and len(fitted.x) == len(fitted.y) >= 2
    grid = np.linspace(0, 1, 101)
    mapped = [cal.apply_confidence(float(g), fitted) for g in grid]
    assert all(b >= a for a, b in zip(mapped, mapped[1:], strict=False))
    assert all(0 < m < 1 for m in mapped)  # kept off 0 and 1
    calibrated = [cal.apply_confidence(float(r), fitted) for r in raw]
    assert cal.ece(calibrated, correct) < cal.ece(raw, correct) / 3


def test_predictions_are_calibrated_without_changing_answers():
    pred = LabelPrediction("t", "a", 0.9, {"a": 0.9, "b": 0.1}, "small")
    out = cal.calibrate_label(pred, TaskCalibration(method="temperature", temperature=2.0))
    assert out.label == "a" and out.confidence == pytest.approx(0.75)
    assert pred.confidence == 0.9  # the input is left alone
    invalid = LabelPrediction("t", None, 0.0, {}, "small", valid=False)
    assert cal.calibrate_label(invalid, TaskCalibration(method="temperature", temperature=2.0)) is invalid
    field = FieldPrediction("f", "x", "x", 0.8, None, 0, 1, True, "small")
    iso = TaskCalibration(method="isotonic", x=[0.0, 1.0], y=[0.1, 0.5])
    assert cal.calibrate_field(field, iso).confidence == pytest.approx(0.42)
    assert cal.calibrate_field(field, None) is field
    assert cal.calibrate_field(field, TaskCalibration()) is field


def test_ece_of_a_perfectly_calibrated_set_is_small():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0, 1, 20000)
    correct = rng.uniform(0, 1, 20000) < conf
    assert cal.ece(conf, correct) < 0.02
    assert cal.ece([1.0, 1.0], [False, False]) == pytest.approx(1.0)


def _outcomes():
    """20 items: the small tier is right above confidence 0.5 only; the large tier is right on 18."""
    small_conf = [i / 20 for i in range(20)]
    small_correct = [c >= 0.5 for c in small_conf]
    invalid = [False] * 20
    invalid[15] = True  # an invalid answer escalates whatever its confidence
    small_correct[15] = False
    large_correct = [True] * 20
    large_correct[0] = large_correct[19] = False
    large_conf = [0.9] * 20
    large_conf[0] = 0.2
    return small_conf, invalid, small_correct, large_correct, large_conf


def test_curve_runs_from_small_only_to_large_only():
    small_conf, invalid, small_correct, large_correct, _ = _outcomes()
    points = cal.cascade_curve(small_conf, invalid, small_correct, large_correct)
    assert points[0].escalation_rate == pytest.approx(1 / 20)  # the invalid one
    assert points[-1].escalation_rate == 1.0
    assert points[-1].quality == pytest.approx(points[-1].large_quality) == pytest.approx(0.9)
    assert [p.escalation_rate for p in points] == sorted(p.escalation_rate for p in points)


def test_threshold_for_a_target_quality():
    small_conf, invalid, small_correct, large_correct, large_conf = _outcomes()
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf,
                                             target_quality_gap=0.0)
    # Large-only quality is 0.9. Escalating the items below 0.45 (0.00 .. 0.40) and the invalid one
    # leaves two wrong answers (0.00: the large tier is wrong too; 0.45: the small tier is): 0.9.
    assert point.quality >= point.large_quality
    cheaper = [p for p in cal.cascade_curve(small_conf, invalid, small_correct, large_correct)
               if p.escalation_rate < point.escalation_rate]
    assert all(p.quality < p.large_quality for p in cheaper)
    assert thresholds.small == pytest.approx(0.425)  # between 0.40 and 0.45
    assert point.escalation_rate == pytest.approx(10 / 20) and point.quality == pytest.approx(0.9)
    assert thresholds.large <= 0.5 and point.review_rate == pytest.approx(1 / 20)  # large conf 0.2 on item 0


def test_threshold_for_a_target_escalation_rate():
    small_conf, invalid, small_correct, large_correct, large_conf = _outcomes()
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf,
                                             target_escalation=0.25)
    assert point.escalation_rate <= 0.25
    assert point.escalation_rate == pytest.approx(0.25)  # 4 lowest + the invalid one
    escalated = [inv or c < thresholds.small for c, inv in zip(small_conf, invalid, strict=True)]
    assert sum(escalated) == 5
    with pytest.raises(ValueError):
        cal.choose_threshold(small_conf, invalid, small_correct, large_correct, target_escalation=0.2,
                             target_quality_gap=0.01)


def test_review_threshold_caps_the_review_rate():
    assert cal.review_threshold([0.9, 0.8, 0.7], review_below=0.5) == 0.5
    many_unsure = [0.1, 0.2, 0.3, 0.4, 0.45, 0.9, 0.9, 0.9, 0.9, 0.9]
    t = cal.review_threshold(many_unsure, review_below=0.5, max_review_rate=0.2)
    assert sum(c < t for c in many_unsure) <= 2


def test_the_threshold_sweep_applies_the_routing_rule_to_a_nan_confidence():
    small_conf, invalid, small_correct, large_correct, _ = _outcomes()
    small_conf[3] = float("nan")  # a runtime's NaN log-probabilities: routing escalates it at any threshold
    points = cal.cascade_curve(small_conf, invalid, small_correct, large_correct)
    assert all(not math.isnan(p.threshold) for p in points)
    assert points[0].escalation_rate == pytest.approx(2 / 20)  # the invalid one and the NaN one
    assert route({"t": LabelPrediction("t", "a", float("nan"), {"a": 1.0}, "small")}, {},
                 {"t": Thresholds(small=0.0)}, "small").failed == ("t",)


def _twenty(small_right_on_unsure: int, large_right_on_unsure: int):
    """20 valid items; the 3 least sure (0.05, 0.10, 0.15) are the unsure slice of a 15 % budget."""
    small_conf = [0.05, 0.10, 0.15] + [0.5 + 0.02 * i for i in range(17)]
    small_correct = [i < small_right_on_unsure for i in range(3)] + [True] * 17
    large_correct = [i < large_right_on_unsure for i in range(3)] + [True] * 17
    return small_conf, [False] * 20, small_correct, large_correct, [0.9] * 20


def test_default_threshold_is_the_best_quality_within_the_escalation_budget():
    small_conf, invalid, small_correct, large_correct, large_conf = _twenty(0, 3)
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf)
    assert point.escalation_rate == pytest.approx(3 / 20) and point.escalation_rate <= cal.MAX_ESCALATION
    assert point.quality == 1.0 and 0.15 < thresholds.small < 0.5
    assert (point.unsure_items, point.unsure_small_right, point.unsure_large_right) == (3, 0, 3)


def test_threshold_zero_only_where_the_large_tier_is_worse_on_the_unsure_items():
    # The large tier is right on 1 of the 3 least-sure items, the small tier on 2: escalating loses.
    small_conf, invalid, small_correct, large_correct, large_conf = _twenty(2, 1)
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf)
    assert thresholds.small == 0.0 and point.escalation_rate == 0.0
    assert "threshold 0" in point.evidence and "right on 1" in point.evidence
    # Equally good there: no evidence for 0, so the unsure items go up (the cascade loses nothing).
    small_conf, invalid, small_correct, large_correct, large_conf = _twenty(2, 2)
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf)
    assert thresholds.small > 0.0 and point.escalation_rate == pytest.approx(3 / 20)
    assert point.quality == point.small_quality and "no evidence for threshold 0" in point.evidence


def test_field_thresholds_are_chosen_on_f1_not_on_matching_absent_values():
    # 10 fields, 2 present. The small tier answers null everywhere (8 of 10 "match"); the large tier
    # finds both values. Exact match would call escalation a wash; F1 goes from 0 to 1.
    present = [True, True] + [False] * 8
    small_given = [False] * 10
    small_correct = [not p for p in present]
    large_given = present
    large_correct = [True] * 10
    quality = cal.field_f1_quality(present, small_given, small_correct, large_given, large_correct)
    small_conf = [0.1, 0.2] + [0.9] * 8
    thresholds, point = cal.choose_threshold(small_conf, [False] * 10, small_correct, large_correct, [0.9] * 10,
                                             target_escalation=0.2, quality=quality)
    assert point.small_quality == 0.0 and point.quality == 1.0 and point.escalation_rate == pytest.approx(0.2)
    assert 0.2 < thresholds.small < 0.9


def _four_hundred(fixed: int, broken: int):
    """400 valid items, the small tier right on all but `fixed` of its 20 least sure; escalating those 20 fixes
    `fixed` and breaks `broken` (the large tier is wrong where the small tier is right on `broken` of them)."""
    small_conf = [0.01 * (i + 1) for i in range(20)] + [0.9] * 380
    small_correct = [i >= fixed for i in range(20)] + [True] * 380
    large_correct = [i < fixed or i >= fixed + broken for i in range(20)] + [True] * 380
    return small_conf, [False] * 400, small_correct, large_correct, [0.9] * 400


def test_a_gain_within_its_noise_does_not_escalate_where_the_large_tier_is_worse_on_the_unsure_items():
    # Escalating the 2 least-sure items fixes both: the best point, 2 items of 400 better (1.4 standard errors).
    small_conf, invalid, small_correct, large_correct, large_conf = _four_hundred(fixed=2, broken=0)
    large_correct[2:20] = [False] * 18  # and the large tier is wrong on the rest of the unsure slice
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf)
    assert thresholds.small == 0.0 and point.escalation_rate == 0.0
    assert "within 2 standard errors" in point.evidence
    # 12 fixed: far beyond the noise, the best point escalates
    small_conf, invalid, small_correct, large_correct, large_conf = _four_hundred(fixed=12, broken=0)
    large_correct[12:20] = [False] * 8
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf)
    assert point.escalation_rate == pytest.approx(12 / 400) and point.quality == 1.0


def test_a_small_gain_still_escalates_where_the_large_tier_is_at_least_as_good_on_the_unsure_items():
    # 3 fixed, 1 broken: not significant, but the large tier is right on 19 of the 20 least sure, the small on 17
    small_conf, invalid, small_correct, large_correct, large_conf = _four_hundred(fixed=3, broken=1)
    thresholds, point = cal.choose_threshold(small_conf, invalid, small_correct, large_correct, large_conf)
    assert thresholds.small > 0.0 and point.quality > point.small_quality
    assert "no evidence for threshold 0" in point.evidence


def test_the_paired_standard_error_of_accuracy_and_of_field_f1():
    s_ok = np.array([True] * 8 + [False] * 2)
    l_ok = np.array([True] * 10)
    accuracy = cal.Accuracy(s_ok, l_ok)
    up, none = np.array([False] * 8 + [True] * 2), np.zeros(10, dtype=bool)
    diff = np.array([0.0] * 8 + [1.0] * 2)  # per item: escalating changes two items from wrong to right
    assert cal.paired_standard_error(accuracy, up, none) == pytest.approx(diff.std(ddof=1) / math.sqrt(10))
    assert cal.paired_standard_error(accuracy, none, none) == 0.0
    # F1: the linearised per-item shares sum to nothing, and their paired spread is near a bootstrap's
    rng = np.random.default_rng(0)
    n = 300
    present = rng.random(n) < 0.4
    s_given, l_given = present & (rng.random(n) < 0.8), present | (rng.random(n) < 0.1)
    f1 = cal.field_f1_quality(present, s_given, rng.random(n) < 0.8, l_given, rng.random(n) < 0.9)
    up = rng.random(n) < 0.2
    assert abs(f1.influence(up).sum()) < 1e-9
    boot = []
    for _ in range(400):
        i = rng.integers(0, n, n)
        sub = cal.FieldF1(f1.present[i], f1.small_given[i], f1.small_hit[i], f1.large_given[i], f1.large_hit[i])
        boot.append(sub(up[i]) - sub(np.zeros(n, dtype=bool)))
    assert cal.paired_standard_error(f1, up, np.zeros(n, dtype=bool)) == pytest.approx(np.std(boot), rel=0.25)
