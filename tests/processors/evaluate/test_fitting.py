"""Calibration and thresholds fitted on a real evaluation's outcomes."""

import polars as pl
import pytest

from processors import calibration as cal
from processors.evaluate import choose_thresholds
from processors.evaluate.fitting import fit_rows, judged_rows, linear_threshold
from processors.routing import FIELDS_KEY


@pytest.mark.slow
def test_calibration_and_thresholds_from_the_evaluation(evaluation):
    # Fitted for every tier and group; kept only where it lowers held-out ECE (else a note says so).
    assert {"small:fields", "large:fields", "small:category", "large:category"} <= set(
        evaluation.summary.calibration)
    for key, c in evaluation.calibration.items():
        tier, task = key.split(":")
        assert tier in ("small", "large") and c.method == ("isotonic" if task == FIELDS_KEY else "temperature")
    assert set(evaluation.thresholds) >= {"category", "intent", FIELDS_KEY}
    o = fit_rows(evaluation.outcomes)  # chosen on the fit half only
    assert set(evaluation.outcomes["split"].unique()) <= {"fit", "judge", "both"}
    for key, point in evaluation.operating_points.items():
        rows = o.filter(pl.col("kind") == "field") if key == FIELDS_KEY else o.filter(pl.col("item") == key)
        invalid = float((~rows["small_valid"]).mean())
        assert point.escalation_rate <= max(cal.MAX_ESCALATION, invalid) + 1e-9, key  # the default budget
        assert point.evidence, key
        if evaluation.thresholds[key].small == 0 and point.unsure_items:  # 0 only with evidence
            assert point.unsure_large_right < point.unsure_small_right, key
    thresholds, points = choose_thresholds(evaluation, target_escalation=0.5)
    for key, p in points.items():
        rows = o.filter(pl.col("kind") == "field") if key == FIELDS_KEY else o.filter(pl.col("item") == key)
        invalid = float((~rows["small_valid"]).mean())  # invalid answers escalate at any threshold
        assert p.escalation_rate <= max(0.5, invalid) + 1e-9, key
    assert set(thresholds) == set(evaluation.thresholds)
    ece = evaluation.summary.calibration["small:fields"]
    assert 0.0 <= ece.ece_before <= 1.0
    raw = judged_rows(evaluation.outcomes).filter(pl.col("kind") == "field")
    assert ece.ece_before == pytest.approx(cal.ece(raw["small_conf"].to_list(), raw["small_correct"].to_list()))


def _field_rows(source: str, n: int, small_right, large_right) -> list[dict]:
    """n field values of one source, confidences spread over 0-1; each tier right where its rule says."""
    rows = []
    for i in range(n):
        conf = i / n
        rows.append({"example_id": f"{source}{i}", "source": source, "kind": "field", "item": "order_id",
                     "field_type": "id", "gold": "A1", "split": "both",
                     "small_pred": "A1" if small_right(conf) else "B2", "small_conf": conf, "small_valid": True,
                     "small_correct": small_right(conf),
                     "large_pred": "A1" if large_right(conf) else "C3", "large_conf": 0.9, "large_valid": True,
                     "large_correct": large_right(conf)})
    return rows


def test_each_source_s_fields_get_their_own_thresholds_when_both_have_enough_rows(config):
    from processors.evaluate import OUTCOME_SCHEMA, Evaluation
    from processors.evaluate.fitting import MIN_SOURCE_FIELD_ROWS

    # tickets: the small tier is wrong below 0.5 and the large tier right; PDFs: the small tier is always right
    # and the large tier always wrong, so escalating a PDF value on confidence buys nothing
    tickets = _field_rows("tickets", 100, lambda c: c >= 0.5, lambda c: True)
    pdf = _field_rows("pdf", 100, lambda c: True, lambda c: False)
    ev = Evaluation(pl.DataFrame(tickets + pdf, schema=OUTCOME_SCHEMA), config, ("small", "large"), {}, 200)
    thresholds, points = choose_thresholds(ev, {})
    assert set(thresholds) == {FIELDS_KEY, "fields:tickets", "fields:pdf"}
    assert thresholds["fields:pdf"].small == 0 and points["fields:pdf"].unsure_large_right == 0  # with evidence
    assert thresholds["fields:tickets"].small > 0 and points["fields:tickets"].escalation_rate > 0
    # one source alone, or a source with too few values: the shared thresholds only
    alone = Evaluation(pl.DataFrame(tickets, schema=OUTCOME_SCHEMA), config, ("small", "large"), {}, 100)
    assert set(choose_thresholds(alone, {})[0]) == {FIELDS_KEY}
    few = pdf[:MIN_SOURCE_FIELD_ROWS - 1]
    fewer = Evaluation(pl.DataFrame(tickets + few, schema=OUTCOME_SCHEMA), config, ("small", "large"), {}, 139)
    assert set(choose_thresholds(fewer, {})[0]) == {FIELDS_KEY}


def test_each_source_s_fields_are_calibrated_on_their_own_and_routed_in_that_space(config):
    from processors.evaluate import OUTCOME_SCHEMA, Evaluation, fit_calibration
    from processors.evaluate.cascade import prediction
    from processors.evaluate.evaluation import TierRun

    # tickets: the small tier is right from 0.5 up; PDFs: right only from 0.9 up, so a PDF value at 0.7 is
    # almost always wrong while a ticket's is right. One map for both reads 0.7 as a coin toss.
    tickets = _field_rows("tickets", 100, lambda c: c >= 0.5, lambda c: True)
    pdf = _field_rows("pdf", 100, lambda c: c >= 0.9, lambda c: True)
    runs = {t: TierRun(t, "stored", 200, 10.0, 0.0, 1000) for t in ("small", "large")}
    ev = Evaluation(pl.DataFrame(tickets + pdf, schema=OUTCOME_SCHEMA), config, ("small", "large"), runs, 200)
    fitted = fit_calibration(ev)
    assert {"small:fields", "small:fields:pdf", "small:fields:tickets"} <= set(fitted)
    assert cal.apply_confidence(0.7, fitted["small:fields:pdf"]) < 0.2
    assert cal.apply_confidence(0.7, fitted["small:fields:tickets"]) > 0.8
    assert 0.3 < cal.apply_confidence(0.7, fitted["small:fields"]) < 0.7
    # the cascade (as the nightly tiers) calibrates each row by its source's map
    row = next(r for r in ev.outcomes.iter_rows(named=True) if r["source"] == "pdf" and r["small_conf"] == 0.7)
    assert prediction(row, "small", fitted).confidence < 0.2
    # each source's thresholds live in its own calibrated space: with the budget to (no tie within the default
    # 15 %: the PDFs' map is flat below 0.9), the PDFs' values below 0.9 escalate and only they
    thresholds, _ = choose_thresholds(ev, fitted, target_escalation=0.95)
    below = [r for r in ev.outcomes.iter_rows(named=True) if r["source"] == "pdf"
             and prediction(r, "small", fitted).confidence < thresholds["fields:pdf"].small]
    assert len(below) == 90 and not any(r["small_correct"] for r in below)
    # the report's calibration table has a row per source's map
    from processors.evaluate.summarize import summarize

    ev.calibration, (ev.thresholds, ev.operating_points) = fitted, choose_thresholds(ev, fitted)
    table = summarize(ev, config).calibration
    assert table["small:fields:pdf"].n == 100 and table["small:fields"].n == 200
    assert table["small:fields:pdf"].ece_after < table["small:fields:pdf"].ece_before
    # a source with no map of its own shares the fields' map; a stored 'none' is its own (no calibration)
    assert cal.field_calibration(fitted, "small", "email") == fitted["small:fields"]
    none = {**fitted, "small:fields:pdf": type(fitted["small:fields"])()}
    assert cal.field_calibration(none, "small", "pdf").method == "none"
    assert cal.field_calibration(none, "small", None) == fitted["small:fields"]


def test_tier0_is_kept_only_where_quality_holds():
    # the highest coverage at which the cascade with tier 0 is as good as without it
    conf = [0.99, 0.97, 0.95, 0.6, 0.55]
    threshold, share, with_t0, without = linear_threshold(conf, [True, True, True, False, False],
                                                          [True, True, False, True, True])
    assert threshold == 0.6 and share == 0.8 and with_t0 >= without  # one gained, one lost: equal
    # tier 0 wrong where the cascade is right: dropped
    assert linear_threshold([0.99, 0.99], [False, False], [True, True])[0] is None
    # tier 0 at least as good as the cascade on every item: it carries the whole task (threshold 0)
    assert linear_threshold([0.2, 0.3, 0.9], [True, True, True], [False, True, True])[:2] == (0.0, 1.0)


def _sentiment_rows(n: int) -> list[dict]:
    """n sentiment items: the small tier right on 80 %, sure of itself; tier 0 sure on every fourth and then
    wrong (a domain its TF-IDF never saw), unsure and right on the rest."""
    rows = []
    for i in range(n):
        small_right, sure_tier0 = i % 5 != 0, i % 4 == 0
        rows.append({"example_id": f"s{i}", "source": "tickets", "kind": "label", "item": "sentiment",
                     "gold": "negative", "split": "both",
                     "small_pred": "negative" if small_right else "neutral", "small_conf": 0.95, "small_valid": True,
                     "small_correct": small_right, "large_pred": "negative", "large_conf": 0.9,
                     "large_valid": True, "large_correct": True,
                     "linear_pred": "positive" if sure_tier0 else "negative",
                     "linear_conf": 0.9 if sure_tier0 else 0.55, "linear_correct": not sure_tier0})
    return rows


def test_tier0_s_threshold_is_chosen_again_on_the_evaluated_data(config):
    """A version's tier 0 was judged on its own held-out data; on a team's data that costs quality it decides
    nothing, and where it is right it keeps deciding. Fewer than MIN_FIT_ITEMS items: left as it is."""
    from processors.evaluate import OUTCOME_SCHEMA, Evaluation
    from processors.evaluate.fitting import MIN_FIT_ITEMS, TIER0_DECIDES_NOTHING, choose_tier0_thresholds
    from schemas.config import LinearTier, Thresholds

    cfg = config.model_copy(deep=True)
    cfg.linear = {"sentiment": LinearTier(path="linear-sentiment.json", threshold=0.8)}
    wrong = Evaluation(pl.DataFrame(_sentiment_rows(80), schema=OUTCOME_SCHEMA), cfg, ("small", "large"), {}, 80,
                       thresholds={"sentiment": Thresholds(small=0.5, large=0.5)})
    assert choose_tier0_thresholds(wrong) == {"sentiment": TIER0_DECIDES_NOTHING}
    # tier 0 right wherever it is sure: it takes those items at no cost
    right = [{**r, "linear_correct": True, "linear_pred": "negative"} for r in _sentiment_rows(80)]
    ev = Evaluation(pl.DataFrame(right, schema=OUTCOME_SCHEMA), cfg, ("small", "large"), {}, 80,
                    thresholds={"sentiment": Thresholds(small=0.5, large=0.5)})
    assert choose_tier0_thresholds(ev) == {"sentiment": 0.0}  # right on every item: it decides them all
    few = Evaluation(pl.DataFrame(_sentiment_rows(MIN_FIT_ITEMS - 1), schema=OUTCOME_SCHEMA), cfg,
                     ("small", "large"), {}, MIN_FIT_ITEMS - 1, thresholds={"sentiment": Thresholds(small=0.5)})
    assert choose_tier0_thresholds(few) == {}


def test_tier0_is_chosen_on_the_fit_rows_and_measured_on_the_judged_ones():
    """fit_tier0 is the one rule evaluate and fine-tuning share: a tier 0 that looks free on the fit half is
    chosen there, and what it costs on the other half is what its figures say."""
    from processors.evaluate.fitting import MIN_FIT_ITEMS, fit_tier0

    def rows(n: int, split: str, tier0_right: bool) -> list[dict]:
        return [{"example_id": f"{split}{i}", "split": split, "linear_conf": 0.95,
                 "linear_correct": tier0_right, "cascade_correct": True} for i in range(n)]
    frame = pl.DataFrame(rows(MIN_FIT_ITEMS, "fit", True) + rows(20, "judge", False))
    fitted = fit_tier0(frame)
    assert fitted.threshold == 0.0 and fitted.fit_items == MIN_FIT_ITEMS and fitted.judged_items == 20
    # judged: tier 0 takes every item and is wrong on each, where the cascade alone was right on each
    assert fitted.share == 1.0 and fitted.quality_with == 0.0 and fitted.quality_without == 1.0
    assert fitted.accuracy == 0.0
    # wrong on the fit half: dropped, and the judged figures are the cascade's own
    dropped = fit_tier0(pl.DataFrame(rows(MIN_FIT_ITEMS, "fit", False) + rows(20, "judge", True)))
    assert dropped.threshold is None and dropped.share == 0.0 and dropped.quality_with == 1.0
    # too few fit rows to choose on
    assert fit_tier0(pl.DataFrame(rows(MIN_FIT_ITEMS - 1, "fit", True) + rows(50, "judge", True))) is None
