"""Running the tiers on labelled examples: `evaluate()` and what it returns (`Evaluation`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import polars as pl

from processors.datasets import LabelledExample, label_sets, sample
from processors.evaluate.cascade import route_outcomes
from processors.evaluate.evaluation import TIERS, Evaluation, TierRun
from processors.evaluate.fitting import (
    TIER0_DECIDES_NOTHING,
    assign_split,
    choose_thresholds,
    choose_tier0_thresholds,
    fit_calibration,
    split_note,
)
from processors.evaluate.outcomes import build_outcomes, doc_tokens, scored_items, with_outcome_schema
from processors.evaluate.summarize import summarize
from processors.models import load_runtime
from processors.progress import Progress
from processors.tiers import LoadedTier, all_items, load_demonstrations, predict, tier_config
from schemas.config import Config, LabelTask
from schemas.records import Document, LabelPrediction

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


# --- running -------------------------------------------------------------------------------------

def evaluate(config: Config, examples: Sequence[LabelledExample], tiers: Sequence[str] = TIERS, *,
             limit: int | None = None, seed: int = 0, loaded: dict[str, LoadedTier] | None = None,
             target_escalation: float | None = None, target_quality_gap: float | None = None,
             stage: str = "evaluate") -> Evaluation:
    """Runs the tiers on the labelled examples and scores them; see the package docstring.

    limit: a stratified sample (by the most-labelled task) of this many examples. loaded: runtimes
    already loaded per tier (left open; others are loaded here and closed). target_*: how the report's
    thresholds are chosen (default: cascade within 1 point of large-only quality). stage: names the
    throttled progress lines ('<stage> small tier: 12/40 (30%) ...').
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
        tasks, fields = scored_items(ex, eval_cfg)
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
        tier_cfg = tier_config(eval_cfg, tier)
        started = time.perf_counter()
        given = (loaded or {}).get(tier)
        runtime_tier = given or LoadedTier(load_runtime(tier_cfg), demos=load_demonstrations(eval_cfg, tier))
        load_seconds = 0.0 if given else time.perf_counter() - started
        try:
            seconds = 0.0
            # after the runtime is loaded: the rate and ETA are the tier's answering alone
            line = Progress(f"{stage} {tier} tier", n_docs)
            line.start()
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
                    line.advance(len(batch))
        finally:
            if not given:
                runtime_tier.runtime.close()
        runs[tier] = TierRun(tier, runtime_tier.runtime.version, n_docs, seconds, load_seconds,
                             sum(doc_tokens(d, tier) for d in docs[tier].values()))

    linear = _predict_linear(eval_cfg, examples) if "small" in tiers else {}
    outcomes = build_outcomes(plan, docs, linear, item_usage, tiers)
    return score(config, eval_cfg, outcomes, tiers, runs, n_docs, notes, target_escalation=target_escalation,
                 target_quality_gap=target_quality_gap)


def rescore(config: Config, outcomes: pl.DataFrame, *, target_escalation: float | None = None,
            target_quality_gap: float | None = None) -> Evaluation:
    """An evaluation from stored outcome rows (an earlier evaluation's outcomes.parquet), scored with the
    configuration's thresholds and calibration and today's rules, without running a model. Costs come
    from the rows' token and second columns; the runtimes' versions are not known ('stored')."""
    outcomes = with_outcome_schema(outcomes)
    tiers = tuple(t for t in TIERS if outcomes[f"{t}_conf"].is_not_null().any())
    docs = outcomes.unique("example_id")
    runs = {"small": TierRun("small", "stored", len(docs), float(docs["small_doc_seconds"].sum() or 0.0), 0.0,
                             int(docs["small_doc_tokens"].sum() or 0)),
            "large": TierRun("large", "stored", len(docs), float(outcomes["large_seconds"].sum() or 0.0), 0.0,
                             int(outcomes["large_tokens"].sum() or 0))}
    eval_cfg = config.model_copy(deep=True)
    eval_cfg.calibration = {}  # raw confidences, as evaluate() leaves them
    return score(config, eval_cfg, outcomes.with_columns(pl.lit(None, pl.String).alias("split")), tiers,
                 {t: runs[t] for t in tiers}, len(docs), ["re-scored from stored outcome rows (no model was run)"],
                 target_escalation=target_escalation, target_quality_gap=target_quality_gap)


def score(config: Config, eval_cfg: Config, outcomes: pl.DataFrame, tiers: tuple[str, ...],
          runs: dict[str, TierRun], n_docs: int, notes: list[str], *, target_escalation: float | None = None,
          target_quality_gap: float | None = None) -> Evaluation:
    """The evaluation of outcome rows: the cascade at the configuration's thresholds, calibration and
    thresholds fitted on the fit half, and the summary measured on the judge half."""
    outcomes = assign_split(outcomes)
    if "small" in tiers and "large" in tiers:  # the cascade at the configuration's thresholds and calibration
        outcomes = route_outcomes(outcomes, config.thresholds, config.calibration, config.linear)
    ev = Evaluation(outcomes, eval_cfg, tiers, runs, n_docs, notes=[*notes, split_note(outcomes)])
    ev.calibration = fit_calibration(ev)
    if "large" in tiers and "small" in tiers:
        ev.thresholds, ev.operating_points = choose_thresholds(ev, ev.calibration, target_escalation=target_escalation,
                                                               target_quality_gap=target_quality_gap)
        ev.tier0_thresholds = choose_tier0_thresholds(ev)
        for task, threshold in ev.tier0_thresholds.items():  # the chosen cascade is judged with them
            before = ev.config.linear[task].threshold
            ev.config.linear[task] = ev.config.linear[task].model_copy(update={"threshold": threshold})
            ev.notes.append(f"tier 0 of {task}: threshold {before:g} -> {threshold:g}, chosen on the fit half"
                            + (" (at every threshold it cost quality there: it decides nothing)"
                               if threshold == TIER0_DECIDES_NOTHING else ""))
    ev.summary = summarize(ev, config)
    return ev


def _predict_linear(cfg: Config, examples: list[LabelledExample]) -> dict[tuple[str, str], LabelPrediction]:
    """(example id, task) -> tier 0's prediction, for every labelled item of a task that has tier 0."""
    from processors.linear import LinearLabeler

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
    total = 0.0
    for item in all_items(batch[0], cfg):  # a batch is one group: one source, the same items
        before = {d.doc_id: doc_tokens(d, "large") for d in batch}
        t0 = time.perf_counter()
        predict(batch, loaded, cfg.large, cfg, "large", asked=[[item]] * len(batch))
        elapsed = time.perf_counter() - t0
        total += elapsed
        for d in batch:
            item_usage[(d.doc_id, item)] = (doc_tokens(d, "large") - before[d.doc_id], elapsed / len(batch))
    return total
