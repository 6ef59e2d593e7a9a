"""Promotion and tier-0 decisions (pure)."""

from __future__ import annotations

import math

import polars as pl

from processors.datasets import LabelledExample
from processors.evaluate import ALL_FIELDS, ItemSummary, Summary, TierQuality
from processors.finetune.compare import (
    decide_promotion,
    flat_metrics,
    learning_curve_markdown,
    paired_comparison,
    quality_score,
    tier0_learning_curve,
)
from schemas.config import LabelTask


def _cmp(candidate: dict[str, float], promoted: dict[str, float] | None = None,
         noise: dict[str, float] | None = None) -> dict[str, float]:
    """paired_comparison's shape: '<key>.candidate', '<key>.promoted', '<key>.noise'."""
    return {**{f"{k}.candidate": v for k, v in candidate.items()},
            **{f"{k}.promoted": v for k, v in (promoted or {}).items()},
            **{f"{k}.noise": v for k, v in (noise or {}).items()}}


def test_promotion_needs_a_better_held_out_score():
    assert decide_promotion(_cmp({"category": 0.8}))[0]  # nothing promoted yet
    assert decide_promotion(_cmp({"category": 0.8}, {"category": 0.75}))[0]
    promoted, why = decide_promotion(_cmp({"category": 0.74}, {"category": 0.75}))
    assert not promoted and "0.740 <= promoted 0.750" in why
    assert not decide_promotion(_cmp({"category": 0.75}, {"category": 0.75}))[0]  # a tie keeps the running one
    assert not decide_promotion({})[0]
    assert decide_promotion(_cmp({"category": 0.8, "fields": 0.9}, {"category": 0.8, "fields": 0.85}))[0]


def test_a_new_label_set_must_not_cost_a_task_the_promoted_version_learned():
    before = {"category": 0.90, "intent": 0.73}
    # the case: a new 77-label task, trained on its own data, loses intent altogether
    promoted, why = decide_promotion(_cmp({"category": 0.92, "team": 0.32}, {"category": 0.90}),
                                     served=["category", "intent"])
    assert not promoted and "no held-out example labels intent" in why
    # judged on intent's held-out data too: worse by more than the tolerance is refused, naming the task
    promoted, why = decide_promotion(_cmp({"category": 0.95, "intent": 0.60, "team": 0.5}, before),
                                     served=["category", "intent"])
    assert not promoted and "intent 0.600 < promoted 0.730 - 0.020" in why and "category" not in why
    # within the tolerance, a task the promoted version cannot answer is worth promoting
    promoted, why = decide_promotion(_cmp({"category": 0.89, "intent": 0.72, "team": 0.5}, before),
                                     served=["category", "intent"])
    assert promoted and why.startswith("adds team")
    # nothing new and not better: the running version stays
    assert not decide_promotion(_cmp({"category": 0.89, "intent": 0.72}, before))[0]
    # a learned task the promoted version did not answer on these rows is no new task
    assert not decide_promotion(_cmp({"category": 0.89, "intent": 0.72}, {"category": 0.90}),
                                served=["category", "intent"])[0]


def _outcomes(preds: list[str | None], gold: list[str], item: str = "intent") -> pl.DataFrame:
    correct = [p == g for p, g in zip(preds, gold, strict=True)]
    return pl.DataFrame({"example_id": [str(i) for i in range(len(gold))], "kind": "label", "item": item,
                         "gold": gold, "small_pred": preds, "small_correct": correct, "split": "judge"})


def test_a_drop_within_the_comparisons_noise_is_no_regression():
    gold = ["a", "b", "c", "d"] * 10
    same = paired_comparison(_outcomes(gold, gold), _outcomes(gold, gold))
    assert same == {"intent.candidate": 1.0, "intent.promoted": 1.0, "intent.noise": 0.0}  # no noise
    flipped = [g if i % 5 else "a" for i, g in enumerate(gold)]  # 6 of 40 answers changed, all wrong now
    got = paired_comparison(_outcomes(flipped, gold), _outcomes(gold, gold))
    assert got["intent.candidate"] < got["intent.promoted"] == 1.0 and 0.01 < got["intent.noise"] < 0.2
    assert paired_comparison(_outcomes(flipped, gold), _outcomes(gold, gold)) == got  # seeded: the same
    # only the rows both answered are compared; a task only the candidate answers has no promoted figure
    half = paired_comparison(pl.concat([_outcomes(flipped, gold), _outcomes(gold, gold, item="team")]),
                             _outcomes(gold[:20], gold[:20]))
    assert half["intent.promoted"] == 1.0 and "team.promoted" not in half and half["team.candidate"] == 1.0
    # fields with nothing present on the rows: one side's F1 is undefined, so fields are not compared at all
    absent = pl.DataFrame({"example_id": ["1", "2"], "kind": "field", "item": "order_id", "gold": [None, None],
                           "small_pred": ["123", None], "small_correct": [False, True], "split": "judge"})
    assert paired_comparison(absent, absent.with_columns(pl.lit(None, pl.String).alias("small_pred"),
                                                         pl.lit(True).alias("small_correct"))) == {}
    before, after = {"intent": 0.80}, {"intent": 0.76}
    assert not decide_promotion(_cmp(after, before), ["intent"])[0]  # 0.04 worse: beyond the 0.02 tolerance
    promoted, why = decide_promotion(_cmp(after, before, {"intent": 0.03}), ["intent"])
    assert not promoted and "<= promoted" in why  # within 1.64 x 0.03: not a regression, just not better
    promoted, why = decide_promotion(_cmp({"intent": 0.70}, before, {"intent": 0.03}), ["intent"])
    assert not promoted and "intent 0.700 < promoted 0.800 - 0.049" in why


def test_a_class_that_falls_away_is_refused_though_the_task_s_macro_f1_holds():
    gold = ["negative"] * 25 + ["neutral"] * 25 + ["positive"] * 25 + ["mixed"] * 5
    lost = [("positive" if g == "neutral" and i % 3 == 0 else g) for i, g in enumerate(gold)]  # 8 of 25 neutral
    got = paired_comparison(_outcomes(lost, gold, "sentiment"), _outcomes(gold, gold, "sentiment"))
    # each label with MIN_LABEL_ROWS (20) rows is compared on its recall too; 'mixed' (5 rows) is not
    assert {k.rsplit(".", 1)[0] for k in got} == {"sentiment", "sentiment=negative", "sentiment=neutral",
                                                  "sentiment=positive"}
    assert got["sentiment=neutral.candidate"] == 17 / 25 and got["sentiment=neutral.promoted"] == 1.0
    assert got["sentiment=positive.candidate"] == 1.0 and 0.05 < got["sentiment=neutral.noise"] < 0.2
    # stop 31's invoice-trained candidate on the shipped version's 79 held-out sentiment rows: macro-F1 within its
    # margin, neutral recall 0.565 -> 0.348
    before = {"sentiment": 0.736, "sentiment=neutral": 0.565}
    promoted, why = decide_promotion(_cmp({"sentiment": 0.695, "sentiment=neutral": 0.348}, before,
                                          {"sentiment": 0.05, "sentiment=neutral": 0.085}), ["sentiment"])
    assert not promoted and why.endswith("sentiment=neutral recall 0.348 < promoted 0.565 - 0.150")
    assert "sentiment 0.695" not in why
    # a smaller fall (0.13) is within LABEL_TOLERANCE: judged as the task, not refused for the label
    promoted, why = decide_promotion(_cmp({"sentiment": 0.75, "sentiment=neutral": 0.435}, before,
                                          {"sentiment": 0.05, "sentiment=neutral": 0.066}), ["sentiment"])
    assert promoted and why == "held-out score 0.750 > promoted 0.736 on sentiment"  # labels are not averaged
    # a label's recall is no task of its own: judged labels do not count as one the promoted version lacks
    assert not decide_promotion(_cmp({"sentiment": 0.7, "sentiment=neutral": 0.9}, before), ["sentiment"])[0]


def test_quality_score_averages_macro_f1_and_field_f1():
    summary = Summary(n_docs=10, n_items=30, tiers=["small"], tasks={
        "category": ItemSummary(10, small=TierQuality(accuracy=0.9, macro_f1=0.8, quality=0.9)),
        "intent": ItemSummary(10, small=TierQuality(accuracy=0.7, macro_f1=0.6, quality=0.7))},
        fields={ALL_FIELDS: ItemSummary(10, small=TierQuality(f1=0.4, precision=0.5, recall=float("nan"),
                                                              quality=0.4))})
    metrics = flat_metrics(summary, "small")
    assert metrics["category.macro_f1"] == 0.8 and "fields.recall" not in metrics
    assert math.isclose(metrics["score"], (0.8 + 0.6 + 0.4) / 3)
    assert math.isnan(quality_score({}))


def _examples(per_label: int, offset: int = 0) -> list[LabelledExample]:
    words = {"billing": "invoice payment charge refund money", "shipping": "parcel delivery courier late box",
             "account": "password login profile email sign"}
    return [LabelledExample(f"{lab}-{i + offset}", f"{words[lab].split()[i % 5]} {words[lab].split()[(i + 2) % 5]} "
                            f"ticket {i + offset}", labels={"team": lab})
            for lab in words for i in range(per_label)]


def test_tier0_learning_curve_grows_with_examples_per_label_and_is_reported_beside_the_adapter():
    task = LabelTask(name="team", labels=["billing", "shipping", "account"], question="Which team?")
    curve = tier0_learning_curve(task, _examples(10), _examples(5, offset=100))
    assert curve["team.examples_per_label"] == 10
    assert [k for k in curve if "@" in k] == ["team.tier0@1", "team.tier0@2", "team.tier0@4", "team.tier0@8",
                                              "team.tier0@all"]  # as far as the data goes
    assert curve["team.tier0@all"] == 1.0 and curve["team.tier0@1"] < curve["team.tier0@all"]
    assert tier0_learning_curve(task, _examples(10), []) == {}  # nothing held out: no curve
    table = learning_curve_markdown(curve, {"team.candidate": 0.5})
    assert "| team | " in table and "| 1.000 | 10.0 | 0.500 |" in table and "k=128" in table
    assert learning_curve_markdown({}, {}) == ""
