"""The cascade on outcome rows, by the nightly run's own rules: tier 0 first, then `routing.route` per tier.

Each row's answers are turned back into the predictions the nightly run would route (the tier's
calibration applied, as the tiers apply it), and `route` decides: invalid first, then below the
threshold (a NaN confidence fails). An item the small tier fails goes to the large tier, and one the
large tier fails goes to review.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import polars as pl

from processors import calibration as cal
from processors.routing import FIELDS_KEY, is_fields_key, route
from schemas.config import LinearTier, TaskCalibration, Thresholds
from schemas.records import FieldPrediction, LabelPrediction

if TYPE_CHECKING:
    from processors.evaluate.evaluation import Evaluation


def cascade_at_thresholds(frame: pl.DataFrame, key: str, ev: Evaluation) -> pl.DataFrame:
    """The outcome rows of one group (a task, or 'fields') with the cascade at the chosen thresholds (for
    fields, each source's own where it has them) and the fitted calibration."""
    per_source = {k: t for k, t in ev.thresholds.items() if is_fields_key(k)} if key == FIELDS_KEY else {}
    return route_outcomes(frame, {key: ev.thresholds[key], **per_source}, ev.calibration, ev.config.linear)


def route_outcomes(frame: pl.DataFrame, thresholds: dict[str, Thresholds], calibration: dict[str, TaskCalibration],
                   linear: dict[str, LinearTier]) -> pl.DataFrame:
    """The outcome rows with `decided_by` (linear | small | large | review), `cascade_pred` and
    `cascade_correct` at these thresholds and calibration. A row a tier has no answer for is left undecided."""
    rows = list(frame.iter_rows(named=True))
    decided = [_decide(row, thresholds, calibration) for row in rows]
    kept = [None if d is None else ("small" if d == "small" else "large") for d in decided]  # whose answer stands
    pred = [row[f"{t}_pred"] if t else None for row, t in zip(rows, kept, strict=True)]
    correct = [row[f"{t}_correct"] if t else None for row, t in zip(rows, kept, strict=True)]
    return tier0_decides(frame.with_columns(
        pl.Series("decided_by", decided, dtype=pl.String),
        pl.Series("cascade_pred", pred, dtype=pl.String),
        pl.Series("cascade_correct", correct, dtype=pl.Boolean)), linear)


def tier0_decides(frame: pl.DataFrame, linear: dict[str, LinearTier]) -> pl.DataFrame:
    """Items tier 0 is confident on are decided by it in the cascade, whatever the language models said."""
    if not linear or frame["linear_conf"].is_null().all():
        return frame
    threshold = pl.col("item").replace_strict({k: v.threshold for k, v in linear.items()}, default=None,
                                              return_dtype=pl.Float64)
    takes = (pl.col("kind") == "label") & pl.col("decided_by").is_not_null() & (pl.col("linear_conf") >= threshold)
    return frame.with_columns(
        pl.when(takes).then(pl.lit("linear")).otherwise(pl.col("decided_by")).alias("decided_by"),
        pl.when(takes).then(pl.col("linear_pred")).otherwise(pl.col("cascade_pred")).alias("cascade_pred"),
        pl.when(takes).then(pl.col("linear_correct")).otherwise(pl.col("cascade_correct")).alias("cascade_correct"))


def _decide(row: dict, thresholds: dict[str, Thresholds], calibration: dict[str, TaskCalibration]) -> str | None:
    small = prediction(row, "small", calibration)
    if small is None:
        return None
    if _passes(small, thresholds, "small", row["source"]):
        return "small"
    large = prediction(row, "large", calibration)
    if large is None:
        return None
    return "large" if _passes(large, thresholds, "large", row["source"]) else "review"


def prediction(row: dict, tier: str,
               calibration: dict[str, TaskCalibration]) -> LabelPrediction | FieldPrediction | None:
    """An outcome row's answer from one tier as the prediction the nightly run routes, calibrated as the tiers
    calibrate it (None: the tier has no answer for the item)."""
    conf = row[f"{tier}_conf"]
    if conf is None:
        return None
    valid, problems = bool(row[f"{tier}_valid"]), row[f"{tier}_problems"]
    if row["kind"] == "label":
        dist = row[f"{tier}_dist"]
        label = LabelPrediction(row["item"], row[f"{tier}_pred"], conf, json.loads(dist) if dist else {}, tier,
                                valid=valid, error=problems)
        return cal.calibrate_label(label, calibration.get(f"{tier}:{row['item']}"))
    value = FieldPrediction(row["item"], row[f"{tier}_pred"], None, conf, None, None, None, valid, tier,
                            problems.split("+") if problems else [])
    return cal.calibrate_field(value, cal.field_calibration(calibration, tier, row["source"]))


def _passes(pred: LabelPrediction | FieldPrediction, thresholds: dict[str, Thresholds], tier: str,
            source: str | None) -> bool:
    if isinstance(pred, LabelPrediction):
        return bool(route({pred.task: pred}, {}, thresholds, tier, source).passed)
    return bool(route({}, {pred.field: pred}, thresholds, tier, source).passed)
