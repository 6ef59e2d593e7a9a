"""Routing: pure functions from predictions and thresholds to decisions, with reasons.

An *item* is a label task name or 'field:<name>'. After the small tier an item that is below its
threshold, invalid, or fails a validator escalates to the large tier; after the large tier such an
item goes to review.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.config import Thresholds
from schemas.records import FieldPrediction, LabelPrediction, Tier

FIELDS_KEY = "fields"  # thresholds key shared by all fields


@dataclass(frozen=True)
class RouteDecision:
    passed: tuple[str, ...]  # items this tier decides
    failed: tuple[str, ...]  # items that go up a tier (small -> large, large -> review)
    reasons: tuple[str, ...]  # one per failed item: '<item>:<why>'


def _threshold(thresholds: dict[str, Thresholds], key: str, tier: Tier) -> float:
    t = thresholds.get(key, Thresholds())
    return t.small if tier == "small" else t.large


def route(labels: dict[str, LabelPrediction], fields: dict[str, FieldPrediction],
          thresholds: dict[str, Thresholds], tier: Tier) -> RouteDecision:
    passed, failed, reasons = [], [], []
    for task, pred in sorted(labels.items()):
        limit = _threshold(thresholds, task, tier)
        if not pred.valid or pred.label is None:
            failed.append(task)
            reasons.append(f"{task}:invalid_output")
        elif pred.confidence < limit:
            failed.append(task)
            reasons.append(f"{task}:low_confidence({pred.confidence:.2f}<{limit:.2f})")
        else:
            passed.append(task)
    for name, pred in sorted(fields.items()):
        item, limit = f"field:{name}", _threshold(thresholds, FIELDS_KEY, tier)
        if not pred.valid:
            failed.append(item)
            reasons.append(f"{item}:{'+'.join(pred.problems) or 'invalid'}")
        elif pred.confidence < limit:
            failed.append(item)
            reasons.append(f"{item}:low_confidence({pred.confidence:.2f}<{limit:.2f})")
        else:
            passed.append(item)
    return RouteDecision(tuple(passed), tuple(failed), tuple(reasons))


def overall_tier(decided_by: dict[str, Tier]) -> Tier:
    """The highest tier any item of the document needed."""
    order = {"small": 0, "large": 1, "review": 2}
    return max(decided_by.values(), key=order.__getitem__, default="small")
