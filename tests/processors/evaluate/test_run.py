"""Running the tiers on labelled examples: what is scored, and the outcome rows (real models)."""

import json
import logging
import re

import polars as pl
import pytest

from processors.evaluate import OUTCOME_SCHEMA, choose_thresholds, evaluate, write_report
from processors.tiers import LoadedTier
from schemas.config import LinearTier


@pytest.mark.slow
def test_evaluation_scores_real_outputs(evaluation, mix):
    o = evaluation.outcomes
    assert o.schema == pl.Schema(OUTCOME_SCHEMA)
    assert evaluation.n_docs == len(mix) == 15
    # Only what the data labels is scored: bitext has category and intent (intent is added from the
    # data's labels), airline has sentiment, the PDFs have their invoice fields.
    assert o.filter(pl.col("kind") == "label").group_by("item").len().sort("item").rows() == [
        ("category", 10), ("intent", 10), ("sentiment", 3)]
    assert any("intent" in n and "added" in n for n in evaluation.notes)
    pdf_fields = set(o.filter(pl.col("source") == "pdf")["item"].to_list())
    assert pdf_fields <= {"invoice_number", "date", "total_amount", "currency"} and pdf_fields
    assert {"order_id", "invoice_id", "refund_amount", "person_name"} <= set(
        o.filter((pl.col("source") == "tickets") & (pl.col("kind") == "field"))["item"].to_list())

    labels = o.filter(pl.col("kind") == "label")
    sets = {t.name: set(t.labels) for t in evaluation.config.tasks}
    for row in labels.iter_rows(named=True):
        for tier in ("small", "large"):
            assert row[f"{tier}_pred"] is None or row[f"{tier}_pred"] in sets[row["item"]]
            assert 0.0 <= row[f"{tier}_conf"] <= 1.0
            dist = json.loads(row[f"{tier}_dist"])
            assert not dist or abs(sum(dist.values()) - 1) < 1e-6
        assert row["small_correct"] == (row["small_pred"] == row["gold"])
    assert o.filter(pl.col("large_tokens").is_null()).is_empty()  # every item's large-tier tokens are known


def test_small_tier_alone_for_comparing_versions(config, small_runtime, mix, caplog):
    """What fine-tuning uses to compare a candidate with the promoted version: the small tier only.
    Progress lines with counts go to the processors.progress logger (the terminal and the Prefect run)."""
    caplog.set_level(logging.INFO, logger="processors.progress")
    tweets = [ex for ex in mix if ex.example_id.startswith("airline_dev:")]
    ev = evaluate(config, tweets, tiers=("small",), loaded={"small": LoadedTier(small_runtime)})
    lines = [r.getMessage() for r in caplog.records if r.name == "processors.progress"]
    assert lines[0] == "evaluate small tier: 0/3 (0%)", lines  # before the first batch
    for line in lines[1:-1]:  # one per batch at most (the batch may hold all 3)
        assert re.fullmatch(r"evaluate small tier: [12]/3 \(\d+%\) [\d.]+ docs/s, ETA \d+s", line), lines
    assert re.fullmatch(r"evaluate small tier: 3/3 \(100%\) [\d.]+ docs/s, done in \d+s", lines[-1]), lines
    entry = ev.summary.tasks["sentiment"]
    assert entry.n == 3 and entry.small is not None
    assert entry.large is None and entry.linear is None and entry.cascade is None and entry.cascade_calibrated is None
    assert entry.small.accuracy == pytest.approx(ev.outcomes["small_correct"].mean())
    assert ev.outcomes["large_pred"].is_null().all() and not ev.thresholds
    assert ev.outcomes["decided_by"].is_null().all()  # no cascade without the large tier
    with pytest.raises(ValueError):
        choose_thresholds(ev)


def test_tier0_decides_its_confident_items_in_the_cascade(config, small_runtime, mix, linear_category, tmp_path):
    """With a model version's tier 0, the evaluated cascade is the nightly one: linear -> small -> large.
    (The small model also stands in as the large tier here: this is about the cascade's bookkeeping.)"""
    _, path = linear_category
    cfg = config.model_copy(deep=True)
    cfg.linear = {"category": LinearTier(path=str(path), threshold=0.95)}
    tickets = [ex for ex in mix if "category" in ex.labels]  # the bitext part
    loaded = LoadedTier(small_runtime)
    ev = evaluate(cfg, tickets, loaded={"small": loaded, "large": loaded})
    labels = ev.outcomes.filter(pl.col("kind") == "label")
    category = labels.filter(pl.col("item") == "category")
    assert category["linear_conf"].is_not_null().all() and len(category) == len(tickets)
    assert labels.filter(pl.col("item") == "intent")["linear_conf"].is_null().all()  # no tier 0 for intent
    confident = category["linear_conf"] >= 0.95
    assert 0 < confident.sum() < len(category)  # some items each way, so both paths are exercised
    assert ((category["decided_by"] == "linear") == confident).all()
    taken = category.filter(confident)
    assert taken["cascade_pred"].to_list() == taken["linear_pred"].to_list()
    assert (category.filter(~confident)["decided_by"].is_in(["small", "large", "review"])).all()
    entry = ev.summary.tasks["category"]
    assert entry.linear.accuracy == pytest.approx(category["linear_correct"].mean())
    assert entry.linear.threshold == 0.95
    assert entry.cascade.linear_rate == pytest.approx(confident.mean())
    assert entry.cascade_calibrated.linear_rate == pytest.approx(confident.mean())
    report = write_report(ev, tmp_path)["report"].read_text()
    assert "tier 0 (linear) alone" in report
