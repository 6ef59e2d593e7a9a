"""Calibration and thresholds fitted on one half of the examples; the other half judges them.

`assign_split` marks each outcome row `fit` or `judge` by its example (a deterministic half by id), so
no figure in the report or in a version's metrics is measured on the items its thresholds were chosen
on. Too few examples to halve: both on all of them (`both`), and the evaluation's notes say so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from processors import calibration as cal
from processors.datasets import LabelledExample, split
from processors.evaluate.outcomes import outcomes_by_task
from processors.routing import FIELDS_KEY, fields_key, is_fields_key
from schemas.config import TaskCalibration, Thresholds

if TYPE_CHECKING:
    from processors.evaluate.evaluation import Evaluation


FIT, JUDGE, BOTH = "fit", "judge", "both"
# A source's fields get their own thresholds ('fields:<source>') when the fit rows hold at least this many of
# its field values and another source's too. Stop 30's invoice candidate, fitted on both together, escalated 11 %
# of the judged fields for the same F1 the PDF fields reached alone at a lower threshold (0.337).
MIN_SOURCE_FIELD_ROWS = 40
MIN_SPLIT_EXAMPLES = 40  # fewer examples than this are not halved
SPLIT_SEED = 11
# Thresholds, calibration and tier 0 are fitted per task only on at least this many items; with fewer, the
# configuration's thresholds stand (and fine-tuning does not use tier 0 for the task).
MIN_FIT_ITEMS = 30
# Tier 0 keeps a task only if the cascade's quality with it on the fit rows is at least the quality without it,
# less this tolerance, while it takes items off the language models. Stop 44 allowed half a point (one item in
# 200): intent's tier 0 then cost 1 judged item of 388, and the cascade fell below the small tier alone. 0: tier 0
# buys speed only where it costs nothing measured.
LINEAR_TOLERANCE = 0.0
# 0: tier 0 decides every item of the task. With few examples per label, TF-IDF can beat a new adapter (and the
# large tier) on a new label set; then it carries the task until a later version's adapter does better.
LINEAR_GRID = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
# A tier-0 threshold no probability reaches: the task's tier 0 decides nothing (a later fit may bring it back).
TIER0_DECIDES_NOTHING = 1.01


def assign_split(outcomes: pl.DataFrame) -> pl.DataFrame:
    """The outcome rows with `split`: half of the examples (by id, stable when rows are added) fit, the
    other half judge; every row `both` when there are fewer than MIN_SPLIT_EXAMPLES examples."""
    ids = outcomes["example_id"].unique(maintain_order=True).to_list()
    if len(ids) < MIN_SPLIT_EXAMPLES:
        return outcomes.with_columns(pl.lit(BOTH).alias("split"))
    first, _ = split([LabelledExample(i, "") for i in ids], 0.5, seed=SPLIT_SEED)
    fitting = {ex.example_id for ex in first}
    return outcomes.with_columns(
        pl.when(pl.col("example_id").is_in(list(fitting))).then(pl.lit(FIT)).otherwise(pl.lit(JUDGE)).alias("split"))


def fit_rows(outcomes: pl.DataFrame) -> pl.DataFrame:
    """The rows calibration and thresholds are fitted on."""
    return outcomes.filter(pl.col("split") != JUDGE)


def judged_rows(outcomes: pl.DataFrame) -> pl.DataFrame:
    """The rows every reported figure is measured on."""
    return outcomes.filter(pl.col("split") != FIT)


def split_note(outcomes: pl.DataFrame) -> str:
    """What the report says about the split."""
    n_fit = fit_rows(outcomes)["example_id"].n_unique()
    n_judge = judged_rows(outcomes)["example_id"].n_unique()
    if (outcomes["split"] == BOTH).all():
        return (f"calibration and thresholds were fitted on the same {n_fit} examples the figures are measured on "
                f"(fewer than {MIN_SPLIT_EXAMPLES}: too few to halve), so the cascade figures are optimistic")
    return (f"calibration and thresholds were fitted on {n_fit} examples; every quality figure below is measured on "
            f"the other {n_judge}")


def fit(frame: pl.DataFrame, key: str, tier: str, method: str | None = None) -> TaskCalibration:
    """Temperature for label tasks, isotonic for fields (or the method asked for)."""
    if is_fields_key(key) or method == "isotonic":
        return cal.fit_isotonic(frame[f"{tier}_conf"].to_list(), frame[f"{tier}_correct"].to_list())
    dists = [json.loads(d) if d else {} for d in frame[f"{tier}_dist"].to_list()]
    return cal.fit_temperature(dists, frame["gold"].to_list())


def calibrated_conf(frame: pl.DataFrame, key: str, tier: str, calibration: TaskCalibration | None) -> list[float]:
    """The tier's confidences in these outcome rows, calibrated (invalid labels stay 0)."""
    conf = frame[f"{tier}_conf"].to_list()
    if calibration is None or calibration.method == "none":
        return [float(c) for c in conf]
    if is_fields_key(key) or calibration.method == "isotonic":
        return [cal.apply_confidence(float(c), calibration) for c in conf]
    out = []
    for dist, pred, c in zip(frame[f"{tier}_dist"].to_list(), frame[f"{tier}_pred"].to_list(), conf, strict=True):
        d = json.loads(dist) if dist else {}
        out.append(cal.apply_label(d, calibration).get(pred, float(c)) if d and pred is not None else float(c))
    return out


def fit_calibration(evaluation: Evaluation) -> dict[str, TaskCalibration]:
    """'<tier>:<task>', '<tier>:fields' and '<tier>:fields:<source>' calibrations, fitted on the raw outcomes.

    Label tasks try temperature scaling, then isotonic on the top label's probability; fields use
    isotonic. When the data is large enough to measure on held-out halves, the method with the lowest
    held-out expected calibration error is kept, and only if it beats no calibration (else a note says
    so): a noisy fit on a small set never makes routing worse. Small sets get the default fit.
    A source with its own field thresholds (fields_by_source) gets its own field calibration too, 'none'
    included (stored, so its fields do not fall back to the shared map), so a row's confidence reads as
    the chance it is right for that kind of document: in stop 34's invoice candidate the shared map read a
    PDF value at raw 0.7 as 0.73, the PDFs' own as 0.92 (tickets' 0.80). Routing moves little with it (a
    source's thresholds were already its own; only ties between a map's steps differ): 0 and 7 of 316 judged
    values on the two invoice candidates measured (README, Benchmarks).
    """
    out = {}
    groups = outcomes_by_task(fit_rows(evaluation.outcomes))
    for key, frame in [*groups.items(), *fields_by_source(groups.get(FIELDS_KEY)).items()]:
        for tier in evaluation.tiers:
            f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
            kept, why = _best_calibration(f, key, tier)
            if kept.method != "none" or key != FIELDS_KEY and is_fields_key(key):
                out[f"{tier}:{key}"] = kept
            elif why and why not in evaluation.notes:
                evaluation.notes.append(why)
    return out


def _best_calibration(f: pl.DataFrame, key: str, tier: str) -> tuple[TaskCalibration, str]:
    ok = f[f"{tier}_correct"].to_list()
    before = cal.ece(f[f"{tier}_conf"].to_list(), ok)
    tried = []
    for method in ([None] if is_fields_key(key) else [None, "isotonic"]):
        fitted = fit(f, key, tier, method)
        if fitted.method == "none":
            continue
        after, how = cross_fitted(f, key, tier, method)
        if how != "held-out halves":
            return fitted, ""  # too few items to judge on held-out data: the default fit
        tried.append((cal.ece(after, ok), fitted))
    better = [(e, c) for e, c in tried if e < before]
    if better:
        return min(better, key=lambda ec: ec[0])[1], ""
    if not tried:
        return TaskCalibration(), ""
    return TaskCalibration(), (f"{tier}:{key}: no calibration kept ({', '.join(c.method for _, c in tried)} did not "
                               f"lower held-out ECE below {before:.3f})")


def choose_thresholds(evaluation: Evaluation, calibration: dict[str, TaskCalibration] | None = None, *,
                      target_escalation: float | None = None, target_quality_gap: float | None = None,
                      ) -> tuple[dict[str, Thresholds], dict[str, cal.OperatingPoint]]:
    """Thresholds per task (and 'fields') on the calibrated confidences of the fit rows; needs both tiers'
    outcomes. Fields are chosen on F1 over present values."""
    if "large" not in evaluation.tiers or "small" not in evaluation.tiers:
        raise ValueError("choosing thresholds needs the small and the large tier's outcomes")
    calibration = evaluation.calibration if calibration is None else calibration
    thresholds, points = {}, {}
    groups = outcomes_by_task(fit_rows(evaluation.outcomes))
    for key, frame in [*groups.items(), *fields_by_source(groups.get(FIELDS_KEY)).items()]:
        s_conf = calibrated_conf(frame, key, "small", cal.calibration_of(calibration, "small", key))
        l_conf = calibrated_conf(frame, key, "large", cal.calibration_of(calibration, "large", key))
        thresholds[key], points[key] = cal.choose_threshold(
            s_conf, [not v for v in frame["small_valid"].to_list()], frame["small_correct"].to_list(),
            frame["large_correct"].to_list(), l_conf, target_escalation=target_escalation,
            target_quality_gap=target_quality_gap, quality=cascade_quality(frame, key))
    return thresholds, points


def fields_by_source(fields: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    """The field rows per source ('fields:<source>'), for sources with MIN_SOURCE_FIELD_ROWS of them; none
    unless two sources have that many (one source's own thresholds would be the shared ones)."""
    if fields is None:
        return {}
    out = {fields_key(source): frame for (source,), frame in fields.group_by(["source"], maintain_order=True)
           if source is not None and len(frame) >= MIN_SOURCE_FIELD_ROWS}
    return out if len(out) > 1 else {}


def cascade_quality(frame: pl.DataFrame, key: str) -> cal.Quality | None:
    """How a cascade over these rows is judged: accuracy for a label task (None: the default), F1 over
    present values for fields."""
    if not is_fields_key(key):
        return None

    def given(col: str) -> list[bool]:
        return [v is not None and v.strip() != "" for v in frame[col].to_list()]
    return cal.field_f1_quality(given("gold"), given("small_pred"), frame["small_correct"].to_list(),
                                given("large_pred"), frame["large_correct"].to_list())


def cross_fitted(frame: pl.DataFrame, key: str, tier: str, method: str | None = None) -> tuple[list[float], str]:
    """Calibrated confidences where each half of the examples is calibrated by a fit on the other half
    (an honest 'after'); too few items for halves: fitted on all (in-sample), and said so."""
    ids = frame["example_id"].to_list()
    fake = [LabelledExample(i, "") for i in dict.fromkeys(ids)]
    first, second = split(fake, 0.5, seed=7)
    half = {ex.example_id for ex in first}
    mask = pl.Series([i in half for i in ids])
    a, b = frame.filter(mask), frame.filter(~mask)
    if min(len(a), len(b)) < cal.MIN_ITEMS:
        return calibrated_conf(frame, key, tier, fit(frame, key, tier, method)), "in-sample"
    conf_a = calibrated_conf(a, key, tier, fit(b, key, tier, method))
    conf_b = calibrated_conf(b, key, tier, fit(a, key, tier, method))
    it_a, it_b = iter(conf_a), iter(conf_b)
    return [next(it_a) if m else next(it_b) for m in mask.to_list()], "held-out halves"


def with_tier0(linear_conf: Sequence[float], linear_correct: Sequence[bool], cascade_correct: Sequence[bool],
               threshold: float) -> tuple[float, float]:
    """(share tier 0 decides, the cascade's accuracy) when tier 0 takes the items it is at least this sure of."""
    n = len(cascade_correct)
    if not n:
        return 0.0, float("nan")
    take = [c >= threshold for c in linear_conf]
    right = sum(lc if k else cc for k, lc, cc in zip(take, linear_correct, cascade_correct, strict=True))
    return sum(take) / n, right / n


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
        share, quality = with_tier0(linear_conf, linear_correct, cascade_correct, t)
        if quality >= base - tolerance and share > best[1]:
            best = (t, share, quality)
    return best[0], best[1], best[2], base


@dataclass(frozen=True)
class Tier0Fit:
    """Tier 0's threshold for one label task, chosen on the fit rows, and what it does on the judged ones."""

    threshold: float | None  # None: every threshold costs quality (tier 0 decides nothing)
    fit_items: int
    judged_items: int
    share: float  # of the judged items, decided by tier 0 at the threshold
    quality_with: float  # the cascade's accuracy on the judged items, with tier 0 at the threshold
    quality_without: float
    accuracy: float  # tier 0 alone on the judged items


def fit_tier0(frame: pl.DataFrame) -> Tier0Fit | None:
    """The one rule for a label task's tier-0 threshold (`evaluate` and fine-tuning both use it): on the fit
    rows, linear_threshold against the cascade without tier 0; measured on the judged rows. frame: the task's
    outcome rows with `split`, routed without tier 0 (`cascade_correct`) and with tier 0's `linear_conf` and
    `linear_correct`. None: fewer than MIN_FIT_ITEMS fit rows (too few to choose on)."""
    frame = frame.filter(pl.col("cascade_correct").is_not_null() & pl.col("linear_conf").is_not_null())
    fitting, judged = fit_rows(frame), judged_rows(frame)
    if len(fitting) < MIN_FIT_ITEMS:
        return None

    def columns(f: pl.DataFrame) -> tuple[list[float], list[bool], list[bool]]:
        return f["linear_conf"].to_list(), f["linear_correct"].to_list(), f["cascade_correct"].to_list()
    threshold, *_ = linear_threshold(*columns(fitting))
    conf, correct, cascade = columns(judged)
    share, with_t0 = with_tier0(conf, correct, cascade, TIER0_DECIDES_NOTHING if threshold is None else threshold)
    _, without = with_tier0(conf, correct, cascade, TIER0_DECIDES_NOTHING)
    n = len(judged)
    return Tier0Fit(threshold, len(fitting), n, share, with_t0, without, sum(correct) / n if n else float("nan"))


def choose_tier0_thresholds(evaluation: Evaluation) -> dict[str, float]:
    """Tier 0's threshold for each label task it serves (fit_tier0), at the chosen thresholds and calibration of
    the language models. Where every threshold costs quality, TIER0_DECIDES_NOTHING.

    Tier 0 was judged only on the data its version was fine-tuned on; a team's own data can disagree (the shipped
    version's sentiment tier 0, kept at 0.8 on its held-out tickets, decided 28 of 150 airline tweets, 57 % right,
    where the small tier was right on 79 %)."""
    from processors.evaluate.cascade import route_outcomes

    out: dict[str, float] = {}
    groups = outcomes_by_task(evaluation.outcomes)
    for task in sorted(evaluation.config.linear):
        if task not in groups or task not in evaluation.thresholds:
            continue
        fitted = fit_tier0(route_outcomes(groups[task], {task: evaluation.thresholds[task]},
                                          evaluation.calibration, {}))
        if fitted is not None:
            out[task] = TIER0_DECIDES_NOTHING if fitted.threshold is None else fitted.threshold
    return out
