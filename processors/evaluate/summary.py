"""The evaluation's figures as a typed result: quality per task / field and tier, cost, calibration, thresholds.

`Summary.to_dict()` is what summary.json holds (and the flow returns); `Summary.from_dict` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, Any

import polars as pl

from processors import calibration as cal
from processors.evaluate.cascade import cascade_at_thresholds
from processors.evaluate.fitting import cross_fitted, fit
from processors.evaluate.outcomes import group_key, outcomes_by_task
from processors.routing import FIELDS_KEY
from processors.tasks.extract import FieldMetrics, field_metrics
from processors.tasks.label import LabelMetrics, label_metrics
from schemas.config import Config, TaskCalibration, Thresholds

if TYPE_CHECKING:
    from processors.evaluate.run import Evaluation

ALL_FIELDS = "all fields"  # the fields' entry for every field together
ROWS = ("linear", "small", "large", "cascade", "cascade_calibrated")  # a task's rows, in report order


def _present(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(obj).items() if v is not None}


@dataclass(frozen=True)
class TierQuality:
    """One tier's (or a cascade's) quality on a task or field; for a cascade, where its items went."""

    accuracy: float | None = None  # label tasks
    macro_f1: float | None = None
    exact_match: float | None = None  # fields
    precision: float | None = None
    recall: float | None = None
    quality: float = math.nan  # accuracy or exact match: the one figure tiers and versions are compared on
    escalation_rate: float | None = None  # cascades: items sent to the large tier (or on to review)
    review_rate: float | None = None
    linear_rate: float | None = None  # decided by tier 0
    threshold: float | None = None  # tier 0's threshold (its own row)

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


# --- computing it --------------------------------------------------------------------------------

def _quality(frame: pl.DataFrame, kind: str, pred_col: str, correct_col: str, **more: float | None) -> TierQuality:
    frame = frame.filter(pl.col(correct_col).is_not_null())
    if kind == "label":
        metrics = label_metrics(frame["gold"].to_list(), frame[pred_col].to_list())
    else:
        metrics = field_metrics(frame["gold"].to_list(), frame[pred_col].to_list(), frame[correct_col].to_list())
    return TierQuality.of(metrics, **more)


def _cascade_quality(frame: pl.DataFrame, kind: str) -> TierQuality:
    """The cascade's quality, and where its items went."""
    decided = frame["decided_by"].drop_nulls()
    rates = {} if not len(decided) else {
        "escalation_rate": float(decided.is_in(["large", "review"]).mean()),
        "review_rate": float((decided == "review").mean()), "linear_rate": float((decided == "linear").mean())}
    return _quality(frame, kind, "cascade_pred", "cascade_correct", **rates)


def _item_summary(frame: pl.DataFrame, kind: str, ev: Evaluation, chosen: pl.DataFrame | None,
                  linear_threshold: float | None) -> ItemSummary:
    both = "small" in ev.tiers and "large" in ev.tiers
    tiers = {tier: _quality(frame, kind, f"{tier}_pred", f"{tier}_correct") for tier in ev.tiers}
    linear = None
    if kind == "label" and frame["linear_conf"].is_not_null().any():
        linear = _quality(frame, kind, "linear_pred", "linear_correct", threshold=linear_threshold)
    return ItemSummary(len(frame), tiers.get("small"), tiers.get("large"), linear,
                       _cascade_quality(frame, kind) if both else None,
                       _cascade_quality(chosen, kind) if both and chosen is not None else None)


def _cost(ev: Evaluation, config: Config, chosen: bool) -> CostRow:
    """Tokens, cost per 1,000 documents and docs/s of the cascade (items escalated pay the large tier)."""
    o = ev.outcomes
    if chosen:
        parts = [cascade_at_thresholds(f, k, ev) for k, f in outcomes_by_task(o).items()] if ev.thresholds else []
        o = pl.concat(parts) if parts else o
    up = o.filter(pl.col("decided_by").is_in(["large", "review"]))
    small = ev.runs["small"]
    large_tokens = int(up["large_tokens"].sum() or 0)
    large_seconds = float(up["large_seconds"].sum() or 0.0)
    return _cost_row(small.tokens, large_tokens, small.seconds + large_seconds, ev.n_docs, config,
                     docs_escalated=up["example_id"].n_unique() / ev.n_docs)


def _cost_row(small_tokens: int, large_tokens: int, seconds: float, n: int, config: Config,
              **more: float) -> CostRow:
    per_k = 1000 / n / 1e6
    small_cost = small_tokens * per_k * config.small.price_per_million_tokens
    return CostRow(
        tokens_per_doc=(small_tokens + large_tokens) / n,
        cost_per_1000_docs=small_cost + large_tokens * per_k * config.large.price_per_million_tokens,
        # The same work with the large tier as a hosted API at hosted_price_per_million_tokens.
        cost_per_1000_docs_hosted_large=small_cost + large_tokens * per_k * config.hosted_price_per_million_tokens,
        docs_per_second=n / seconds if seconds > 0 else float("nan"),
        seconds=seconds, **more)


def _calibration(frame: pl.DataFrame, key: str, tier: str, ev: Evaluation) -> CalibrationSummary:
    ok = frame[f"{tier}_correct"].to_list()
    fitted = ev.calibration.get(f"{tier}:{key}", TaskCalibration())
    # Kept: its held-out ECE. Not kept: the default method's, to show it did not help.
    method = fitted.method if fitted.method != "none" else None
    tried = fitted if fitted.method != "none" else fit(frame, key, tier)
    after, how = cross_fitted(frame, key, tier, method)
    return CalibrationSummary(
        n=len(frame), method=fitted.method if fitted.method != "none" or tried.method == "none"
        else f"none ({tried.method} did not help)", temperature=tried.temperature,
        ece_before=cal.ece(frame[f"{tier}_conf"].to_list(), ok),
        ece_after=cal.ece(after, ok) if tried.method != "none" else float("nan"), after_on=how)


def summarize(ev: Evaluation, config: Config) -> Summary:
    """Metrics per task / field and tier, cost and speed per tier, calibration and thresholds."""
    o = ev.outcomes
    both = "small" in ev.tiers and "large" in ev.tiers
    tasks: dict[str, ItemSummary] = {}
    fields_: dict[str, ItemSummary] = {}
    chosen_frames = ({k: cascade_at_thresholds(f, k, ev) for k, f in outcomes_by_task(o).items()}
                     if ev.thresholds else {})
    for (kind, item), frame in sorted(o.group_by(["kind", "item"], maintain_order=True), key=lambda kv: kv[0]):
        key = group_key(kind, item)
        chosen = chosen_frames[key].filter(pl.col("item") == item) if key in chosen_frames else None
        threshold = config.linear[item].threshold if item in config.linear else None
        (tasks if kind == "label" else fields_)[item] = _item_summary(frame, kind, ev, chosen, threshold)
    every_field = o.filter(pl.col("kind") == "field")
    if len(every_field):
        fields_[ALL_FIELDS] = _item_summary(every_field, "field", ev, chosen_frames.get(FIELDS_KEY), None)

    cost: dict[str, CostRow] = {}
    if "small" in ev.tiers:
        r = ev.runs["small"]
        cost["small"] = _cost_row(r.tokens, 0, r.seconds, ev.n_docs, config, load_seconds=r.load_seconds)
    if "large" in ev.tiers:
        r = ev.runs["large"]
        cost["large"] = _cost_row(0, r.tokens, r.seconds, ev.n_docs, config, load_seconds=r.load_seconds)
    if both:
        cost["cascade"] = _cost(ev, config, chosen=False)
        if ev.thresholds:
            cost["cascade_calibrated"] = _cost(ev, config, chosen=True)

    calibration: dict[str, CalibrationSummary] = {}
    for key, frame in outcomes_by_task(o).items():
        for tier in ev.tiers:
            f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
            if len(f):
                calibration[f"{tier}:{key}"] = _calibration(f, key, tier, ev)
    return Summary(
        n_docs=ev.n_docs, n_items=len(o), tiers=list(ev.tiers), tasks=tasks, fields=fields_, cost=cost,
        calibration=calibration,
        thresholds=ThresholdSummary(configured={k: config.thresholds_for(k) for k in outcomes_by_task(o)},
                                    chosen=dict(ev.thresholds), operating_points=dict(ev.operating_points)),
        model_versions={t: r.model_version for t, r in ev.runs.items()},
        config_model_version=config.models.active,
        hosted_price_per_million_tokens=config.hosted_price_per_million_tokens,
        notes=ev.notes)
