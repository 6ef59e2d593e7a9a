"""The evaluated cascade is the nightly run's: `routing.route` per tier on the outcome rows, tier 0 first."""

import json
import math

import polars as pl
import pytest

from processors.evaluate import OUTCOME_SCHEMA, Evaluation, cascade_at_thresholds, route_outcomes
from processors.routing import FIELDS_KEY, route
from schemas.config import LinearTier, Thresholds
from schemas.records import FieldPrediction, LabelPrediction

NAN = float("nan")
LABELS = ("billing", "shipping")
# (small: label, confidence, valid), (large: ...), gold: label rows of task 'category'
LABEL_ROWS = [
    (("billing", 0.9, True), ("shipping", 0.9, True), "billing"),  # confident small answer
    (("billing", 0.3, True), ("shipping", 0.8, True), "shipping"),  # low confidence: the large answer
    (("billing", 0.3, True), (None, 0.0, False), "billing"),  # an invalid large answer: review
    (("billing", NAN, True), ("shipping", 0.7, True), "shipping"),  # a NaN confidence fails: escalates
    (("billing", 0.9, True), ("shipping", NAN, True), "billing"),  # the large tier is never asked
    (("billing", 0.3, True), ("shipping", NAN, True), "billing"),  # NaN at the large tier: review
    ((None, 0.0, False), ("shipping", 0.9, True), "shipping"),  # an invalid small answer escalates
]
# (small: value, confidence, problems), (large: ...), gold: rows of field 'order_id'
FIELD_ROWS = [
    (("A1", 0.9, []), ("A1", 0.9, []), "A1"),
    (("A9", 0.95, ["not_in_source"]), ("A1", 0.8, []), "A1"),  # fails a validator: escalates
    (("A1", NAN, []), (None, 0.0, ["invalid_json"]), "A1"),  # NaN, then an invalid large answer: review
]
THRESHOLDS = {"category": Thresholds(small=0.6, large=0.0), FIELDS_KEY: Thresholds(small=0.6, large=0.0)}


def _label(answer, tier):
    label, conf, valid = answer
    dist = {} if label is None else {label: conf, ({*LABELS} - {label}).pop(): 1 - conf}
    return LabelPrediction("category", label, conf, dist, tier, valid=valid, error=None if valid else "no scores")


def _field(answer, tier):
    value, conf, problems = answer
    return FieldPrediction("order_id", value, value, conf, None, None, None, not problems, tier, problems)


def _routed(small, large, labels: bool) -> str:
    """What the nightly run decides for one item, straight from routing.route."""
    def one(pred, tier):
        return route({pred.task: pred}, {}, THRESHOLDS, tier) if labels else \
            route({}, {pred.field: pred}, THRESHOLDS, tier)

    if one(small, "small").passed:
        return "small"
    return "large" if one(large, "large").passed else "review"


def _frame() -> pl.DataFrame:
    rows = []
    for i, (s, lg, gold) in enumerate(LABEL_ROWS):
        row = {"example_id": f"t{i}", "source": "tickets", "kind": "label", "item": "category", "gold": gold}
        for tier, pred in (("small", _label(s, "small")), ("large", _label(lg, "large"))):
            row |= {f"{tier}_pred": pred.label, f"{tier}_conf": pred.confidence,
                    f"{tier}_valid": pred.valid and pred.label is not None, f"{tier}_correct": pred.label == gold,
                    f"{tier}_dist": json.dumps(pred.probabilities), f"{tier}_problems": pred.error}
        rows.append(row)
    for i, (s, lg, gold) in enumerate(FIELD_ROWS):
        row = {"example_id": f"f{i}", "source": "pdf", "kind": "field", "item": "order_id", "field_type": "id",
               "gold": gold}
        for tier, pred in (("small", _field(s, "small")), ("large", _field(lg, "large"))):
            row |= {f"{tier}_pred": pred.value, f"{tier}_conf": pred.confidence, f"{tier}_valid": pred.valid,
                    f"{tier}_correct": pred.value == gold, f"{tier}_problems": "+".join(pred.problems) or None}
        rows.append(row)
    return pl.DataFrame(rows, schema=OUTCOME_SCHEMA)


@pytest.fixture
def ev(config):
    cfg = config.model_copy(deep=True)
    cfg.linear = {}
    return Evaluation(_frame(), cfg, ("small", "large"), {}, len(LABEL_ROWS) + len(FIELD_ROWS),
                      thresholds=dict(THRESHOLDS))


def test_the_evaluated_cascade_agrees_with_routing_route(ev):
    expected = [_routed(_label(s, "small"), _label(lg, "large"), True) for s, lg, _ in LABEL_ROWS]
    expected += [_routed(_field(s, "small"), _field(lg, "large"), False) for s, lg, _ in FIELD_ROWS]
    # the rule itself: invalid first, then below the threshold, and a NaN confidence fails (at either tier)
    assert expected == ["small", "large", "review", "large", "small", "review", "large",
                        "small", "large", "review"]
    groups = [ev.outcomes.filter(pl.col("kind") == "label"), ev.outcomes.filter(pl.col("kind") == "field")]
    got = pl.concat([cascade_at_thresholds(groups[0], "category", ev),
                     cascade_at_thresholds(groups[1], FIELDS_KEY, ev)])
    assert got["decided_by"].to_list() == expected
    for row in got.iter_rows(named=True):  # the answer kept is the deciding tier's (review keeps the large one)
        tier = "small" if row["decided_by"] == "small" else "large"
        assert row["cascade_pred"] == row[f"{tier}_pred"] and row["cascade_correct"] == row[f"{tier}_correct"]
    # The configured cascade (what evaluate() writes into the outcomes) is the same function.
    configured = route_outcomes(ev.outcomes, THRESHOLDS, {}, {})
    assert configured["decided_by"].to_list() == expected


def test_the_cascade_routes_each_source_s_fields_by_its_own_thresholds_as_the_nightly_does(ev):
    pdf = Thresholds(small=0.99, large=0.0)  # every PDF field value escalates on confidence
    ev.thresholds["fields:pdf"] = pdf
    fields = ev.outcomes.filter(pl.col("kind") == "field")
    tickets = fields.with_columns(source=pl.lit("tickets"), example_id=pl.col("example_id") + "t")
    got = cascade_at_thresholds(pl.concat([fields, tickets]), FIELDS_KEY, ev)
    expected = []
    for source in ("pdf", "tickets"):
        th = {**THRESHOLDS, "fields:pdf": pdf}
        for s, lg, _ in FIELD_ROWS:
            small, large = _field(s, "small"), _field(lg, "large")
            expected.append("small" if route({}, {"order_id": small}, th, "small", source).passed else
                            "large" if route({}, {"order_id": large}, th, "large", source).passed else "review")
    assert expected == ["large", "large", "review", "small", "large", "review"]
    assert got["decided_by"].to_list() == expected
    # a label task's cascade does not take the fields' per-source thresholds along
    labels = cascade_at_thresholds(ev.outcomes.filter(pl.col("kind") == "label"), "category", ev)
    assert labels["decided_by"][0] == "small"


def test_tier0_decides_before_the_routed_tiers(ev):
    frame = ev.outcomes.filter(pl.col("kind") == "label").with_columns(
        linear_pred=pl.lit("shipping"), linear_conf=pl.Series([0.95, 0.2, 0.95, 0.2, 0.2, 0.2, 0.2]),
        linear_correct=pl.col("gold") == "shipping")
    got = route_outcomes(frame, THRESHOLDS, {}, {"category": LinearTier(path="x", threshold=0.9)})
    assert got["decided_by"].to_list()[:4] == ["linear", "large", "linear", "large"]
    assert got["cascade_pred"][0] == "shipping" and got["cascade_correct"][0] is False
    assert not math.isnan(got["small_conf"][0])
