"""Is the candidate better than the promoted version, and where does tier 0 pay? On held-out data.

The candidate runs with both tiers (processors/evaluate/): that gives its quality, calibration and
thresholds, and the per-item outcomes the tier-0 decision needs. The promoted version (or the base
model when none is promoted) runs the small tier only: the large tier is the same for both.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import polars as pl

from processors.datasets import LabelledExample
from processors.evaluate import ALL_FIELDS, Evaluation, Summary, cascade_at_thresholds, evaluate, outcomes_by_task
from processors.routing import FIELDS_KEY
from schemas.config import Config
from schemas.versions import ModelVersion, apply_version, resolve, version_file

log = logging.getLogger(__name__)

# Thresholds, calibration and tier 0 are fitted per task only on at least this many held-out items;
# with fewer, the configuration's thresholds stand and tier 0 is not used for the task.
MIN_FIT_ITEMS = 30

# Tier 0 keeps a task only if the cascade's quality with it is at least the quality without it,
# less this tolerance (half a point: one item in 200), while it takes items off the language models.
LINEAR_TOLERANCE = 0.005
LINEAR_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


def flat_metrics(summary: Summary, tier: str) -> dict[str, float]:
    """'<task>.accuracy', '<task>.macro_f1', 'fields.f1', ... and 'score' for one row of the
    summary (a tier, 'cascade' or 'cascade_calibrated')."""
    out: dict[str, float] = {}
    for task, entry in summary.tasks.items():
        row = entry.row(tier)
        if row is None:
            continue
        for metric in ("accuracy", "macro_f1"):
            value = getattr(row, metric)
            if value is not None and not math.isnan(value):
                out[f"{task}.{metric}"] = float(value)
        if tier.startswith("cascade") and row.escalation_rate is not None:
            out[f"{task}.escalation_rate"] = float(row.escalation_rate)
    every = summary.fields.get(ALL_FIELDS)
    row = every.row(tier) if every is not None else None
    for metric in ("f1", "precision", "recall", "absent_accuracy"):
        value = getattr(row, metric) if row is not None else None
        if value is not None and not math.isnan(value):
            out[f"fields.{metric}"] = float(value)
    out["score"] = quality_score(out)
    return out


def quality_score(metrics: dict[str, float]) -> float:
    """One number to compare versions: the mean of every task's macro-F1 and the fields' F1 over present values."""
    parts = [v for k, v in metrics.items() if k.endswith(".macro_f1") or k == "fields.f1"]
    return sum(parts) / len(parts) if parts else float("nan")


def decide_promotion(candidate: float, promoted: float | None, min_gain: float = 0.0) -> tuple[bool, str]:
    """Promote when the candidate's held-out score beats the promoted version's (pure)."""
    if math.isnan(candidate):
        return False, "the candidate has no held-out score"
    if promoted is None or math.isnan(promoted):
        return True, f"no promoted version to beat; held-out score {candidate:.3f}"
    if candidate > promoted + min_gain:
        return True, f"held-out score {candidate:.3f} > promoted {promoted:.3f}"
    return False, f"held-out score {candidate:.3f} <= promoted {promoted:.3f}"


def linear_threshold(linear_conf: list[float], linear_correct: list[bool], cascade_correct: list[bool],
                     tolerance: float = LINEAR_TOLERANCE) -> tuple[float | None, float, float, float]:
    """The threshold that takes the most items off the language models at equal quality (pure).

    Returns (threshold or None, share decided by tier 0, quality with tier 0, quality without).
    """
    n = len(cascade_correct)
    if not n:
        return None, 0.0, float("nan"), float("nan")
    base = sum(cascade_correct) / n
    best: tuple[float | None, float, float] = (None, 0.0, base)
    for t in LINEAR_GRID:
        take = [c >= t for c in linear_conf]
        quality = sum(lc if k else cc for k, lc, cc in zip(take, linear_correct, cascade_correct, strict=True)) / n
        share = sum(take) / n
        if quality >= base - tolerance and share > best[1]:
            best = (t, share, quality)
    return best[0], best[1], best[2], base


def compare_versions(config: Config, version: ModelVersion, folder: Path, held: list[LabelledExample],
                     registry: str) -> dict:
    """Metrics, calibration, thresholds, tier-0 thresholds and the promotion decision for a candidate."""
    candidate_cfg = apply_version(config, version, folder)
    candidate_cfg.linear = {}  # the language models alone first; tier 0 is judged on top of them
    ev = evaluate(candidate_cfg, held, tiers=("small", "large"), stage="finetune candidate")
    metrics = {"candidate_small": flat_metrics(ev.summary, "small"),
               "large": flat_metrics(ev.summary, "large"),
               "candidate_cascade": flat_metrics(ev.summary, "cascade_calibrated")}
    found = resolve(registry, None)
    promoted_cfg = apply_version(config, *found) if found else config.model_copy(deep=True)
    promoted_cfg.linear = {}
    promoted_ev = evaluate(promoted_cfg, held, tiers=("small",), stage="finetune promoted")
    metrics["promoted_small"] = flat_metrics(promoted_ev.summary, "small")
    better, why = decide_promotion(metrics["candidate_small"]["score"], metrics["promoted_small"]["score"])
    kept = _linear_decisions(ev, version, folder, held, metrics)
    sizes = {key: len(frame) for key, frame in outcomes_by_task(ev.outcomes).items()}
    enough = {key for key, n in sizes.items() if n >= MIN_FIT_ITEMS}
    return {"metrics": metrics,
            "calibration": {k: v for k, v in ev.calibration.items() if k.split(":", 1)[1] in enough},
            "thresholds": {k: v for k, v in ev.thresholds.items() if k in enough},
            "linear_kept": {k: v for k, v in kept.items() if k in enough},
            "better": better, "why": why, "evaluation": ev}


def _linear_decisions(ev: Evaluation, version: ModelVersion, folder: Path, held: list[LabelledExample],
                      metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    from processors.linear import LinearLabeler

    texts = {ex.example_id: ex.text for ex in held}
    label_tasks = {t.name: t for t in ev.config.tasks}
    groups = outcomes_by_task(ev.outcomes)
    kept: dict[str, float] = {}
    stats: dict[str, float] = {}
    for task, tier0 in version.linear.items():
        if task not in groups or task == FIELDS_KEY or task not in ev.thresholds:
            continue
        frame = cascade_at_thresholds(groups[task], task, ev).filter(pl.col("cascade_correct").is_not_null())
        if frame.is_empty():
            continue
        labeler = LinearLabeler.load(version_file(folder, version, f"linear.{task}.path", tier0.path))
        # as at run time: the labeler's answer over the task's label set
        preds = labeler.predict(label_tasks[task], [texts[i] for i in frame["example_id"].to_list()])
        conf = [p.confidence for p in preds]
        correct = [p.label == g for p, g in zip(preds, frame["gold"].to_list(), strict=True)]
        threshold, share, with_t0, without = linear_threshold(conf, correct, frame["cascade_correct"].to_list())
        stats.update({f"{task}.linear_accuracy": sum(correct) / len(correct), f"{task}.linear_share": share,
                      f"{task}.quality_with_linear": with_t0, f"{task}.quality_without_linear": without})
        if threshold is not None:
            kept[task] = threshold
        log.info("tier 0 %s: %s", task, f"kept at >= {threshold} ({share:.0%} of items)" if threshold else "dropped")
    metrics["linear"] = stats
    return kept
