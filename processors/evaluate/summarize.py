"""Computing the summary of an evaluation (summary.py has its types)."""

from __future__ import annotations

import polars as pl

from processors import calibration as cal
from processors.evaluate.cascade import cascade_at_thresholds
from processors.evaluate.evaluation import Evaluation
from processors.evaluate.fitting import BOTH, calibrated_conf, fit, fit_rows, judged_rows
from processors.evaluate.outcomes import group_key, outcomes_by_task
from processors.evaluate.summary import (
    ALL_FIELDS,
    CalibrationSummary,
    CostRow,
    ItemSummary,
    Summary,
    ThresholdSummary,
    TierQuality,
)
from processors.routing import FIELDS_KEY, field_thresholds_key, is_fields_key
from processors.tasks.extract import field_metrics
from processors.tasks.label import label_metrics
from schemas.config import Config, TaskCalibration, Thresholds


def tier_quality(frame: pl.DataFrame, kind: str, pred_col: str, correct_col: str, **more: float | None) -> TierQuality:
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
    return tier_quality(frame, kind, "cascade_pred", "cascade_correct", **rates)


def _item_summary(frame: pl.DataFrame, kind: str, ev: Evaluation, chosen: pl.DataFrame | None,
                  linear_threshold: float | None) -> ItemSummary:
    both = "small" in ev.tiers and "large" in ev.tiers
    tiers = {tier: tier_quality(frame, kind, f"{tier}_pred", f"{tier}_correct") for tier in ev.tiers}
    linear = None
    if kind == "label" and frame["linear_conf"].is_not_null().any():
        linear = tier_quality(frame, kind, "linear_pred", "linear_correct", threshold=linear_threshold)
    return ItemSummary(len(frame), tiers.get("small"), tiers.get("large"), linear,
                       _cascade_quality(frame, kind) if both else None,
                       _cascade_quality(chosen, kind) if both and chosen is not None else None)


def _cost(ev: Evaluation, frame: pl.DataFrame, config: Config, chosen: bool) -> CostRow:
    """Tokens, cost per 1,000 documents and docs/s of the cascade on these outcome rows' documents (the
    small tier on every one, the large tier on the items escalated)."""
    o = frame
    if chosen:
        parts = [cascade_at_thresholds(f, k, ev) for k, f in outcomes_by_task(o).items()] if ev.thresholds else []
        o = pl.concat(parts) if parts else o
    docs = o.unique("example_id")
    n = len(docs)
    up = o.filter(pl.col("decided_by").is_in(["large", "review"]))
    small_tokens = int(docs["small_doc_tokens"].sum() or 0)
    small_seconds = float(docs["small_doc_seconds"].sum() or 0.0)
    large_tokens = int(up["large_tokens"].sum() or 0)
    large_seconds = float(up["large_seconds"].sum() or 0.0)
    return _cost_row(small_tokens, large_tokens, small_seconds + large_seconds, n, config,
                     docs_escalated=up["example_id"].n_unique() / n if n else float("nan"))


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


def _calibration(frame: pl.DataFrame, fitted_on: pl.DataFrame, key: str, tier: str,
                 ev: Evaluation) -> CalibrationSummary:
    """ECE on the judged rows before and after the calibration fitted on the fit rows."""
    ok = frame[f"{tier}_correct"].to_list()
    fitted = ev.calibration.get(f"{tier}:{key}", TaskCalibration())
    # Kept: its ECE after. Not kept: the default method's, to show it did not help.
    tried = fitted if fitted.method != "none" else fit(fitted_on, key, tier)
    in_sample = (frame["split"] == BOTH).all()
    return CalibrationSummary(
        n=len(frame), method=fitted.method if fitted.method != "none" or tried.method == "none"
        else f"none ({tried.method} did not help)", temperature=tried.temperature,
        ece_before=cal.ece(frame[f"{tier}_conf"].to_list(), ok),
        ece_after=cal.ece(calibrated_conf(frame, key, tier, tried), ok) if tried.method != "none" else float("nan"),
        after_on="in-sample" if in_sample else "judge half (fitted on the other)")


def with_source_fields(groups: dict[str, pl.DataFrame], thresholds: dict) -> dict[str, pl.DataFrame]:
    """The groups plus, for each source with its own field thresholds ('fields:<source>'), that source's
    field rows (calibrated on their own: fitting.fit_calibration)."""
    fields = groups.get(FIELDS_KEY)
    if fields is None:
        return groups
    own = {k: fields.filter(pl.col("source") == k.split(":", 1)[1]) for k in sorted(thresholds)
           if is_fields_key(k) and k != FIELDS_KEY}
    return {**groups, **own}


def summarize(ev: Evaluation, config: Config) -> Summary:
    """Metrics per task / field and tier, cost and speed per tier, calibration and thresholds; every
    figure on the judged rows (fitting.judged_rows)."""
    o = judged_rows(ev.outcomes)
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
        cost["cascade"] = _cost(ev, o, config, chosen=False)
        if ev.thresholds:
            cost["cascade_calibrated"] = _cost(ev, o, config, chosen=True)

    calibration: dict[str, CalibrationSummary] = {}
    fitted_on = with_source_fields(outcomes_by_task(fit_rows(ev.outcomes)), ev.thresholds)
    for key, frame in with_source_fields(outcomes_by_task(o), ev.thresholds).items():
        for tier in ev.tiers:
            f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
            g = fitted_on.get(key, f).filter(pl.col(f"{tier}_conf").is_not_null())
            if len(f):
                calibration[f"{tier}:{key}"] = _calibration(f, g, key, tier, ev)
    return Summary(
        n_docs=ev.n_docs, n_items=len(o), tiers=list(ev.tiers), tasks=tasks, fields=fields_, cost=cost,
        calibration=calibration,
        thresholds=ThresholdSummary(configured={k: _configured(config, k)
                                                for k in sorted({*outcomes_by_task(o), *ev.thresholds})},
                                    chosen=dict(ev.thresholds), operating_points=dict(ev.operating_points)),
        model_versions={t: r.model_version for t, r in ev.runs.items()},
        config_model_version=config.models.active,
        hosted_price_per_million_tokens=config.hosted_price_per_million_tokens,
        notes=ev.notes)


def _configured(config: Config, key: str) -> Thresholds:
    """The configured thresholds that route `key`'s items: a source's fields without their own ('fields:pdf')
    are routed by the fields' ('fields')."""
    if not is_fields_key(key):
        return config.thresholds_for(key)
    return config.thresholds_for(field_thresholds_key(config.thresholds, key.partition(":")[2] or None))
