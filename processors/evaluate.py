"""Evaluation on labelled data: the small tier alone, the large tier alone, and the cascade.

Both tiers run on every item once (the large tier too, so its quality is known everywhere); the
cascade is then computed offline with the pure routing function, so sweeping thresholds needs no
rerun. A library first (the fine-tuning flow compares model versions with it), a CLI second:

    examples = load_examples("validation.csv")
    ev = evaluate(config, examples, limit=200)
    ev.summary["tasks"]["category"]["small"]["accuracy"]
    calibration = fit_calibration(ev); thresholds, points = choose_thresholds(ev, calibration)
    write_report(ev, "eval/")

Tier 0 (the linear model of the configuration's model version, when it has one for a task) runs on
every labelled item too; in the cascade it decides the items at or above its threshold before the
small model, as in the nightly run (`decided_by = linear`).

Only the tasks a document is labelled for and the fields known for it are run. A task in the data
that the configuration lacks is added with the data's label set. Confidences in the outcomes are raw
(the models run without calibration); the configuration's calibration (from its model version) is
applied offline before routing, exactly as the nightly run applies it before it routes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from processors import calibration as cal
from processors.datasets import LabelledExample, label_sets, sample, split
from processors.models import load_runtime
from processors.routing import FIELDS_KEY, route
from processors.tasks.normalize import normalize
from processors.tiers import LoadedTier, predict
from schemas.config import Config, FieldSpec, LabelTask, TaskCalibration, Thresholds
from schemas.records import Document, FieldPrediction, LabelPrediction

log = logging.getLogger(__name__)

TIERS = ("small", "large")
Progress = Callable[[str, int, int], None]  # (tier, documents done, documents total)

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
}


@dataclass
class TierRun:
    """What one tier cost on the evaluated documents."""

    tier: str
    model_version: str
    n_docs: int
    seconds: float  # prediction time, all documents (model loading excluded)
    load_seconds: float
    tokens: int  # prompt + completion tokens, all documents


@dataclass
class Evaluation:
    outcomes: pl.DataFrame  # one row per (example, labelled task or known field): OUTCOME_SCHEMA
    summary: dict  # metrics per task / field / tier, cost, calibration, thresholds (JSON-able)
    config: Config  # the configuration evaluated (tasks and fields as run, thresholds, calibration)
    tiers: tuple[str, ...]
    runs: dict[str, TierRun]
    n_docs: int
    calibration: dict[str, TaskCalibration] = field(default_factory=dict)  # fitted on this data
    thresholds: dict[str, Thresholds] = field(default_factory=dict)  # chosen on this data
    operating_points: dict[str, cal.OperatingPoint] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- what to run ---------------------------------------------------------------------------------

def evaluation_config(config: Config, examples: Sequence[LabelledExample]) -> tuple[Config, list[str]]:
    """The configuration restricted to what the data labels, raw confidences (no calibration).

    Tasks keep only the sources they are labelled for; a task missing from the configuration is added
    with the data's label set. Fields are the configured ones known for at least one example.
    """
    notes: list[str] = []
    labelled: dict[str, set[str]] = {}
    for ex in examples:
        for task in ex.labels:
            labelled.setdefault(task, set()).add(ex.source)
    configured = {t.name: t for t in config.tasks}
    tasks: list[LabelTask] = []
    for task in config.tasks:
        if task.name in labelled:
            tasks.append(task.model_copy(update={"sources": sorted(labelled[task.name])}, deep=True))
    for name, labels in label_sets(examples).items():
        if name in configured:
            outside = sorted(set(labels) - set(configured[name].labels))
            if outside:
                notes.append(f"task {name}: gold labels not in the configured set count as wrong: {outside[:8]}")
            continue
        if len(labels) < 2:
            notes.append(f"task {name}: only one label in the data ({labels}); not evaluated")
            continue
        tasks.append(LabelTask(name=name, labels=labels, question=f"Which {name.replace('_', ' ')} is this?",
                               sources=sorted(labelled[name])))
        notes.append(f"task {name}: not in the configuration; added with the data's {len(labels)} labels")
    fields: dict = {}
    for source, specs in config.fields.items():
        known = [s for s in specs if any(ex.source == source and ex.field_value(s.name)[0] for ex in examples)]
        if known:
            fields[source] = [s.model_copy() for s in known]
    configured_fields = {s.name for specs in config.fields.values() for s in specs}
    extra = sorted({k for ex in examples for k in ex.fields} - configured_fields)
    if extra:
        notes.append(f"fields in the data but not in the configuration (not evaluated): {extra}")
    if config.linear:
        notes.append(f"tier 0 (linear) of {sorted(config.linear)} decides the items at or above its threshold "
                     "before the small model in the cascade, as in the nightly run; the cascade's small-tier cost "
                     "still counts those items (the small model answered every item here)")
    out = config.model_copy(deep=True)
    out.tasks = tasks
    out.fields = fields
    out.calibration = {}  # raw confidences: calibration is applied offline (and fitted on them)
    return out, notes


def _items(ex: LabelledExample, cfg: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(label tasks, fields) this example is scored on."""
    tasks = tuple(t.name for t in cfg.tasks if ex.source in t.sources and t.name in ex.labels)
    fields = tuple(s.name for s in cfg.fields.get(ex.source, []) if ex.field_value(s.name)[0])
    return tasks, fields


def _group_config(cfg: Config, source: str, tasks: tuple[str, ...], fields: tuple[str, ...]) -> Config:
    out = cfg.model_copy(deep=True)
    out.tasks = [t for t in out.tasks if t.name in tasks]
    out.fields = {source: [s for s in cfg.fields.get(source, []) if s.name in fields]} if fields else {}
    return out


def _document(ex: LabelledExample) -> Document:
    return Document(doc_id=ex.example_id, source=ex.source, uri=f"example:{ex.example_id}", text=ex.text,
                    pages=list(ex.pages) or [ex.text])


def _chunks(seq: list, n: int) -> list[list]:
    return [seq[i:i + n] for i in range(0, len(seq), max(n, 1))]


def _tokens(doc: Document, tier: str) -> int:
    u = doc.usage.get(tier)
    return (u.prompt_tokens + u.completion_tokens) if u else 0


# --- running -------------------------------------------------------------------------------------

def evaluate(config: Config, examples: Sequence[LabelledExample], tiers: Sequence[str] = TIERS, *,
             limit: int | None = None, seed: int = 0, loaded: dict[str, LoadedTier] | None = None,
             target_escalation: float | None = None, target_quality_gap: float | None = None,
             progress: Progress | None = None) -> Evaluation:
    """Runs the tiers on the labelled examples and scores them; see the module docstring.

    limit: a stratified sample (by the most-labelled task) of this many examples. loaded: runtimes
    already loaded per tier (left open; others are loaded here and closed). target_*: how the report's
    thresholds are chosen (default: cascade within 1 point of large-only quality).
    """
    tiers = tuple(t for t in TIERS if t in tiers)
    if not tiers:
        raise ValueError("evaluate needs at least one tier (small, large)")
    examples = list(examples)
    if limit is not None and limit < len(examples):
        counts: dict[str, int] = {}
        for ex in examples:
            for task in ex.labels:
                counts[task] = counts.get(task, 0) + 1
        stratify = max(counts, key=counts.get) if counts else None
        examples = sample(examples, limit, seed=seed, stratify=stratify)
    seen: set[str] = set()
    unique = []
    for ex in examples:  # the same text twice (same id) is one document
        if ex.example_id not in seen:
            seen.add(ex.example_id)
            unique.append(ex)
    examples = unique
    eval_cfg, notes = evaluation_config(config, examples)

    groups: dict[tuple, list[LabelledExample]] = {}
    for ex in examples:
        tasks, fields = _items(ex, eval_cfg)
        if tasks or fields:
            groups.setdefault((ex.source, tasks, fields), []).append(ex)
    skipped = len(examples) - sum(len(g) for g in groups.values())
    if skipped:
        notes.append(f"{skipped} examples have no label or field this configuration can score; left out")
    plan = [(_group_config(eval_cfg, *key), members) for key, members in groups.items()]
    n_docs = sum(len(m) for _, m in plan)
    if not n_docs:
        raise ValueError("no example is labelled for a task or field that can be evaluated")

    docs: dict[str, dict[str, Document]] = {t: {} for t in tiers}
    runs: dict[str, TierRun] = {}
    item_usage: dict[tuple[str, str], tuple[int, float]] = {}  # (example id, item) -> large tokens, seconds
    for tier in tiers:
        tier_cfg = eval_cfg.small if tier == "small" else eval_cfg.large
        started = time.perf_counter()
        given = (loaded or {}).get(tier)
        runtime_tier = given or LoadedTier(load_runtime(tier_cfg))
        load_seconds = 0.0 if given else time.perf_counter() - started
        try:
            seconds = 0.0
            done = 0
            for group_cfg, members in plan:
                group_docs = [_document(ex) for ex in members]
                for batch in _chunks(group_docs, tier_cfg.parallel_sequences):
                    if tier == "small":
                        t0 = time.perf_counter()
                        predict(batch, runtime_tier, group_cfg.small, group_cfg, "small")
                        seconds += time.perf_counter() - t0
                    else:
                        seconds += _predict_large_per_item(batch, runtime_tier, group_cfg, item_usage)
                    for d in batch:
                        docs[tier][d.doc_id] = d
                    done += len(batch)
                    if progress:
                        progress(tier, done, n_docs)
                    log.info("%s tier: %d/%d documents", tier, done, n_docs)
        finally:
            if not given:
                runtime_tier.runtime.close()
        runs[tier] = TierRun(tier, runtime_tier.runtime.version, n_docs, seconds, load_seconds,
                             sum(_tokens(d, tier) for d in docs[tier].values()))

    linear = _predict_linear(eval_cfg, examples) if "small" in tiers else {}
    outcomes = _outcomes(plan, docs, linear, item_usage, config, tiers)
    ev = Evaluation(outcomes, {}, eval_cfg, tiers, runs, n_docs, notes=notes)
    ev.calibration = fit_calibration(ev)
    if "large" in tiers and "small" in tiers:
        ev.thresholds, ev.operating_points = choose_thresholds(ev, ev.calibration, target_escalation=target_escalation,
                                                               target_quality_gap=target_quality_gap)
    ev.summary = summarize(ev, config)
    return ev


def _predict_linear(cfg: Config, examples: list[LabelledExample]) -> dict[tuple[str, str], LabelPrediction]:
    """(example id, task) -> tier 0's prediction, for every labelled item of a task that has tier 0."""
    from processors.linear import LinearLabeler  # scikit-learn: only when a version has tier 0

    out: dict[tuple[str, str], LabelPrediction] = {}
    for task in cfg.tasks:
        if task.name not in cfg.linear:
            continue
        members = [ex for ex in examples if task.name in ex.labels and ex.source in task.sources]
        labeler = LinearLabeler.load(cfg.linear[task.name].path)
        for ex, pred in zip(members, labeler.predict(task, [ex.text for ex in members]), strict=True):
            out[ex.example_id, task.name] = pred
    return out


def _predict_large_per_item(batch: list[Document], loaded: LoadedTier, cfg: Config,
                            item_usage: dict[tuple[str, str], tuple[int, float]]) -> float:
    """The large tier on every item of the batch, one item at a time, so each item's tokens and time are
    known: the cascade pays the large tier only for the items it escalates."""
    source = batch[0].source
    items = [t.name for t in cfg.tasks if source in t.sources] + [f"field:{s.name}"
                                                                   for s in cfg.fields.get(source, [])]
    total = 0.0
    for item in items:
        before = {d.doc_id: _tokens(d, "large") for d in batch}
        t0 = time.perf_counter()
        predict(batch, loaded, cfg.large, cfg, "large", asked=[[item]] * len(batch))
        elapsed = time.perf_counter() - t0
        total += elapsed
        for d in batch:
            item_usage[(d.doc_id, item)] = (_tokens(d, "large") - before[d.doc_id], elapsed / len(batch))
    return total


# --- scoring -------------------------------------------------------------------------------------

def _comparable(field_type: str, value: str | None) -> str | None:
    """A field value as compared: normalised (ISO date, decimal amount, ISO currency), else tidied text."""
    if value is None or not value.strip():
        return None
    norm, problems = normalize(field_type, value)
    text = norm if norm and not problems else " ".join(value.split())
    if field_type in ("id", "string", "name", "email"):
        text = text.casefold()
    if field_type == "id":
        text = text.lstrip("#").strip()  # "#37777" and "37777" name the same invoice
    return text


def field_match(field_type: str, gold: str | None, predicted: str | None) -> bool:
    """Exact match after normalisation; absent and absent match."""
    return _comparable(field_type, gold) == _comparable(field_type, predicted)


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


def _outcomes(plan: list[tuple[Config, list[LabelledExample]]], docs: dict[str, dict[str, Document]],
              linear: dict[tuple[str, str], LabelPrediction], item_usage: dict[tuple[str, str], tuple[int, float]],
              config: Config, tiers: tuple[str, ...]) -> pl.DataFrame:
    """One row per scored item; the cascade at the configuration's thresholds and calibration."""
    rows = []
    for cfg, members in plan:
        specs = {s.name: s for specs in cfg.fields.values() for s in specs}
        for ex in members:
            small = docs["small"].get(ex.example_id) if "small" in tiers else None
            large = docs["large"].get(ex.example_id) if "large" in tiers else None
            decided = _cascade(small, large, config) if small and large else {}
            tasks, fields = _items(ex, cfg)
            base = {"example_id": ex.example_id, "source": ex.source,
                    "small_doc_tokens": _tokens(small, "small") if small else None,
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
                rows.append(_finish(row, task, decided, item_usage))
            for name in fields:
                _, gold = ex.field_value(name)
                spec = specs[name]
                row = {**base, "kind": "field", "item": name, "field_type": spec.type, "gold": gold}
                row.update(_field_cols(small.fields.get(name) if small else None, spec, gold, "small"))
                row.update(_field_cols(large.fields.get(name) if large else None, spec, gold, "large"))
                rows.append(_finish(row, f"field:{name}", decided, item_usage))
    return _tier0_decides(pl.DataFrame(rows, schema=OUTCOME_SCHEMA), config)


def _tier0_decides(frame: pl.DataFrame, config: Config) -> pl.DataFrame:
    """Items tier 0 is confident on are decided by it in the cascade, whatever the language models said."""
    if not config.linear or frame["linear_conf"].is_null().all():
        return frame
    threshold = pl.col("item").replace_strict({k: v.threshold for k, v in config.linear.items()}, default=None,
                                              return_dtype=pl.Float64)
    takes = (pl.col("kind") == "label") & pl.col("decided_by").is_not_null() & (pl.col("linear_conf") >= threshold)
    return frame.with_columns(
        pl.when(takes).then(pl.lit("linear")).otherwise(pl.col("decided_by")).alias("decided_by"),
        pl.when(takes).then(pl.col("linear_pred")).otherwise(pl.col("cascade_pred")).alias("cascade_pred"),
        pl.when(takes).then(pl.col("linear_correct")).otherwise(pl.col("cascade_correct")).alias("cascade_correct"))


def _finish(row: dict, item: str, decided: dict[str, str], item_usage: dict) -> dict:
    tokens, seconds = item_usage.get((row["example_id"], item), (None, None))
    row["large_tokens"], row["large_seconds"] = tokens, seconds
    if item in decided:
        tier = decided[item]
        row["decided_by"] = tier
        src = "small" if tier == "small" else "large"
        row["cascade_pred"] = row.get(f"{src}_pred")
        row["cascade_correct"] = row.get(f"{src}_correct")
    return row


def _cascade(small: Document, large: Document, config: Config) -> dict[str, str]:
    """item -> small | large | review, at the configuration's thresholds, with its calibration applied
    (as the nightly run does), by the pure routing function."""
    def calibrated(doc: Document, tier: str) -> tuple[dict, dict]:
        labels = {k: cal.calibrate_label(v, config.calibration.get(f"{tier}:{k}")) for k, v in doc.labels.items()}
        fields = {k: cal.calibrate_field(v, config.calibration.get(f"{tier}:fields")) for k, v in doc.fields.items()}
        return labels, fields

    s_labels, s_fields = calibrated(small, "small")
    first = route(s_labels, s_fields, config.thresholds, "small")
    decided = dict.fromkeys(first.passed, "small")
    l_labels, l_fields = calibrated(large, "large")
    up_labels = {k: v for k, v in l_labels.items() if k in first.failed}
    up_fields = {k: v for k, v in l_fields.items() if f"field:{k}" in first.failed}
    second = route(up_labels, up_fields, config.thresholds, "large")
    decided.update(dict.fromkeys(second.passed, "large"))
    decided.update(dict.fromkeys(second.failed, "review"))
    return decided


# --- calibration and thresholds ------------------------------------------------------------------

def _key(kind: str, item: str) -> str:
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


def _fit(frame: pl.DataFrame, key: str, tier: str, method: str | None = None) -> TaskCalibration:
    """Temperature for label tasks, isotonic for fields (or the method asked for)."""
    if key == FIELDS_KEY or method == "isotonic":
        return cal.fit_isotonic(frame[f"{tier}_conf"].to_list(), frame[f"{tier}_correct"].to_list())
    dists = [json.loads(d) if d else {} for d in frame[f"{tier}_dist"].to_list()]
    return cal.fit_temperature(dists, frame["gold"].to_list())


def calibrated_conf(frame: pl.DataFrame, key: str, tier: str, calibration: TaskCalibration | None) -> list[float]:
    """The tier's confidences in these outcome rows, calibrated (invalid labels stay 0)."""
    conf = frame[f"{tier}_conf"].to_list()
    if calibration is None or calibration.method == "none":
        return [float(c) for c in conf]
    if key == FIELDS_KEY or calibration.method == "isotonic":
        return [cal.apply_confidence(float(c), calibration) for c in conf]
    out = []
    for dist, pred, c in zip(frame[f"{tier}_dist"].to_list(), frame[f"{tier}_pred"].to_list(), conf, strict=True):
        d = json.loads(dist) if dist else {}
        out.append(cal.apply_label(d, calibration).get(pred, float(c)) if d and pred is not None else float(c))
    return out


def fit_calibration(evaluation: Evaluation) -> dict[str, TaskCalibration]:
    """'<tier>:<task>' and '<tier>:fields' calibrations, fitted on the raw outcomes.

    Label tasks try temperature scaling, then isotonic on the top label's probability; fields use
    isotonic. When the data is large enough to measure on held-out halves, the method with the lowest
    held-out expected calibration error is kept, and only if it beats no calibration (else a note says
    so): a noisy fit on a small set never makes routing worse. Small sets get the default fit.
    """
    out = {}
    for key, frame in outcomes_by_task(evaluation.outcomes).items():
        for tier in evaluation.tiers:
            f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
            kept, why = _best_calibration(f, key, tier)
            if kept.method != "none":
                out[f"{tier}:{key}"] = kept
            elif why and why not in evaluation.notes:
                evaluation.notes.append(why)
    return out


def _best_calibration(f: pl.DataFrame, key: str, tier: str) -> tuple[TaskCalibration, str]:
    ok = f[f"{tier}_correct"].to_list()
    before = cal.ece(f[f"{tier}_conf"].to_list(), ok)
    tried = []
    for method in ([None] if key == FIELDS_KEY else [None, "isotonic"]):
        fitted = _fit(f, key, tier, method)
        if fitted.method == "none":
            continue
        after, how = _cross_fitted(f, key, tier, method)
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
    """Thresholds per task (and 'fields') on the calibrated confidences; needs both tiers' outcomes."""
    if "large" not in evaluation.tiers or "small" not in evaluation.tiers:
        raise ValueError("choosing thresholds needs the small and the large tier's outcomes")
    calibration = evaluation.calibration if calibration is None else calibration
    thresholds, points = {}, {}
    for key, frame in outcomes_by_task(evaluation.outcomes).items():
        s_conf = calibrated_conf(frame, key, "small", calibration.get(f"small:{key}"))
        l_conf = calibrated_conf(frame, key, "large", calibration.get(f"large:{key}"))
        thresholds[key], points[key] = cal.choose_threshold(
            s_conf, [not v for v in frame["small_valid"].to_list()], frame["small_correct"].to_list(),
            frame["large_correct"].to_list(), l_conf, target_escalation=target_escalation,
            target_quality_gap=target_quality_gap)
    return thresholds, points


def _cross_fitted(frame: pl.DataFrame, key: str, tier: str, method: str | None = None) -> tuple[list[float], str]:
    """Calibrated confidences where each half of the examples is calibrated by a fit on the other half
    (an honest 'after'); too few items for halves: fitted on all (in-sample), and said so."""
    ids = frame["example_id"].to_list()
    fake = [LabelledExample(i, "") for i in dict.fromkeys(ids)]
    first, second = split(fake, 0.5, seed=7)
    half = {ex.example_id for ex in first}
    mask = pl.Series([i in half for i in ids])
    a, b = frame.filter(mask), frame.filter(~mask)
    if min(len(a), len(b)) < cal.MIN_ITEMS:
        return calibrated_conf(frame, key, tier, _fit(frame, key, tier, method)), "in-sample"
    conf_a = calibrated_conf(a, key, tier, _fit(b, key, tier, method))
    conf_b = calibrated_conf(b, key, tier, _fit(a, key, tier, method))
    it_a, it_b = iter(conf_a), iter(conf_b)
    return [next(it_a) if m else next(it_b) for m in mask.to_list()], "held-out halves"


# --- summary -------------------------------------------------------------------------------------

def _label_quality(gold: list[str], pred: list[str | None]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    if not gold:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "quality": float("nan")}
    acc = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    shown = ["\x00invalid" if p is None else p for p in pred]
    labels = sorted(set(gold) | {p for p in pred if p is not None})
    f1 = float(f1_score(gold, shown, labels=labels, average="macro", zero_division=0))
    return {"accuracy": acc, "macro_f1": f1, "quality": acc}


def _field_quality(gold: list[str | None], pred: list[str | None], correct: list[bool]) -> dict[str, float]:
    n_pred = sum(p is not None and p.strip() != "" for p in pred)
    n_gold = sum(g is not None for g in gold)
    hit = sum(c and g is not None for g, c in zip(gold, correct, strict=True))
    em = sum(correct) / len(correct) if correct else float("nan")
    return {"exact_match": em, "precision": hit / n_pred if n_pred else float("nan"),
            "recall": hit / n_gold if n_gold else float("nan"), "quality": em}


def _quality(frame: pl.DataFrame, kind: str, pred_col: str, correct_col: str) -> dict[str, float]:
    frame = frame.filter(pl.col(correct_col).is_not_null())
    if kind == "label":
        return _label_quality(frame["gold"].to_list(), frame[pred_col].to_list())
    return _field_quality(frame["gold"].to_list(), frame[pred_col].to_list(), frame[correct_col].to_list())


def cascade_at_thresholds(frame: pl.DataFrame, key: str, ev: Evaluation) -> pl.DataFrame:
    """The outcome rows with the cascade at the chosen thresholds and the fitted calibration."""
    t = ev.thresholds[key]
    s_conf = calibrated_conf(frame, key, "small", ev.calibration.get(f"small:{key}"))
    l_conf = calibrated_conf(frame, key, "large", ev.calibration.get(f"large:{key}"))
    up = [(not v) or c < t.small for v, c in zip(frame["small_valid"].to_list(), s_conf, strict=True)]
    decided = ["small" if not u else ("review" if lc < t.large else "large") for u, lc in zip(up, l_conf, strict=True)]
    return _tier0_decides(frame.with_columns(
        pl.Series("decided_by", decided),
        pl.Series("cascade_pred", [lp if u else sp for u, sp, lp in
                                   zip(up, frame["small_pred"].to_list(), frame["large_pred"].to_list(), strict=True)],
                  dtype=pl.String),
        pl.Series("cascade_correct", [lc if u else sc for u, sc, lc in
                                      zip(up, frame["small_correct"].to_list(), frame["large_correct"].to_list(),
                                          strict=True)])), ev.config)


def _rates(frame: pl.DataFrame) -> dict[str, float]:
    decided = frame["decided_by"].drop_nulls()
    if not len(decided):
        return {}
    return {"escalation_rate": float(decided.is_in(["large", "review"]).mean()),
            "review_rate": float((decided == "review").mean()), "linear_rate": float((decided == "linear").mean())}


def _cost(ev: Evaluation, config: Config, chosen: bool) -> dict[str, float] | None:
    """Tokens, cost per 1,000 documents and docs/s of the cascade (items escalated pay the large tier)."""
    o = ev.outcomes
    if "large" not in ev.tiers or "small" not in ev.tiers:
        return None
    if chosen:
        parts = [cascade_at_thresholds(f, k, ev) for k, f in outcomes_by_task(o).items()] if ev.thresholds else []
        o = pl.concat(parts) if parts else o
    up = o.filter(pl.col("decided_by").is_in(["large", "review"]))
    small = ev.runs["small"]
    large_tokens = int(up["large_tokens"].sum() or 0)
    large_seconds = float(up["large_seconds"].sum() or 0.0)
    docs_up = up["example_id"].n_unique()
    return _cost_row(small.tokens, large_tokens, small.seconds + large_seconds, ev.n_docs, config) | {
        "docs_escalated": docs_up / ev.n_docs}


def _cost_row(small_tokens: int, large_tokens: int, seconds: float, n: int, config: Config) -> dict[str, float]:
    per_k = 1000 / n / 1e6
    small_cost = small_tokens * per_k * config.small.price_per_million_tokens
    return {
        "tokens_per_doc": (small_tokens + large_tokens) / n,
        "cost_per_1000_docs": small_cost + large_tokens * per_k * config.large.price_per_million_tokens,
        # The same work with the large tier as a hosted API at hosted_price_per_million_tokens.
        "cost_per_1000_docs_hosted_large": small_cost + large_tokens * per_k * config.hosted_price_per_million_tokens,
        "docs_per_second": n / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
    }


def summarize(ev: Evaluation, config: Config) -> dict:
    """Metrics per task / field and tier, cost and speed per tier, calibration and thresholds."""
    o = ev.outcomes
    both = "small" in ev.tiers and "large" in ev.tiers
    tasks: dict[str, dict] = {}
    fields: dict[str, dict] = {}
    chosen_frames = ({k: cascade_at_thresholds(f, k, ev) for k, f in outcomes_by_task(o).items()}
                     if ev.thresholds else {})
    for (kind, item), frame in sorted(o.group_by(["kind", "item"], maintain_order=True), key=lambda kv: kv[0]):
        entry: dict = {"n": len(frame)}
        for tier in ev.tiers:
            entry[tier] = _quality(frame, kind, f"{tier}_pred", f"{tier}_correct")
        if kind == "label" and frame["linear_conf"].is_not_null().any():
            entry["linear"] = _quality(frame, kind, "linear_pred", "linear_correct") | {
                "threshold": config.linear[item].threshold if item in config.linear else None}
        if both:
            entry["cascade"] = _quality(frame, kind, "cascade_pred", "cascade_correct") | _rates(frame)
            key = _key(kind, item)
            if key in chosen_frames:
                cf = chosen_frames[key].filter(pl.col("item") == item)
                entry["cascade_calibrated"] = _quality(cf, kind, "cascade_pred", "cascade_correct") | _rates(cf)
        (tasks if kind == "label" else fields)[item] = entry
    if len(o.filter(pl.col("kind") == "field")):
        frame = o.filter(pl.col("kind") == "field")
        entry = {"n": len(frame)}
        for tier in ev.tiers:
            entry[tier] = _quality(frame, "field", f"{tier}_pred", f"{tier}_correct")
        if both:
            entry["cascade"] = _quality(frame, "field", "cascade_pred", "cascade_correct") | _rates(frame)
            if FIELDS_KEY in chosen_frames:
                cf = chosen_frames[FIELDS_KEY]
                entry["cascade_calibrated"] = _quality(cf, "field", "cascade_pred", "cascade_correct") | _rates(cf)
        fields["all fields"] = entry

    cost: dict[str, dict] = {}
    if "small" in ev.tiers:
        r = ev.runs["small"]
        cost["small"] = _cost_row(r.tokens, 0, r.seconds, ev.n_docs, config) | {"load_seconds": r.load_seconds}
    if "large" in ev.tiers:
        r = ev.runs["large"]
        cost["large"] = _cost_row(0, r.tokens, r.seconds, ev.n_docs, config) | {"load_seconds": r.load_seconds}
    if both:
        cost["cascade"] = _cost(ev, config, chosen=False)
        if ev.thresholds:
            cost["cascade_calibrated"] = _cost(ev, config, chosen=True)

    calibration: dict[str, dict] = {}
    for key, frame in outcomes_by_task(o).items():
        for tier in ev.tiers:
            f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
            if len(f) == 0:
                continue
            ok = f[f"{tier}_correct"].to_list()
            fitted = ev.calibration.get(f"{tier}:{key}", TaskCalibration())
            # Kept: its held-out ECE. Not kept: the default method's, to show it did not help.
            method = fitted.method if fitted.method != "none" else None
            tried = fitted if fitted.method != "none" else _fit(f, key, tier)
            after, how = _cross_fitted(f, key, tier, method)
            calibration[f"{tier}:{key}"] = {
                "n": len(f), "method": fitted.method if fitted.method != "none" or tried.method == "none"
                else f"none ({tried.method} did not help)", "temperature": tried.temperature,
                "ece_before": cal.ece(f[f"{tier}_conf"].to_list(), ok),
                "ece_after": cal.ece(after, ok) if tried.method != "none" else float("nan"), "after_on": how}
    return {
        "n_docs": ev.n_docs, "n_items": len(o), "tiers": list(ev.tiers),
        "model_versions": {t: r.model_version for t, r in ev.runs.items()},
        "config_model_version": config.models.active,
        "tasks": tasks, "fields": fields, "cost": cost, "calibration": calibration,
        "thresholds": {
            "configured": {k: config.thresholds_for(k).model_dump() for k in outcomes_by_task(o)},
            "chosen": {k: v.model_dump() for k, v in ev.thresholds.items()},
            "operating_points": {k: vars(p) for k, p in ev.operating_points.items()},
        },
        "hosted_price_per_million_tokens": config.hosted_price_per_million_tokens,
        "notes": ev.notes,
    }


# --- report --------------------------------------------------------------------------------------

def format_figure(value: float | None, pct: bool = False, digits: int = 3, missing: str = "–") -> str:
    """A report figure: a percentage or a fixed number of digits; `missing` for none or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:.1%}" if pct else f"{value:.{digits}f}"


def report_markdown(ev: Evaluation, images: bool = True, extra: Sequence[str] = ()) -> str:
    """The report as Markdown: per task the small / large / cascade table, cost and speed, calibration."""
    s = ev.summary
    lines = ["# sluicegate evaluation", "",
             f"{s['n_docs']} documents, {s['n_items']} scored items; tiers: {', '.join(s['tiers'])}; "
             f"models: {', '.join(f'{k} `{v}`' for k, v in s['model_versions'].items())}; "
             f"model version: `{s['config_model_version'] or 'base (none)'}`.", ""]
    lines += [f"- {n}" for n in [*extra, *s["notes"]]]
    cost = s["cost"]
    rows = [("linear", "tier 0 (linear) alone"), ("small", "small alone"), ("large", "large alone"),
            ("cascade", "cascade (configured thresholds)"),
            ("cascade_calibrated", "cascade (calibrated, chosen thresholds)")]

    def tier_table(entry: dict, quality: list[tuple[str, str]]) -> list[str]:
        head = "| tier | " + " | ".join(q for _, q in quality) + \
            " | tier 0 decides | escalation | review | cost / 1k docs | hosted large / 1k docs | docs/s |"
        out = [head, "|" + "---|" * (head.count("|") - 1)]
        for key, name in rows:
            if key not in entry:
                continue
            e, c = entry[key], cost.get(key) or {}
            esc = e.get("escalation_rate", 1.0 if key == "large" else 0.0)
            out.append(f"| {name} | " + " | ".join(format_figure(e.get(q)) for q, _ in quality)
                       + f" | {format_figure(e.get('linear_rate'), True)}"
                       + f" | {format_figure(esc, True)} | {format_figure(e.get('review_rate'), True)}"
                       + f" | {format_figure(c.get('cost_per_1000_docs'), digits=4)}"
                       + f" | {format_figure(c.get('cost_per_1000_docs_hosted_large'), digits=4)}"
                       + f" | {format_figure(c.get('docs_per_second'), digits=2)} |")
        return out

    for task, entry in s["tasks"].items():
        lines += ["", f"## Task `{task}` ({entry['n']} items)", ""]
        lines += tier_table(entry, [("accuracy", "accuracy"), ("macro_f1", "macro-F1")])
        if images:
            lines += ["", f"![reliability]({_png('reliability', task)}) ![escalation]({_png('escalation', task)})"]
    for name, entry in s["fields"].items():
        lines += ["", f"## Field `{name}` ({entry['n']} items)" if name != "all fields"
                  else f"## All fields together ({entry['n']} items)", ""]
        lines += tier_table(entry, [("exact_match", "exact match"), ("precision", "precision"), ("recall", "recall")])
        if images and name == "all fields":
            lines += ["", f"![reliability]({_png('reliability', FIELDS_KEY)}) "
                      f"![escalation]({_png('escalation', FIELDS_KEY)})"]

    lines += ["", "## Cost and speed (whole documents)", "",
              f"Prices per million tokens: small {ev.config.small.price_per_million_tokens}, large "
              f"{ev.config.large.price_per_million_tokens}, hosted large {s['hosted_price_per_million_tokens']} "
              "(the 'hosted large' column prices the large tier's tokens as a hosted API would). The large tier "
              "is run item by item here, so its docs/s is a little lower than in a nightly run; the cascade's "
              "time is the small tier on everything plus the large tier on what it escalates.", "",
              "| tier | tokens / doc | cost / 1k docs | hosted large / 1k docs | docs/s | docs escalated | load s |",
              "|---|---|---|---|---|---|---|"]
    for key, name in rows:
        c = cost.get(key)
        if c:
            lines.append(f"| {name} | {format_figure(c['tokens_per_doc'], digits=0)}"
                         f" | {format_figure(c['cost_per_1000_docs'], digits=4)}"
                         f" | {format_figure(c['cost_per_1000_docs_hosted_large'], digits=4)}"
                         f" | {format_figure(c['docs_per_second'], digits=2)}"
                         f" | {format_figure(c.get('docs_escalated'), True)}"
                         f" | {format_figure(c.get('load_seconds'), digits=1)} |")
    lines += ["", "## Calibration (expected calibration error, 10 bins)", "",
              "| tier:task | items | method | temperature | ECE before | ECE after | after measured on |",
              "|---|---|---|---|---|---|---|"]
    for key, c in s["calibration"].items():
        lines.append(f"| {key} | {c['n']} | {c['method']} | "
                     f"{format_figure(c['temperature'], digits=2) if 'temperature' in c['method'] else '–'} | "
                     f"{format_figure(c['ece_before'])} | {format_figure(c['ece_after'])} | {c['after_on']} |")
    th = s["thresholds"]
    if th["chosen"]:
        lines += ["", "## Thresholds", "",
                  "Chosen on this data (in-sample: confirm on held-out data before trusting the quality figure).", "",
                  "| task | configured small / large | chosen small / large | target | escalation | cascade quality"
                  " | large-only quality | review |", "|---|---|---|---|---|---|---|---|"]
        for key, t in th["chosen"].items():
            c = th["configured"].get(key, {})
            p = th["operating_points"][key]
            lines.append(f"| {key} | {format_figure(c.get('small'), digits=2)} / "
                         f"{format_figure(c.get('large'), digits=2)} | "
                         f"{format_figure(t['small'])} / {format_figure(t['large'])} | {p['target']} | "
                         f"{format_figure(p['escalation_rate'], True)} | {format_figure(p['quality'])} | "
                         f"{format_figure(p['large_quality'])} | {format_figure(p['review_rate'], True)} |")
    return "\n".join(lines) + "\n"


def _png(kind: str, key: str) -> str:
    return f"{kind}_{''.join(c if c.isalnum() or c in '-_' else '_' for c in key)}.png"


def write_report(ev: Evaluation, out: str | Path, extra: Sequence[str] = ()) -> dict[str, Path]:
    """outcomes.parquet, summary.json, report.md and the PNG plots into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"outcomes": out / "outcomes.parquet", "summary": out / "summary.json", "report": out / "report.md"}
    ev.outcomes.write_parquet(paths["outcomes"])
    paths["summary"].write_text(json.dumps(ev.summary, indent=2, default=str, allow_nan=True) + "\n", encoding="utf-8")
    for key, frame in outcomes_by_task(ev.outcomes).items():
        paths[f"reliability:{key}"] = _plot_reliability(ev, key, frame, out / _png("reliability", key))
        if "large" in ev.tiers and "small" in ev.tiers:
            paths[f"escalation:{key}"] = _plot_escalation(ev, key, frame, out / _png("escalation", key))
    paths["report"].write_text(report_markdown(ev, extra=extra), encoding="utf-8")
    return paths


def _plot_reliability(ev: Evaluation, key: str, frame: pl.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ev.tiers), figsize=(5.2 * len(ev.tiers), 4.6), squeeze=False)
    for ax, tier in zip(axes[0], ev.tiers, strict=True):
        f = frame.filter(pl.col(f"{tier}_conf").is_not_null())
        ok = f[f"{tier}_correct"].to_list()
        raw = f[f"{tier}_conf"].to_list()
        after, how = _cross_fitted(f, key, tier) if len(f) else ([], "")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        for conf, name, color in ((raw, "raw", "tab:red"), (after, f"calibrated ({how})", "tab:blue")):
            bins = cal.reliability(conf, ok)
            if bins:
                ax.plot([b.confidence for b in bins], [b.accuracy for b in bins], marker="o", color=color,
                        label=f"{name}: ECE {cal.ece(conf, ok):.3f}")
                for b in bins:
                    ax.annotate(str(b.count), (b.confidence, b.accuracy), textcoords="offset points",
                                xytext=(3, -10), fontsize=7, color=color)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (bin mean)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{tier} tier: {key} ({len(f)} items)")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Reliability: {key} (numbers: items per bin)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_escalation(ev: Evaluation, key: str, frame: pl.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s_conf = calibrated_conf(frame, key, "small", ev.calibration.get(f"small:{key}"))
    invalid = [not v for v in frame["small_valid"].to_list()]
    points = cal.cascade_curve(s_conf, invalid, frame["small_correct"].to_list(), frame["large_correct"].to_list())
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    if points:
        ax.plot([p.escalation_rate for p in points], [p.quality for p in points], color="tab:blue",
                label="cascade (calibrated small confidence)")
        ax.axhline(points[0].small_quality, color="tab:red", linestyle=":", label="small alone")
        ax.axhline(points[0].large_quality, color="tab:green", linestyle=":", label="large alone")
    configured = frame.filter(pl.col("decided_by").is_not_null())
    if len(configured):
        esc = float(configured["decided_by"].is_in(["large", "review"]).mean())
        q = float(configured["cascade_correct"].mean())
        ax.scatter([esc], [q], marker="s", s=60, color="tab:orange", zorder=5,
                   label=f"configured thresholds ({esc:.0%}, {q:.3f})")
    if key in ev.operating_points:
        p = ev.operating_points[key]
        ax.scatter([p.escalation_rate], [p.quality], marker="*", s=200, color="black", zorder=6,
                   label=f"chosen: small < {ev.thresholds[key].small:.3f} ({p.escalation_rate:.0%}, {p.quality:.3f})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("escalation rate (share of items sent to the large tier)")
    ax.set_ylabel("accuracy" if key != FIELDS_KEY else "exact match")
    ax.set_title(f"Quality vs escalation: {key} ({len(frame)} items)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- storing with the model version --------------------------------------------------------------

def store_calibration(config: Config, ev: Evaluation, data: str = "") -> tuple[str, bool]:
    """Writes the fitted calibration and chosen thresholds into the model version the config uses.

    The version in use (config.models.active, the promoted or pinned one) is updated in place; with
    no version yet, a new version of the base model is created in the configured registry and promoted.
    Only the configuration's own tasks and 'fields' are stored. Returns (version id, created).
    """
    from schemas.versions import ModelVersion, promote, read_version, version_dir, write_version

    root = config.models.registry
    if not root:
        raise ValueError("storing calibration needs a model registry: set [models] registry in the configuration")
    if not ev.thresholds:
        raise ValueError("storing calibration needs both tiers' outcomes (thresholds are chosen from them)")
    keep = {t.name for t in config.tasks} | {FIELDS_KEY}
    calibration = {k: v for k, v in ev.calibration.items() if k.split(":", 1)[1] in keep}
    thresholds = {k: v for k, v in ev.thresholds.items() if k in keep}
    metrics = {f"{k}.{name}": float(v) for k, p in ev.operating_points.items() if k in keep
               for name, v in (("escalation_rate", p.escalation_rate), ("cascade_quality", p.quality),
                               ("large_quality", p.large_quality), ("small_quality", p.small_quality))}
    metrics["n_docs"] = float(ev.n_docs)
    created = config.models.active is None
    if created:
        from datetime import UTC, datetime

        version = ModelVersion(
            id=f"base-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}", base_model=config.small.model,
            prompt_style=config.small.prompt_style, contextual_calibration=config.small.contextual_calibration,
            tasks=[t.model_copy(deep=True) for t in config.tasks],
            fields={s: [f.model_copy() for f in specs] for s, specs in config.fields.items()})
        if config.small.adapter:  # a hand-configured adapter travels with the version that calibrated it
            import shutil

            folder = version_dir(root, version.id)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(config.small.adapter, folder / "adapter.gguf")
            version.adapter = "adapter.gguf"
    else:
        version = read_version(root, config.models.active)
    version.calibration.update({k: v.model_copy() for k, v in calibration.items()})
    version.thresholds.update({k: v.model_copy() for k, v in thresholds.items()})
    version.metrics["calibration"] = metrics
    version.training["calibrated_on"] = data or "(examples)"
    write_version(root, version)
    if created:
        promote(root, version.id, f"calibration and thresholds fitted on {data or 'labelled examples'}")
    return version.id, created
