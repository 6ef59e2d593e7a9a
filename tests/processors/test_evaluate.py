"""Evaluation with the real models on a small labelled mix: bitext tickets, airline tweets, invoice PDFs."""

import json

import polars as pl
import pytest

from processors import calibration as cal
from processors.datasets import load_examples, sample
from processors.evaluate import OUTCOME_SCHEMA, choose_thresholds, evaluate, field_match, write_report
from processors.routing import FIELDS_KEY
from processors.tiers import LoadedTier
from schemas.config import LinearTier
from tests.conftest import SHARED_DATA


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


@pytest.fixture(scope="module")
def mix():
    bitext = sample(load_examples(SHARED_DATA / "tickets" / "bitext" / "validation.csv"), 10, stratify="category")
    airline = sample(load_examples(SHARED_DATA / "sentiment" / "airline_dev.csv"), 3, stratify="sentiment")
    invoices = sorted(load_examples(SHARED_DATA / "invoices" / "invoice2data"), key=lambda e: len(e.text))[:2]
    return bitext + airline + invoices


@pytest.fixture(scope="module")
def evaluation(config, small_runtime, mix):
    return evaluate(config, mix, loaded={"small": LoadedTier(small_runtime)})


@pytest.mark.slow
def test_evaluation_scores_real_outputs(evaluation, mix, config):
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
    # The summary is computed from these outcomes.
    cat = labels.filter(pl.col("item") == "category")
    summary = evaluation.summary["tasks"]["category"]
    for tier in ("small", "large", "cascade"):
        assert summary[tier]["accuracy"] == pytest.approx(cat[f"{tier}_correct"].mean())
        assert 0.0 <= summary[tier]["macro_f1"] <= 1.0
    assert summary["cascade"]["escalation_rate"] == pytest.approx((cat["decided_by"] != "small").mean())

    # The cascade follows the routing rule at the configured thresholds (no calibration configured).
    t = config.thresholds_for("category")
    for row in cat.iter_rows(named=True):
        escalates = not row["small_valid"] or row["small_conf"] < t.small
        assert (row["decided_by"] != "small") == escalates
        assert row["cascade_pred"] == (row["large_pred"] if escalates else row["small_pred"])

    cost = evaluation.summary["cost"]
    assert cost["small"]["tokens_per_doc"] > 0 and cost["large"]["tokens_per_doc"] > 0
    assert cost["small"]["docs_per_second"] > 0 and cost["large"]["docs_per_second"] > 0
    assert cost["large"]["cost_per_1000_docs_hosted_large"] > cost["cascade"]["cost_per_1000_docs_hosted_large"] \
        or evaluation.summary["tasks"]["category"]["cascade"]["escalation_rate"] == 1.0
    assert o.filter(pl.col("large_tokens").is_null()).is_empty()  # every item's large-tier tokens are known


@pytest.mark.slow
def test_calibration_and_thresholds_from_the_evaluation(evaluation):
    # Fitted for every tier and group; kept only where it lowers held-out ECE (else a note says so).
    assert {"small:fields", "large:fields", "small:category", "large:category"} <= set(
        evaluation.summary["calibration"])
    for key, c in evaluation.calibration.items():
        tier, task = key.split(":")
        assert tier in ("small", "large") and c.method == ("isotonic" if task == FIELDS_KEY else "temperature")
    assert set(evaluation.thresholds) >= {"category", "intent", FIELDS_KEY}
    for key, point in evaluation.operating_points.items():
        assert point.quality >= point.large_quality - 0.01 - 1e-9, key  # the default target
    thresholds, points = choose_thresholds(evaluation, target_escalation=0.5)
    o = evaluation.outcomes
    for key, p in points.items():
        rows = o.filter(pl.col("kind") == "field") if key == FIELDS_KEY else o.filter(pl.col("item") == key)
        invalid = float((~rows["small_valid"]).mean())  # invalid answers escalate at any threshold
        assert p.escalation_rate <= max(0.5, invalid) + 1e-9, key
    assert set(thresholds) == set(evaluation.thresholds)
    ece = evaluation.summary["calibration"]["small:fields"]
    assert 0.0 <= ece["ece_before"] <= 1.0
    raw = evaluation.outcomes.filter(pl.col("kind") == "field")
    assert ece["ece_before"] == pytest.approx(cal.ece(raw["small_conf"].to_list(), raw["small_correct"].to_list()))


@pytest.mark.slow
def test_report_and_plots_are_written(evaluation, tmp_path):
    paths = write_report(evaluation, tmp_path / "eval", extra=["a note for the reader"])
    report = paths["report"].read_text()
    for heading in ("## Task `category`", "## Task `intent`", "## Task `sentiment`", "## All fields together",
                    "## Cost and speed", "## Calibration", "## Thresholds", "a note for the reader"):
        assert heading in report
    assert "| cascade (configured thresholds) |" in report
    back = pl.read_parquet(paths["outcomes"])
    assert back.equals(evaluation.outcomes)
    for key in ("category", "intent", "sentiment", FIELDS_KEY):
        for kind in ("reliability", "escalation"):
            png = paths[f"{kind}:{key}"]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
            assert png.name in report
    assert json.loads(paths["summary"].read_text())["n_docs"] == 15


def test_small_tier_alone_for_comparing_versions(config, small_runtime, mix):
    """What fine-tuning uses to compare a candidate with the promoted version: the small tier only."""
    tweets = [ex for ex in mix if ex.example_id.startswith("airline_dev:")]
    ev = evaluate(config, tweets, tiers=("small",), loaded={"small": LoadedTier(small_runtime)})
    entry = ev.summary["tasks"]["sentiment"]
    assert set(entry) == {"n", "small"} and entry["n"] == 3
    assert entry["small"]["accuracy"] == pytest.approx(ev.outcomes["small_correct"].mean())
    assert ev.outcomes["large_pred"].is_null().all() and not ev.thresholds
    with pytest.raises(ValueError):
        choose_thresholds(ev)


def test_tier0_decides_its_confident_items_in_the_cascade(config, small_runtime, mix, linear_category, tmp_path):
    """With a model version's tier 0, the evaluated cascade is the nightly one: linear -> small -> large.
    (The small model also stands in as the large tier here: this is about the cascade's bookkeeping.)"""
    _, path = linear_category
    cfg = config.model_copy(deep=True)
    cfg.linear = {"category": LinearTier(path=str(path), threshold=0.6)}
    tickets = [ex for ex in mix if "category" in ex.labels]  # the bitext part
    loaded = LoadedTier(small_runtime)
    ev = evaluate(cfg, tickets, loaded={"small": loaded, "large": loaded})
    labels = ev.outcomes.filter(pl.col("kind") == "label")
    category = labels.filter(pl.col("item") == "category")
    assert category["linear_conf"].is_not_null().all() and len(category) == len(tickets)
    assert labels.filter(pl.col("item") == "intent")["linear_conf"].is_null().all()  # no tier 0 for intent
    confident = category["linear_conf"] >= 0.6
    assert 0 < confident.sum() < len(category)  # some items each way, so both paths are exercised
    assert ((category["decided_by"] == "linear") == confident).all()
    taken = category.filter(confident)
    assert taken["cascade_pred"].to_list() == taken["linear_pred"].to_list()
    assert (category.filter(~confident)["decided_by"].is_in(["small", "large", "review"])).all()
    entry = ev.summary["tasks"]["category"]
    assert entry["linear"]["accuracy"] == pytest.approx(category["linear_correct"].mean())
    assert entry["cascade"]["linear_rate"] == pytest.approx(confident.mean())
    assert entry["cascade_calibrated"]["linear_rate"] == pytest.approx(confident.mean())
    report = write_report(ev, tmp_path)["report"].read_text()
    assert "tier 0 (linear) alone" in report
