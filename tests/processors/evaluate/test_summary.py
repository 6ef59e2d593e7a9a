"""The typed summary: figures computed from the outcomes, and summary.json keeping its shape."""

import json

import polars as pl
import pytest

from processors.evaluate import ALL_FIELDS, ItemSummary, Summary, TierQuality


@pytest.mark.slow
def test_summary_is_computed_from_the_outcomes(evaluation):
    cat = evaluation.outcomes.filter((pl.col("kind") == "label") & (pl.col("item") == "category"))
    entry = evaluation.summary.tasks["category"]
    for tier in ("small", "large", "cascade"):
        assert entry.row(tier).accuracy == pytest.approx(cat[f"{tier}_correct"].mean())
        assert entry.row(tier).quality == entry.row(tier).accuracy
        assert 0.0 <= entry.row(tier).macro_f1 <= 1.0
    assert entry.cascade.escalation_rate == pytest.approx((cat["decided_by"] != "small").mean())
    assert entry.small.escalation_rate is None and entry.linear is None  # rates are the cascades'

    cost = evaluation.summary.cost
    assert cost["small"].tokens_per_doc > 0 and cost["large"].tokens_per_doc > 0
    assert cost["small"].docs_per_second > 0 and cost["large"].docs_per_second > 0
    assert cost["large"].cost_per_1000_docs_hosted_large > cost["cascade"].cost_per_1000_docs_hosted_large \
        or entry.cascade.escalation_rate == 1.0
    assert cost["cascade"].docs_escalated is not None and cost["small"].load_seconds is not None


@pytest.mark.slow
def test_summary_json_keeps_its_keys_and_reads_back(evaluation):
    d = json.loads(json.dumps(evaluation.summary.to_dict(), default=str))
    assert list(d) == ["n_docs", "n_items", "tiers", "model_versions", "config_model_version", "tasks", "fields",
                       "cost", "calibration", "thresholds", "hosted_price_per_million_tokens", "notes"]
    category = d["tasks"]["category"]
    assert list(category) == ["n", "small", "large", "cascade", "cascade_calibrated"]
    assert list(category["small"]) == ["accuracy", "macro_f1", "quality", "label_support", "label_recall"]
    assert list(category["cascade"]) == ["accuracy", "macro_f1", "quality", "escalation_rate", "review_rate",
                                         "linear_rate", "label_support", "label_recall"]
    small = category["small"]
    assert set(small["label_recall"]) == set(small["label_support"]) and sum(small["label_support"].values()) == \
        category["n"]
    assert list(d["fields"][ALL_FIELDS]["large"]) == ["precision", "recall", "f1", "absent_accuracy",
                                                         "quality"]
    assert list(d["cost"]) == ["small", "large", "cascade", "cascade_calibrated"]
    assert list(d["cost"]["small"]) == ["tokens_per_doc", "cost_per_1000_docs", "cost_per_1000_docs_hosted_large",
                                        "docs_per_second", "seconds", "load_seconds"]
    assert list(d["cost"]["cascade"])[-1] == "docs_escalated"
    assert list(d["calibration"]["small:category"]) == ["n", "method", "temperature", "ece_before", "ece_after",
                                                        "after_on"]
    assert list(d["thresholds"]) == ["configured", "chosen", "operating_points"]
    assert set(d["thresholds"]["chosen"]["category"]) == {"small", "large"}
    assert {"threshold", "escalation_rate", "quality", "large_quality", "review_rate", "target"} <= set(
        d["thresholds"]["operating_points"]["category"])
    # Read back (as the CLI reads the flow's result) it is the same summary.
    back = Summary.from_dict({**d, "report": "report.md", "stored": None})
    assert json.dumps(back.to_dict(), default=str) == json.dumps(d)


def test_absent_figures_are_left_out_of_the_json():
    entry = ItemSummary(4, small=TierQuality(accuracy=0.5, macro_f1=0.4, quality=0.5),
                        cascade=TierQuality(precision=1.0, recall=0.5, f1=2 / 3, quality=2 / 3,
                                            escalation_rate=0.25, review_rate=0.0, linear_rate=0.0))
    assert entry.to_dict() == {"n": 4, "small": {"accuracy": 0.5, "macro_f1": 0.4, "quality": 0.5},
                               "cascade": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "quality": 2 / 3,
                                           "escalation_rate": 0.25, "review_rate": 0.0, "linear_rate": 0.0}}
    assert ItemSummary.from_dict(entry.to_dict()) == entry
    assert entry.row("large") is None


def test_a_source_s_fields_show_the_configured_thresholds_that_route_them():
    from processors.evaluate.summarize import _configured
    from schemas.config import Thresholds, load_config
    from tests.conftest import FIXTURES

    config = load_config(FIXTURES / "sluicegate.toml")
    config.thresholds = {"fields": Thresholds(small=0.7, large=0.4), "fields:pdf": Thresholds(small=0.3, large=0.2)}
    assert _configured(config, "fields:pdf") == Thresholds(small=0.3, large=0.2)  # its own
    assert _configured(config, "fields:tickets") == Thresholds(small=0.7, large=0.4)  # none: the fields'
    assert _configured(config, "fields") == Thresholds(small=0.7, large=0.4)
    assert _configured(config, "intent") == Thresholds()  # a task without its own: the defaults
