"""The outcome rows: one per scored item (an example's labelled task or known field), every tier side by side."""

from __future__ import annotations

import json

import polars as pl

from processors.datasets import LabelledExample
from processors.routing import FIELDS_KEY
from processors.tasks.extract import field_match
from schemas.config import Config, FieldSpec
from schemas.records import Document, FieldPrediction, LabelPrediction

OUTCOME_SCHEMA = {
    "example_id": pl.String, "source": pl.String, "kind": pl.String, "item": pl.String,
    "field_type": pl.String, "gold": pl.String,
    "small_pred": pl.String, "small_conf": pl.Float64, "small_valid": pl.Boolean, "small_correct": pl.Boolean,
    "small_dist": pl.String, "small_problems": pl.String,
    "large_pred": pl.String, "large_conf": pl.Float64, "large_valid": pl.Boolean, "large_correct": pl.Boolean,
    "large_dist": pl.String, "large_problems": pl.String,
    "linear_pred": pl.String, "linear_conf": pl.Float64, "linear_correct": pl.Boolean,
    "cascade_pred": pl.String, "decided_by": pl.String, "cascade_correct": pl.Boolean,
    "small_doc_tokens": pl.Int64, "small_doc_seconds": pl.Float64,
    "large_tokens": pl.Int64, "large_seconds": pl.Float64,
    "split": pl.String,  # fit | judge | both (processors/evaluate/fitting.py: assign_split)
}


def with_outcome_schema(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Stored outcome rows in today's OUTCOME_SCHEMA: the columns an older evaluation lacks added as null, cast."""
    outcomes = outcomes.with_columns([pl.lit(None, dtype).alias(name) for name, dtype in OUTCOME_SCHEMA.items()
                                      if name not in outcomes.columns]).select(list(OUTCOME_SCHEMA))
    return outcomes.cast(OUTCOME_SCHEMA)  # type: ignore[arg-type]


def scored_items(ex: LabelledExample, cfg: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(label tasks, fields) this example is scored on."""
    tasks = tuple(t.name for t in cfg.tasks if ex.source in t.sources and t.name in ex.labels)
    fields = tuple(s.name for s in cfg.fields.get(ex.source, []) if ex.field_value(s.name)[0])
    return tasks, fields


def doc_tokens(doc: Document, tier: str) -> int:
    """Prompt + completion tokens the tier spent on the document."""
    u = doc.usage.get(tier)
    return (u.prompt_tokens + u.completion_tokens) if u else 0


def group_key(kind: str, item: str) -> str:
    """The calibration / threshold group of an item: its task, or 'fields' for every field."""
    return item if kind == "label" else FIELDS_KEY


def outcomes_by_task(outcomes: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Calibration / threshold groups: one per label task, and all fields together ('fields')."""
    out: dict[str, pl.DataFrame] = {}
    for task in outcomes.filter(pl.col("kind") == "label")["item"].unique(maintain_order=True).to_list():
        out[task] = outcomes.filter((pl.col("kind") == "label") & (pl.col("item") == task))
    fields = outcomes.filter(pl.col("kind") == "field")
    if len(fields):
        out[FIELDS_KEY] = fields
    return out


def _label_cols(pred: LabelPrediction | None, gold: str, tier: str) -> dict:
    if pred is None:
        return {}
    return {f"{tier}_pred": pred.label, f"{tier}_conf": float(pred.confidence),
            f"{tier}_valid": bool(pred.valid and pred.label is not None), f"{tier}_correct": pred.label == gold,
            f"{tier}_dist": json.dumps(pred.probabilities, sort_keys=True), f"{tier}_problems": pred.error}


def _field_cols(pred: FieldPrediction | None, spec: FieldSpec, gold: str | None, tier: str) -> dict:
    if pred is None:
        return {}
    return {f"{tier}_pred": pred.value, f"{tier}_conf": float(pred.confidence), f"{tier}_valid": bool(pred.valid),
            f"{tier}_correct": field_match(spec.type, gold, pred.value),
            f"{tier}_problems": "+".join(pred.problems) or None}


def build_outcomes(plan: list[tuple[Config, list[LabelledExample]]], docs: dict[str, dict[str, Document]],
                   linear: dict[tuple[str, str], LabelPrediction],
                   item_usage: dict[tuple[str, str], tuple[int, float]], tiers: tuple[str, ...]) -> pl.DataFrame:
    """One row per scored item: gold, each tier's answer and cost. The cascade columns are left empty
    (processors.evaluate.cascade fills them)."""
    rows = []
    for cfg, members in plan:
        specs = {s.name: s for specs in cfg.fields.values() for s in specs}
        for ex in members:
            small = docs["small"].get(ex.example_id) if "small" in tiers else None
            large = docs["large"].get(ex.example_id) if "large" in tiers else None
            tasks, fields = scored_items(ex, cfg)
            base = {"example_id": ex.example_id, "source": ex.source,
                    "small_doc_tokens": doc_tokens(small, "small") if small else None,
                    "small_doc_seconds": small.usage["small"].seconds if small and "small" in small.usage else None}
            for task in tasks:
                gold = ex.labels[task]
                row = {**base, "kind": "label", "item": task, "gold": gold}
                row.update(_label_cols(small.labels.get(task) if small else None, gold, "small"))
                row.update(_label_cols(large.labels.get(task) if large else None, gold, "large"))
                tier0 = linear.get((ex.example_id, task))
                if tier0 is not None:
                    row.update(linear_pred=tier0.label, linear_conf=tier0.confidence,
                               linear_correct=tier0.label == gold)
                rows.append(_with_usage(row, task, item_usage))
            for name in fields:
                _, gold = ex.field_value(name)
                spec = specs[name]
                row = {**base, "kind": "field", "item": name, "field_type": spec.type, "gold": gold}
                row.update(_field_cols(small.fields.get(name) if small else None, spec, gold, "small"))
                row.update(_field_cols(large.fields.get(name) if large else None, spec, gold, "large"))
                rows.append(_with_usage(row, f"field:{name}", item_usage))
    return pl.DataFrame(rows, schema=OUTCOME_SCHEMA)


def _with_usage(row: dict, item: str, item_usage: dict[tuple[str, str], tuple[int, float]]) -> dict:
    row["large_tokens"], row["large_seconds"] = item_usage.get((row["example_id"], item), (None, None))
    return row
