"""Is the candidate better than the promoted version, and where does tier 0 pay? On held-out data.

The candidate runs with both tiers (processors/evaluate/): that gives its quality, calibration and
thresholds, and the per-item outcomes the tier-0 decision needs. The promoted version (or the base
model when none is promoted) runs the small tier only: the large tier is the same for both.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from processors.datasets import LabelledExample
from processors.evaluate import ALL_FIELDS, Evaluation, Summary, cascade_at_thresholds, evaluate, outcomes_by_task
from processors.evaluate.fitting import MIN_FIT_ITEMS, fit_tier0
from processors.routing import FIELDS_KEY, is_fields_key
from processors.tasks.extract import field_metrics
from processors.tasks.label import label_metrics
from schemas.config import Config, LabelTask
from schemas.versions import ModelVersion, apply_version, resolve, version_file

log = logging.getLogger(__name__)

# A candidate is refused when any task the promoted version answers is worse on held-out data by more than
# this (macro-F1; the fields' F1), and by more than the comparison's noise: NOISE_Z paired-bootstrap standard
# errors over the same held-out items (one-sided 95%). A new label set must not cost an old one, but a hundred
# held-out items of a 27-label task move macro-F1 by several points between two equally good adapters.
REGRESSION_TOLERANCE = 0.02
NOISE_Z = 1.64
BOOTSTRAP_SAMPLES = 300
# A label task's macro-F1 can hide one class falling away: on the shipped version's 79 held-out sentiment rows, a
# candidate's neutral recall fell 0.565 -> 0.348 (0.618 -> 0.342 on 400 unseen VADER texts) while its macro-F1
# stayed within the task's noise margin. So each label with at least MIN_LABEL_ROWS held-out rows is judged on its
# own recall too: refused when it falls by more than LABEL_TOLERANCE and by more than NOISE_Z standard errors.
# Several labels tested at 5 % each can refuse a candidate that is only noisy; the running version then stays
# (--force overrides), the safe way to err for a nightly that must not silently stop answering a class.
MIN_LABEL_ROWS = 20
LABEL_TOLERANCE = 0.15
# Examples per label for tier 0's learning curve in the version's report.
CURVE_PER_LABEL = (1, 2, 4, 8, 16, 32, 64, 128)


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


def _figures(kind: str, gold: list, predicted: list, correct: list) -> tuple[float, dict[str, float]]:
    """The figure promotion compares (a label task's macro-F1, the fields' F1 over present values) and, for a
    label task, each gold label's recall, from one count (the bootstrap scores hundreds of resamples)."""
    if kind == "label":
        metrics = label_metrics(gold, predicted)
        return metrics.macro_f1, metrics.label_recall
    return field_metrics(gold, predicted, correct).f1, {}


def label_recall_key(task: str, label: str) -> str:
    """The comparison's key for one label's recall ('sentiment=neutral'); a task's own key has no '='."""
    return f"{task}={label}"


def is_label_recall(key: str) -> bool:
    return "=" in key


def paired_comparison(candidate: pl.DataFrame, promoted: pl.DataFrame | None, seed: int = 0,
                      samples: int = BOOTSTRAP_SAMPLES) -> dict[str, float]:
    """The small tiers' figures for promotion, per task and 'fields' (macro-F1; fields: F1 over present values):
    '<key>.candidate' on every held-out row the candidate answered; where the promoted version answered the same
    rows, '<key>.promoted' and '<key>.noise', the standard error of the difference by a paired bootstrap over
    examples, both on exactly those rows. Every row, not only the judged half: neither small tier was fitted on
    the other half, so halving would only add noise. For each label with at least MIN_LABEL_ROWS paired rows,
    the same three figures of its recall under '<task>=<label>' (label_recall_key). candidate / promoted: each
    evaluation's outcomes."""
    import numpy as np

    keep = ["example_id", "kind", "item", "gold", "small_pred", "small_correct"]
    mine = candidate.filter(pl.col("small_correct").is_not_null()).select(keep)
    theirs = (promoted.filter(pl.col("small_correct").is_not_null()).select(keep) if promoted is not None
              else mine.clear())
    # sorted: the seeded bootstrap indexes rows, and a join keeps no order
    pairs = mine.join(theirs, on=["example_id", "kind", "item"], suffix="_promoted").sort(["example_id", "item"])
    paired = outcomes_by_task(pairs)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for key, frame in outcomes_by_task(mine).items():
        kind = "label" if key != FIELDS_KEY else "field"
        out[f"{key}.candidate"], _ = _figures(kind, frame["gold"].to_list(), frame["small_pred"].to_list(),
                                              frame["small_correct"].to_list())
        both = paired.get(key)
        if both is None or both.is_empty():
            continue
        gold = both["gold"].to_list()
        new, old = both["small_pred"].to_list(), both["small_pred_promoted"].to_list()
        right, right_before = both["small_correct"].to_list(), both["small_correct_promoted"].to_list()
        (ours, recall_new), (theirs_figure, recall_old) = (_figures(kind, gold, new, right),
                                                            _figures(kind, gold, old, right_before))
        if math.isnan(ours) or math.isnan(theirs_figure):  # e.g. fields with no value present nor given
            out.pop(f"{key}.candidate")  # not comparable: neither a regression nor a task only one answers
            continue
        out[f"{key}.candidate"], out[f"{key}.promoted"] = ours, theirs_figure  # on the rows both answered
        examples = both["example_id"].unique(maintain_order=True).to_list()
        rows: dict[str, list[int]] = {ex: [] for ex in examples}
        for i, ex in enumerate(both["example_id"].to_list()):
            rows[ex].append(i)  # an example's fields are resampled together
        counts = Counter(gold) if kind == "label" else Counter()
        labels = sorted(label for label, n in counts.items() if n >= MIN_LABEL_ROWS)
        for label in labels:
            out[f"{label_recall_key(key, label)}.candidate"] = recall_new[label]
            out[f"{label_recall_key(key, label)}.promoted"] = recall_old[label]
        diffs: list[float] = []
        label_diffs: dict[str, list[float]] = {label: [] for label in labels}
        for _ in range(samples):
            idx = [i for j in rng.integers(0, len(examples), len(examples)) for i in rows[examples[j]]]
            g = [gold[i] for i in idx]
            n, o = [new[i] for i in idx], [old[i] for i in idx]
            (figure_n, recall_n), (figure_o, recall_o) = (_figures(kind, g, n, [right[i] for i in idx]),
                                                          _figures(kind, g, o, [right_before[i] for i in idx]))
            diff = figure_n - figure_o
            if not math.isnan(diff):
                diffs.append(diff)
            for label in labels:  # the same resamples: a label's recall moves with its task's figure
                if label in recall_n:  # the resample holds rows of this label
                    label_diffs[label].append(recall_n[label] - recall_o[label])
        out[f"{key}.noise"] = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
        for label, moved in label_diffs.items():
            out[f"{label_recall_key(key, label)}.noise"] = float(np.std(moved, ddof=1)) if len(moved) > 1 else 0.0
    return {k: v for k, v in out.items() if not math.isnan(v)}


def regression_margin(comparison: dict[str, float], key: str, tolerance: float = REGRESSION_TOLERANCE) -> float:
    """How far below the promoted version's figure `key`'s may fall before it is a regression: the tolerance
    (LABEL_TOLERANCE for one label's recall), or NOISE_Z standard errors of the difference where that is more."""
    floor = LABEL_TOLERANCE if is_label_recall(key) else tolerance
    return max(floor, NOISE_Z * comparison.get(f"{key}.noise", 0.0))


def decide_promotion(comparison: dict[str, float], served: Iterable[str] = (),
                     tolerance: float = REGRESSION_TOLERANCE) -> tuple[bool, str]:
    """Promote a candidate (pure) when, on the same held-out rows (`comparison`, from paired_comparison):
    - every label task the promoted version learned (`served`) has held-out labels to be judged on;
    - no task both answer, nor the fields, is worse than the promoted version by more than a margin:
      `tolerance`, or NOISE_Z standard errors of the difference where that is more;
    - no label judged on its own ('<task>=<label>') lost recall by more than LABEL_TOLERANCE and NOISE_Z
      standard errors;
    - and the candidate is better on average over what both answer, or answers a task the promoted one cannot."""
    def by(suffix: str, recalls: bool = False) -> dict[str, float]:
        return {k.removesuffix(suffix): v for k, v in comparison.items()
                if k.endswith(suffix) and is_label_recall(k) == recalls}
    recall_now, recall_before = by(".candidate", True), by(".promoted", True)
    mine, theirs = by(".candidate"), by(".promoted")
    if not mine:
        return False, "the candidate has no held-out score"
    unjudged = sorted(set(served) - set(mine))
    if unjudged:
        return False, (f"no held-out example labels {', '.join(unjudged)}, which the promoted version learned: "
                       "it cannot be judged (add labelled examples with --eval, or --force)")
    both = sorted(set(mine) & set(theirs))
    margin = {k: regression_margin(comparison, k, tolerance) for k in both}
    worse = [f"{k} {mine[k]:.3f} < promoted {theirs[k]:.3f} - {margin[k]:.3f}" for k in both
             if mine[k] < theirs[k] - margin[k]]
    for key in sorted(set(recall_now) & set(recall_before)):
        fell = regression_margin(comparison, key)
        if recall_now[key] < recall_before[key] - fell:
            worse.append(f"{key} recall {recall_now[key]:.3f} < promoted {recall_before[key]:.3f} - {fell:.3f}")
    if worse:
        return False, f"worse than the promoted version on held-out data: {'; '.join(worse)}"
    if not both:
        return True, (f"nothing the promoted version answered to compare with; held-out score "
                      f"{sum(mine.values()) / len(mine):.3f}")
    ours, before = (sum(d[k] for k in both) / len(both) for d in (mine, theirs))
    added = sorted(set(mine) - set(theirs) - set(served))
    if ours > before:
        return True, f"held-out score {ours:.3f} > promoted {before:.3f} on {', '.join(both)}"
    if added:
        return True, (f"adds {', '.join(added)}; held-out score {ours:.3f} vs promoted {before:.3f} on "
                      f"{', '.join(both)}, none worse beyond its margin")
    return False, f"held-out score {ours:.3f} <= promoted {before:.3f} on {', '.join(both)}"


def tier0_learning_curve(task: LabelTask, train: list[LabelledExample], held: list[LabelledExample],
                         seed: int = 0) -> dict[str, float]:
    """Tier 0's held-out macro-F1 fitted on k training examples per label (nested samples: k = 1, 2, 4, ...,
    as far as the data goes) and on all of them: '<task>.tier0@<k>', '<task>.tier0@all' and
    '<task>.examples_per_label' (the mean over its labels). Few examples per label is where tier 0 and
    few-shot carry a new label set; the version's report sets this beside the adapter's figure."""
    from processors.linear import LinearLabeler

    rows = [(ex.text, ex.labels[task.name]) for ex in train if ex.labels.get(task.name) in task.labels]
    judged = [(ex.text, ex.labels[task.name]) for ex in held
              if ex.labels.get(task.name) in task.labels and ex.source in task.sources]
    by_label: dict[str, list[str]] = {}
    for text, gold in rows:
        by_label.setdefault(gold, []).append(text)
    if len(by_label) < 2 or not judged:
        return {}
    rng = random.Random(seed)
    for texts in by_label.values():
        rng.shuffle(texts)  # each k takes the first k: the samples are nested

    def macro_f1(pairs: list[tuple[str, str]]) -> float:
        try:
            labeler = LinearLabeler.fit([t for t, _ in pairs], [g for _, g in pairs], seed)
        except ValueError:  # e.g. too few texts for the character n-grams' min_df: no point, not a failed run
            return float("nan")
        predicted = [p.label for p in labeler.predict(task, [t for t, _ in judged])]
        return label_metrics([g for _, g in judged], predicted).macro_f1

    curve: dict[str, float] = {f"{task.name}.examples_per_label": len(rows) / len(by_label)}
    for k in CURVE_PER_LABEL:
        if k >= max(len(texts) for texts in by_label.values()):
            break
        curve[f"{task.name}.tier0@{k}"] = macro_f1([(t, gold) for gold, texts in by_label.items() for t in texts[:k]])
    curve[f"{task.name}.tier0@all"] = macro_f1(rows)
    return {k: v for k, v in curve.items() if not math.isnan(v)}


def learning_curve_markdown(curve: dict[str, float], comparison: dict[str, float]) -> str:
    """The report's section: per label task, tier 0's macro-F1 by examples per label, beside the adapter's
    (comparison: paired_comparison's figures, on every held-out row, as the curve)."""
    tasks = sorted({k.split(".", 1)[0] for k in curve})
    if not tasks:
        return ""
    lines = ["## Learning curve (held-out macro-F1 by training examples per label)", "",
             "Tier 0 (TF-IDF) refitted on k examples per label; the small tier (this version's adapter) was "
             "trained on all of them (on from the promoted version's adapter, when it started from one): tier 0 "
             "on the task's held-out examples with a label in its set, the small "
             "tier on the rows both versions answered (promotion's figure). Where tier 0 alone is as good as the "
             "cascade (on the fit half of at least 30 items), its threshold is 0 and it decides the task.",
             "",
             "| task | " + " | ".join(f"k={k}" for k in CURVE_PER_LABEL) + " | tier 0, all | examples per label | "
             "small tier, all |", "|---|" + "---|" * (len(CURVE_PER_LABEL) + 3)]
    for task in tasks:
        cells = [f"{curve[f'{task}.tier0@{k}']:.3f}" if f"{task}.tier0@{k}" in curve else "–" for k in CURVE_PER_LABEL]
        small = comparison.get(f"{task}.candidate")
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {curve.get(f'{task}.tier0@all', float('nan')):.3f} | "
                     f"{curve.get(f'{task}.examples_per_label', float('nan')):.1f} | "
                     + (f"{small:.3f}" if small is not None else "–") + " |")
    return "\n".join(lines) + "\n"


def compare_versions(config: Config, version: ModelVersion, folder: Path, held: list[LabelledExample],
                     registry: str, served: Iterable[str] = ()) -> dict:
    """Metrics, calibration, thresholds, tier-0 thresholds and the promotion decision for a candidate.
    served: the label tasks the promoted version learned (each must be judged)."""
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
    metrics["promotion"] = paired_comparison(ev.outcomes, promoted_ev.outcomes)
    better, why = decide_promotion(metrics["promotion"], served)
    kept = _linear_decisions(ev, version, folder, held, metrics)
    sizes = {key: len(frame) for key, frame in outcomes_by_task(ev.outcomes).items()}
    enough = {key for key, n in sizes.items() if n >= MIN_FIT_ITEMS}
    if FIELDS_KEY in enough:  # a source's own field thresholds were fitted only on enough of its rows
        enough |= {key for key in ev.thresholds if is_fields_key(key)}
    return {"metrics": metrics,
            "calibration": {k: v for k, v in ev.calibration.items() if k.split(":", 1)[1] in enough},
            "thresholds": {k: v for k, v in ev.thresholds.items() if k in enough},
            "linear_kept": {k: v for k, v in kept.items() if k in enough},
            "better": better, "why": why, "evaluation": ev}


def _linear_decisions(ev: Evaluation, version: ModelVersion, folder: Path, held: list[LabelledExample],
                      metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Tier 0's threshold per label task the candidate's tier 0 serves, by evaluate's own rule (fit_tier0: chosen
    on the fit half of the held-out rows, its figures measured on the other half). Dropped where it costs quality."""
    from processors.linear import LinearLabeler

    texts = {ex.example_id: ex.text for ex in held}
    label_tasks = {t.name: t for t in ev.config.tasks}
    groups = outcomes_by_task(ev.outcomes)
    kept: dict[str, float] = {}
    stats: dict[str, float] = {}
    for task, tier0 in version.linear.items():
        if task not in groups or is_fields_key(task) or task not in ev.thresholds:
            continue
        frame = cascade_at_thresholds(groups[task], task, ev).filter(pl.col("cascade_correct").is_not_null())
        if frame.is_empty():
            continue
        labeler = LinearLabeler.load(version_file(folder, version, f"linear.{task}.path", tier0.path))
        # as at run time: the labeler's answer over the task's label set
        preds = labeler.predict(label_tasks[task], [texts[i] for i in frame["example_id"].to_list()])
        fitted = fit_tier0(frame.with_columns(
            pl.Series("linear_conf", [p.confidence for p in preds], dtype=pl.Float64),
            pl.Series("linear_correct", [p.label == g for p, g in zip(preds, frame["gold"].to_list(), strict=True)],
                      dtype=pl.Boolean)))
        if fitted is None:
            log.info("tier 0 %s: fewer than %d items to fit on: dropped", task, MIN_FIT_ITEMS)
            continue
        stats.update({f"{task}.linear_accuracy": fitted.accuracy, f"{task}.linear_share": fitted.share,
                      f"{task}.quality_with_linear": fitted.quality_with,
                      f"{task}.quality_without_linear": fitted.quality_without,
                      f"{task}.linear_judged_items": fitted.judged_items})
        if fitted.threshold is not None:
            kept[task] = fitted.threshold
        log.info("tier 0 %s: %s", task, f"kept at >= {fitted.threshold} ({fitted.share:.0%} of judged items)"
                 if fitted.threshold is not None else "dropped")
    metrics["linear"] = stats
    return kept
