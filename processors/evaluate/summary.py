"""The evaluation's figures as a typed result: quality per task / field and tier, cost, calibration, thresholds.

`Summary.to_dict()` is what summary.json holds (and the flow returns); `Summary.from_dict` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any

from processors import calibration as cal
from processors.tasks.extract import FieldMetrics
from processors.tasks.label import LabelMetrics
from schemas.config import Thresholds

ALL_FIELDS = "all fields"  # the fields' entry for every field together
ROWS = ("linear", "small", "large", "cascade", "cascade_calibrated")  # a task's rows, in report order


def _present(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(obj).items() if v is not None}


@dataclass(frozen=True)
class TierQuality:
    """One tier's (or a cascade's) quality on a task or field; for a cascade, where its items went."""

    accuracy: float | None = None  # label tasks
    macro_f1: float | None = None
    precision: float | None = None  # fields: over present values
    recall: float | None = None
    f1: float | None = None
    absent_accuracy: float | None = None  # fields whose gold is absent, answered absent
    quality: float = math.nan  # accuracy or field F1: the one figure tiers and versions are compared on
    escalation_rate: float | None = None  # cascades: items sent to the large tier (or on to review)
    review_rate: float | None = None
    linear_rate: float | None = None  # decided by tier 0
    threshold: float | None = None  # tier 0's threshold (its own row)
    label_support: dict[str, int] | None = None  # label tasks: items per gold label
    label_recall: dict[str, float] | None = None  # label tasks: per gold label, the share of its items given it

    @classmethod
    def of(cls, metrics: LabelMetrics | FieldMetrics, **more: float | None) -> TierQuality:
        return cls(**asdict(metrics), quality=metrics.quality, **more)

    def to_dict(self) -> dict[str, float]:
        return _present(self)


@dataclass(frozen=True)
class ItemSummary:
    """One task, one field or all fields: items scored and each row's quality (None: not run)."""

    n: int
    small: TierQuality | None = None
    large: TierQuality | None = None
    linear: TierQuality | None = None  # tier 0 alone
    cascade: TierQuality | None = None  # at the configured thresholds and calibration
    cascade_calibrated: TierQuality | None = None  # at the chosen thresholds and the fitted calibration

    def row(self, name: str) -> TierQuality | None:
        """A row by name (one of ROWS)."""
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, **{k: v.to_dict() for k in ("small", "large", "linear", "cascade", "cascade_calibrated")
                                if (v := self.row(k)) is not None}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemSummary:
        return cls(d["n"], **{k: TierQuality(**d[k]) for k in ROWS if k in d})


@dataclass(frozen=True)
class CostRow:
    """Tokens, cost and speed of a tier (or a cascade) over the evaluated documents."""

    tokens_per_doc: float
    cost_per_1000_docs: float
    cost_per_1000_docs_hosted_large: float  # the large tier's tokens at the hosted price
    docs_per_second: float
    seconds: float
    load_seconds: float | None = None  # a tier alone: its model's loading time
    docs_escalated: float | None = None  # a cascade: share of documents with an item sent to the large tier

    def to_dict(self) -> dict[str, float]:
        return _present(self)


@dataclass(frozen=True)
class CalibrationSummary:
    """One '<tier>:<task>' calibration: what was kept and the expected calibration error before and after."""

    n: int
    method: str  # the method kept, or 'none (<method> did not help)'
    temperature: float
    ece_before: float
    ece_after: float  # NaN when nothing was fitted
    after_on: str  # 'held-out halves' or 'in-sample'

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ThresholdSummary:
    configured: dict[str, Thresholds] = field(default_factory=dict)  # per task and 'fields' evaluated
    chosen: dict[str, Thresholds] = field(default_factory=dict)  # on this data (both tiers only)
    operating_points: dict[str, cal.OperatingPoint] = field(default_factory=dict)  # at the chosen thresholds

    def to_dict(self) -> dict[str, Any]:
        return {"configured": {k: v.model_dump() for k, v in self.configured.items()},
                "chosen": {k: v.model_dump() for k, v in self.chosen.items()},
                "operating_points": {k: asdict(p) for k, p in self.operating_points.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThresholdSummary:
        return cls({k: Thresholds(**v) for k, v in d.get("configured", {}).items()},
                   {k: Thresholds(**v) for k, v in d.get("chosen", {}).items()},
                   {k: cal.OperatingPoint(**v) for k, v in d.get("operating_points", {}).items()})


@dataclass
class Summary:
    """Everything the report shows, per task / field and tier."""

    n_docs: int
    n_items: int
    tiers: list[str]
    tasks: dict[str, ItemSummary] = field(default_factory=dict)
    fields: dict[str, ItemSummary] = field(default_factory=dict)  # per field, and ALL_FIELDS
    cost: dict[str, CostRow] = field(default_factory=dict)  # per row name (ROWS), whole documents
    calibration: dict[str, CalibrationSummary] = field(default_factory=dict)  # '<tier>:<task>'
    thresholds: ThresholdSummary = field(default_factory=ThresholdSummary)
    model_versions: dict[str, str] = field(default_factory=dict)  # tier -> runtime's model version
    config_model_version: str | None = None  # the configuration's model version (None: the base model)
    hosted_price_per_million_tokens: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (summary.json)."""
        return {
            "n_docs": self.n_docs, "n_items": self.n_items, "tiers": list(self.tiers),
            "model_versions": dict(self.model_versions), "config_model_version": self.config_model_version,
            "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
            "fields": {k: v.to_dict() for k, v in self.fields.items()},
            "cost": {k: v.to_dict() for k, v in self.cost.items()},
            "calibration": {k: v.to_dict() for k, v in self.calibration.items()},
            "thresholds": self.thresholds.to_dict(),
            "hosted_price_per_million_tokens": self.hosted_price_per_million_tokens,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        """A summary read back from its JSON-able form (extra keys, such as the flow's, are ignored)."""
        known = {f.name for f in dataclass_fields(cls)}
        plain = {k: v for k, v in d.items() if k in known}
        return cls(**{**plain,
                      "tasks": {k: ItemSummary.from_dict(v) for k, v in d.get("tasks", {}).items()},
                      "fields": {k: ItemSummary.from_dict(v) for k, v in d.get("fields", {}).items()},
                      "cost": {k: CostRow(**v) for k, v in d.get("cost", {}).items()},
                      "calibration": {k: CalibrationSummary(**v) for k, v in d.get("calibration", {}).items()},
                      "thresholds": ThresholdSummary.from_dict(d.get("thresholds", {}))})
