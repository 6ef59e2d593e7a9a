"""Promotion and tier-0 decisions (pure)."""

from __future__ import annotations

import math

from processors.evaluate import ALL_FIELDS, ItemSummary, Summary, TierQuality
from processors.finetune.compare import decide_promotion, flat_metrics, linear_threshold, quality_score


def test_promotion_needs_a_better_held_out_score():
    assert decide_promotion(0.80, None)[0]  # nothing promoted yet
    assert decide_promotion(0.80, 0.75)[0]
    promoted, why = decide_promotion(0.74, 0.75)
    assert not promoted and "0.740 <= promoted 0.750" in why
    assert not decide_promotion(0.75, 0.75)[0]  # a tie keeps the version that is running
    assert not decide_promotion(float("nan"), 0.5)[0]


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


def test_tier0_is_kept_only_where_quality_holds():
    # the highest coverage at which the cascade with tier 0 is as good as without it
    conf = [0.99, 0.97, 0.95, 0.6, 0.55]
    threshold, share, with_t0, without = linear_threshold(conf, [True, True, True, False, False],
                                                          [True, True, False, True, True])
    assert threshold == 0.6 and share == 0.8 and with_t0 >= without  # one gained, one lost: equal
    # tier 0 wrong where the cascade is right: dropped
    assert linear_threshold([0.99, 0.99], [False, False], [True, True])[0] is None
