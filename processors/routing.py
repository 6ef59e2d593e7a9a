"""Routing: pure functions from predictions and thresholds to decisions, with reasons.

An *item* is a label task name or 'field:<name>'. After the small tier an item that is below its
threshold, invalid, or fails a validator escalates to the large tier; after the large tier such an
item goes to review.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.config import Thresholds
from schemas.records import TIERS, FieldPrediction, LabelPrediction, Tier

FIELDS_KEY = "fields"  # thresholds key shared by all fields; 'fields:<source>' (fields_key) wins for its source


def fields_key(source: str) -> str:
    """The thresholds key of one source's fields. Confidence means something else on a short ticket than on an
    invoice PDF, so an evaluation with enough of each fits them apart (processors/evaluate/fitting.py)."""
    return f"{FIELDS_KEY}:{source}"


def is_fields_key(key: str) -> bool:
    """'fields' or 'fields:<source>'."""
    return key == FIELDS_KEY or key.startswith(f"{FIELDS_KEY}:")


@dataclass(frozen=True)
class RouteDecision:
    passed: tuple[str, ...]  # items this tier decides
    failed: tuple[str, ...]  # items that go up a tier (small -> large, large -> review)
    reasons: tuple[str, ...]  # one per failed item: '<item>:<why>'


def _threshold(thresholds: dict[str, Thresholds], key: str, tier: Tier) -> float:
    t = thresholds.get(key, Thresholds())
    return t.small if tier == "small" else t.large


def field_thresholds_key(thresholds: dict[str, Thresholds], source: str | None) -> str:
    """The key a source's fields are routed by: 'fields:<source>' when there is one, else 'fields'."""
    return fields_key(source) if source is not None and fields_key(source) in thresholds else FIELDS_KEY


def below_threshold(confidence: float | np.ndarray, limit: float) -> np.bool_ | np.ndarray:
    """The threshold rule, for one confidence or an array of them (threshold sweeps): a NaN confidence
    (from a runtime's NaN log-probabilities) counts as below."""
    return ~(np.asarray(confidence, dtype=float) >= limit)


def _failure(invalid_reason: str | None, confidence: float, limit: float) -> str | None:
    """Why an item fails its tier (None: it passes): invalid first, then below the threshold."""
    if invalid_reason is not None:
        return invalid_reason
    if below_threshold(confidence, limit):
        return f"low_confidence({confidence:.2f}<{limit:.2f})"
    return None


def route(labels: dict[str, LabelPrediction], fields: dict[str, FieldPrediction],
          thresholds: dict[str, Thresholds], tier: Tier, source: str | None = None) -> RouteDecision:
    """One tier's decisions on one document's items; `source` (tickets, pdf) picks its fields' thresholds."""
    fields_at = field_thresholds_key(thresholds, source)
    judged = [
        (task, _failure("invalid_output" if not pred.valid or pred.label is None else None,
                        pred.confidence, _threshold(thresholds, task, tier)))
        for task, pred in sorted(labels.items())
    ] + [
        (f"field:{name}", _failure(None if pred.valid else "+".join(pred.problems) or "invalid",
                                   pred.confidence, _threshold(thresholds, fields_at, tier)))
        for name, pred in sorted(fields.items())
    ]
    return RouteDecision(
        passed=tuple(item for item, why in judged if why is None),
        failed=tuple(item for item, why in judged if why is not None),
        reasons=tuple(f"{item}:{why}" for item, why in judged if why is not None),
    )


def overall_tier(decided_by: dict[str, Tier]) -> Tier:
    """The highest tier any item of the document needed."""
    return max(decided_by.values(), key=TIERS.index, default="small")
