"""One tier's work on a batch of documents, and the routing after it; pure Python, no Beam.

The pipeline's TierModelHandler (processors/pipeline.py) holds a LoadedTier per worker and calls
answer_batch; its routing step calls route_after. Evaluate, bench and finetune call the same functions
directly. The small tier answers every task and field of every document; the large tier answers only
the items the small tier escalated.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from processors import privacy
from processors.calibration import calibrate_field, calibrate_label, field_calibration
from processors.demonstrations import DemonstrationIndex
from processors.linear import LinearLabeler
from processors.models import Runtime, load_runtime
from processors.models.base import usage_of
from processors.routing import route
from processors.tasks import extract, label
from processors.tasks.prompts import cut, shared_prefix
from schemas.config import Config, TierModel
from schemas.records import Document, FieldPrediction, LabelPrediction, Tier, Usage

log = logging.getLogger(__name__)


@dataclass
class LoadedTier:
    runtime: Runtime
    content_free: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (task json, source)
    linear: dict[str, LinearLabeler] = field(default_factory=dict)  # task -> tier 0 (small tier only)
    demos: DemonstrationIndex | None = None  # few-shot examples, when the tier shows some


def tier_config(config: Config, tier: Tier) -> TierModel:
    return config.small if tier == "small" else config.large


# Process-level cache of loaded tiers: on in a dask worker (processors/cluster.py turns it on), so a
# worker loads each model once for its whole life, whatever number of shards and runs it serves. Off
# elsewhere: a local run loads fresh, as a cold nightly process does. Entries are never dropped: a
# llama.cpp runtime dropped before it served a request hung for minutes (PLATFORM.md).
_kept: dict[str, LoadedTier] | None = None
_loads: dict[str, int] = {}  # cache key -> loads in this process (a test reads it: never more than one)
_kept_lock = threading.Lock()


def keep_loaded_tiers() -> None:
    """Turns the process-level cache on, for the life of this process (a dask worker's)."""
    global _kept
    with _kept_lock:
        if _kept is None:
            _kept = {}


def tier_loads() -> dict[str, int]:
    """How many times this process loaded each (tier, model, options): for checks and logs."""
    with _kept_lock:
        return dict(_loads)


def loaded_now() -> list[Tier]:
    """The on-demand tiers that hold a loaded model in this process now, sorted: for checks and logs."""
    return sorted(t._tier for t in list(_on_demand) if t._loaded is not None)


def _cache_key(config: Config, tier: Tier) -> str:
    """What a loaded tier depends on: its model options, tier-0 models and demonstrations."""
    linear = {task: tier0.path for task, tier0 in config.linear.items()} if tier == "small" else {}
    return json.dumps({"tier": tier, "model": tier_config(config, tier).model_dump(mode="json"), "linear": linear,
                       "demonstrations": demonstrations_path(config, tier)}, sort_keys=True)


def load_tier(config: Config, tier: Tier) -> LoadedTier:
    """The tier's runtime; for the small tier also the tier-0 linear models in front of it. From the
    process's cache when it is on (a dask worker), loaded at most once per process there."""
    key = _cache_key(config, tier)
    if _kept is None:
        return _load_tier(config, tier, key)
    with _kept_lock:  # held while loading: two shards on one worker never load the same model twice
        if key not in _kept:
            _kept[key] = _load_tier(config, tier, key)
        return _kept[key]


class TierOnDemand:
    """A tier whose model loads when its first batch arrives. A night where nothing escalates never pays the
    large model's load time or its memory (about 1.2 GB), and a rerun with nothing left to do loads no model.

    One model at a time in a local night: the graph runs the small tier over every document before the large
    tier starts (pipeline.py's AfterSmallTier), so when a tier loads, the other tiers of the process that no
    batch is using are released (their memory goes back: about 0.5 GB for two small copies). A released tier
    loads again if a batch still comes. Not on a dask worker: there, loaded tiers are kept for the worker's life."""

    def __init__(self, config: Config, tier: Tier):
        self._config = config
        self._tier = tier
        self._loaded: LoadedTier | None = None
        self._users = 0  # batches using the loaded model now: never released under them
        self._lock = threading.Lock()
        _on_demand.add(self)

    @contextmanager
    def use(self) -> Iterator[LoadedTier]:
        """The loaded tier for one batch (loaded first if it is not)."""
        with self._lock:  # Beam may call a handler from several threads: one load
            if self._loaded is None:
                for other in list(_on_demand):
                    if other is not self:
                        other.release()
                self._loaded = load_tier(self._config, self._tier)
            self._users += 1
            loaded = self._loaded
        try:
            yield loaded
        finally:
            with self._lock:
                self._users -= 1

    def release(self) -> bool:
        """Drops the model if no batch is using it and the process does not keep its tiers; True if it did."""
        # Non-blocking: a tier loading or answering now is busy, and two tiers loading at once must not
        # wait on each other's lock.
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._loaded is None or self._users or _kept is not None:
                return False
            loaded, self._loaded = self._loaded, None
        finally:
            self._lock.release()
        loaded.runtime.close()
        log.info("%s tier released", self._tier)
        return True


_on_demand: weakref.WeakSet[TierOnDemand] = weakref.WeakSet()  # this process's on-demand tiers


def _load_tier(config: Config, tier: Tier, key: str) -> LoadedTier:
    started = time.perf_counter()
    _loads[key] = _loads.get(key, 0) + 1
    loaded = LoadedTier(load_runtime(tier_config(config, tier)))
    if tier == "small":
        loaded.linear = {task: LinearLabeler.load(tier0.path) for task, tier0 in config.linear.items()}
    loaded.demos = load_demonstrations(config, tier)
    log.info("%s tier loaded %s in %.1fs", tier, loaded.runtime.version, time.perf_counter() - started)
    return loaded


def demonstrations_path(config: Config, tier: Tier) -> str | None:
    """The model version's few-shot examples file, when this tier shows some ([<tier>] demonstrations > 0)."""
    return config.demonstrations if tier_config(config, tier).demonstrations and config.demonstrations else None


def load_demonstrations(config: Config, tier: Tier) -> DemonstrationIndex | None:
    """The model version's few-shot examples, when this tier shows some ([<tier>] demonstrations > 0)."""
    path = demonstrations_path(config, tier)
    return DemonstrationIndex.load(path) if path else None


def all_items(doc: Document, config: Config) -> tuple[str, ...]:
    """Every item the configuration asks of this document, in its order: its source's label tasks, then
    'field:<name>'s."""
    return tuple([t.name for t in config.tasks if doc.source in t.sources]
                 + [f"field:{s.name}" for s in config.fields.get(doc.source, [])])


def escalated_items(doc: Document) -> frozenset[str]:
    """The items routing sent up to the large tier."""
    return frozenset(item for item, tier in doc.decided_by.items() if tier == "large")


def predict(docs: Sequence[Document], loaded: LoadedTier, tier_cfg: TierModel, config: Config,
            tier: Tier, asked: Sequence[Collection[str]] | None = None) -> None:
    """Fills doc.labels / doc.fields for the items this tier is asked, one collection per document
    (None: every item the configuration has for it). An item this tier fails to answer keeps the
    previous tier's answer, marked (escalation_failed).

    An HTTP tier gets the batch's prompts together (the endpoint serves them in parallel). The in-process
    runtime takes each document as one sequence of prompts on one copy of the model ([tier] copies of them
    at once): a document's answers are then the same alone, in any batch, on any copy and on any rerun."""
    if asked is None:
        asked = [all_items(d, config) for d in docs]
    sequence = getattr(loaded.runtime, "sequence", None)
    if sequence is None:
        _predict_together(docs, loaded, tier_cfg, config, tier, asked)
        return
    if tier_cfg.contextual_calibration:  # computed first, outside any document's sequence
        for task in config.tasks:
            for source in sorted({d.source for d, items in zip(docs, asked, strict=True) if task.name in items}):
                _content_free(loaded, tier_cfg, task, source)

    def one(doc: Document, items: Collection[str]) -> None:
        with sequence(*shared_prefix(tier_cfg.prompt_style, doc.source)):
            _predict_together([doc], loaded, tier_cfg, config, tier, [items])

    before = {id(d): d.usage[tier].seconds if tier in d.usage else 0.0 for d in docs}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=getattr(loaded.runtime, "copies", 1)) as pool:
        list(pool.map(one, docs, asked))  # list(): a document's exception is raised here
    _share_wall_time(docs, tier, before, time.perf_counter() - started)


def _share_wall_time(docs: Sequence[Document], tier: Tier, before: dict[int, float], wall: float) -> None:
    """Documents on several copies run side by side, so their own seconds overlap: scaled to add up to the
    batch's wall time, each document's seconds are its share of the tier's time (what docs/s is computed from)."""
    own = {id(d): d.usage[tier].seconds - before[id(d)] for d in docs if tier in d.usage}
    total = sum(own.values())
    if total <= 0:
        return
    for d in docs:
        if id(d) in own:
            d.usage[tier].seconds = before[id(d)] + own[id(d)] * wall / total


def _predict_together(docs: Sequence[Document], loaded: LoadedTier, tier_cfg: TierModel, config: Config,
                      tier: Tier, asked: Sequence[Collection[str]]) -> None:
    """predict's work on a batch: one task or field at a time over the documents."""
    asked_of = {id(d): set(items) for d, items in zip(docs, asked, strict=True)}
    keeps_previous = tier == "large"  # an answer this tier fails to give falls back to the small one
    style = tier_cfg.prompt_style
    started = time.perf_counter()
    usage = {d.doc_id + d.uri: Usage() for d in docs}
    # What the model reads: PII masked (when the tier sends text off the machine), then cut.
    masked = {d.doc_id + d.uri: privacy.mask(d.text) if tier_cfg.mask_pii else (d.text, {}) for d in docs}

    def model_text(d: Document) -> str:
        return cut(masked[d.doc_id + d.uri][0], tier_cfg.max_doc_chars)

    def shots(d: Document, item: str) -> list:
        """Few-shot demonstrations for this item: the version's nearest training examples (none by default)."""
        if loaded.demos is None or not tier_cfg.demonstrations:
            return []
        found = loaded.demos.nearest(d.text, item, d.source, tier_cfg.demonstrations)
        # Shown to the same model as the document: masked the same way when text leaves the machine.
        return [replace(s, text=privacy.mask(s.text)[0]) for s in found] if tier_cfg.mask_pii else found

    # Values of the fields this tier is not asked (decided before it): no candidate may repeat them.
    held = {id(d): [p.value for name, p in d.fields.items()
                    if f"field:{name}" not in asked_of[id(d)] and p.valid and p.value] for d in docs}
    choices: dict[int, dict[str, extract.FieldChoice]] = {id(d): {} for d in docs}  # grounded fields' scored answers

    for task in config.tasks:
        batch = [d for d in docs if d.source in task.sources and task.name in asked_of[id(d)]]
        if task.name in loaded.linear and tier == "small":
            batch = _decide_linear(batch, task, loaded.linear[task.name], config.linear[task.name].threshold)
        if not batch:
            continue
        prompts = [label.build_prompt(task, style, d.source, model_text(d),
                                      [(s.text, s.labels[task.name]) for s in shots(d, task.name)],
                                      label.asks_options(task, tier_cfg)) for d in batch]
        targets = label.targets_for(task, style)
        scores = label.score_labels(loaded.runtime, prompts, targets, tier_cfg.top_logprobs,
                                    _expand_min(tier_cfg))
        for doc, score in zip(batch, scores, strict=False):
            usage[doc.doc_id + doc.uri].add(score.usage)
            if keeps_previous and score.error:  # e.g. the endpoint died: the small answer stands
                escalation_failed(doc, [task.name], score.error)
                continue
            content_free = (_content_free(loaded, tier_cfg, task, doc.source)
                            if tier_cfg.contextual_calibration else None)
            _supersede(doc, task.name, doc.labels.get(task.name), tier)
            # Calibrated (from the model version) before routing: thresholds live in that space.
            doc.labels[task.name] = calibrate_label(label.to_prediction(task, score, content_free, tier),
                                                    config.calibration.get(f"{tier}:{task.name}"))
    for source, specs in config.fields.items():
        source_calibration = field_calibration(config.calibration, tier, source)  # thresholds live in its space
        for spec in specs:
            # One field at a time over the batch (a grounded field's answers are per document).
            batch = [d for d in docs if d.source == source and f"field:{spec.name}" in asked_of[id(d)]]
            if not batch:
                continue
            allowed = {id(d): _candidate_values(d, spec, tier_cfg, held[id(d)]) for d in batch}
            for doc in batch:  # a grounded field with nothing of its type in the text: null, no model call
                if allowed[id(doc)] == []:
                    _supersede(doc, f"field:{spec.name}", doc.fields.get(spec.name), tier)
                    doc.fields[spec.name] = calibrate_field(extract.absent(spec, tier), source_calibration)
            batch = [d for d in batch if allowed[id(d)] != []]
            if not batch:
                continue
            prompts = [extract.build_prompt(specs, spec, style, source, model_text(d),
                                            [(s.text, s.fields[spec.name]) for s in shots(d, f"field:{spec.name}")])
                       for d in batch]
            answers = _answer_fields(loaded.runtime, prompts, [allowed[id(d)] for d in batch], spec, tier_cfg,
                                     [masked[d.doc_id + d.uri][1] for d in batch], batch, tier)
            for doc, answer in zip(batch, answers, strict=True):
                usage[doc.doc_id + doc.uri].add(answer.usage)
                if keeps_previous and answer.error:
                    escalation_failed(doc, [f"field:{spec.name}"], answer.error)
                    continue
                _supersede(doc, f"field:{spec.name}", doc.fields.get(spec.name), tier)
                doc.fields[spec.name] = calibrate_field(answer.prediction, source_calibration)
                if answer.choice is not None:
                    choices[id(doc)][spec.name] = answer.choice
    for doc in docs:  # one span fills one field (among this tier's answers): those that share one decide together
        specs = {s.name: s for s in config.fields.get(doc.source, [])}
        mine = {k: v for k, v in doc.fields.items() if v.tier == tier}
        doc_calibration = field_calibration(config.calibration, tier, doc.source)
        doc.fields.update(extract.resolve_shared_spans(mine, specs, doc, choices[id(doc)],
                                                       lambda p, c=doc_calibration: calibrate_field(p, c)))
    elapsed = time.perf_counter() - started
    for doc in docs:
        u = usage[doc.doc_id + doc.uri]
        u.seconds = elapsed / max(len(docs), 1)
        doc.usage.setdefault(tier, Usage()).add(u)
        doc.model_versions[tier] = loaded.runtime.version


def _candidate_values(doc: Document, spec, tier_cfg: TierModel, held: list[str]) -> list[str] | None:
    """A grounded field's candidate values in the text this tier reads (None: not grounded, generated),
    without the values other fields already hold (one span fills one field)."""
    if not extract.is_grounded(spec):
        return None
    return [c.text for c in extract.candidates(spec, cut(doc.text, tier_cfg.max_doc_chars), held)]


@dataclass
class _FieldAnswer:
    prediction: FieldPrediction
    usage: Usage
    error: str | None  # the model failed (the prediction is invalid, `model_error`)
    choice: extract.FieldChoice | None = None  # a grounded field's scored answers (for resolve_shared_spans)


def _answer_fields(runtime: Runtime, prompts: list[str], allowed: list[list[str] | None], spec, tier_cfg: TierModel,
                   masks: list[dict[str, str]], batch: list[Document], tier: Tier) -> list[_FieldAnswer]:
    """One field's answers over a batch. A grounded field: its answers (null and the document's candidates,
    PII placeholders standing in for masked values) scored like a label set, one document at a time (each has
    its own candidates), sent concurrently (an HTTP endpoint serves them in parallel; the in-process runtime
    takes them in turn). A 'string' field: one batched call, any bounded JSON string (placeholders restored
    before the value is checked against the text)."""
    if not extract.is_grounded(spec):
        completions = runtime.complete(prompts, max_tokens=extract.max_tokens(spec, tier_cfg.max_field_tokens),
                                       top_logprobs=10, grammar=extract.grammar(spec))
        out = []
        for doc, completion, mask in zip(batch, completions, masks, strict=True):
            completion = privacy.unmask_completion(completion, mask)
            out.append(_FieldAnswer(extract.parse(completion, spec, doc, tier),
                                    usage_of(completion), completion.error))
        return out

    def one(i: int) -> _FieldAnswer:
        values = allowed[i] or []
        shown = [_mask_value(v, masks[i]) for v in values]
        # As deep as the model's tokens for the longest answer: long ids share many leading digits.
        [scores] = label.score_labels(runtime, [prompts[i]], extract.answer_targets(shown), tier_cfg.top_logprobs,
                                      max_depth=tier_cfg.max_field_tokens)
        choice = extract.answer_distribution(scores, spec, values, shown)
        return _FieldAnswer(extract.choose_from(scores, choice, spec, batch[i], tier), scores.usage, scores.error,
                            choice)
    if len(prompts) == 1:
        return [one(0)]
    with ThreadPoolExecutor(max_workers=max(1, min(len(prompts), tier_cfg.parallel_sequences))) as pool:
        return list(pool.map(one, range(len(prompts))))


def _mask_value(value: str, masks: dict[str, str]) -> str:
    for placeholder, real in masks.items():
        value = value.replace(real, placeholder)
    return value


def _supersede(doc: Document, item: str, previous: LabelPrediction | FieldPrediction | None, tier: Tier) -> None:
    """Keeps an earlier tier's answer that this tier is about to replace (the review queue shows both)."""
    if previous is not None and previous.tier != tier:
        doc.superseded[item] = previous


def escalation_failed(doc: Document, items: Collection[str], why: str) -> None:
    """The large tier gave no answer for these items: the small answers stand, marked; the next run retries them."""
    doc.escalation_failed = True
    for item in items:
        doc.decided_by[item] = "small"
    doc.escalation_reasons.append(f"large:failed({'+'.join(items)}: {why[:200]})")


def _decide_linear(batch: list[Document], task, labeler: LinearLabeler, threshold: float) -> list[Document]:
    """Tier 0: the documents it is confident on are decided here; the rest go on to the small model."""
    rest = []
    for doc, pred in zip(batch, labeler.predict(task, [d.text for d in batch]), strict=True):
        if pred.label is not None and pred.confidence >= threshold:
            doc.labels[task.name] = pred
            doc.decided_by[task.name] = "linear"
        else:
            rest.append(doc)
    return rest


def _expand_min(tier_cfg: TierModel) -> float:
    """Every trie branch is read under contextual calibration (label.EXPAND_MIN says why)."""
    return 0.0 if tier_cfg.contextual_calibration else label.EXPAND_MIN


def _content_free(loaded: LoadedTier, tier_cfg: TierModel, task, source: str) -> dict[str, float] | None:
    """Mean label distribution over content-free inputs; computed once per task and source per worker.
    Keyed by the task's whole definition: a dask worker keeps its models across runs whose tasks change."""
    key = (task.model_dump_json(), source)
    if key not in loaded.content_free:
        listed = label.asks_options(task, tier_cfg)
        prompts = [label.build_prompt(task, tier_cfg.prompt_style, source, t, options=listed)
                   for t in label.CONTENT_FREE_INPUTS]
        scores = [s for s in label.score_labels(loaded.runtime, prompts, label.targets_for(task, tier_cfg.prompt_style),
                                                 tier_cfg.top_logprobs, _expand_min(tier_cfg)) if s.probabilities]
        if not scores:
            return None
        loaded.content_free[key] = {k: sum(s.probabilities[k] for s in scores) / len(scores) for k in task.labels}
    return loaded.content_free[key]


def apply_route(doc: Document, config: Config, tier: Tier) -> None:
    """Records which tier decides each item; failed items go up one tier, with reasons."""
    labels = {k: v for k, v in doc.labels.items() if v.tier == tier}
    fields = {k: v for k, v in doc.fields.items() if v.tier == tier}
    decision = route(labels, fields, config.thresholds, tier, doc.source)
    for item in decision.passed:
        doc.decided_by[item] = tier
    for item in decision.failed:
        doc.decided_by[item] = "large" if tier == "small" else "review"
    doc.escalation_reasons.extend(f"{tier}:{r}" for r in decision.reasons)


def needs_large(doc: Document) -> bool:
    return any(t == "large" for t in doc.decided_by.values())


def answer_batch(docs: Sequence[Document], loaded: LoadedTier, config: Config, tier: Tier) -> Sequence[Document]:
    """The tier's answers for a batch (the small tier: every item; the large tier: the escalated ones).

    Never raises. A batch the tier fails on: the small tier marks each document (doc.error: it becomes
    an errors row); the large tier restores the small answers, marked escalation_failed (the next run
    retries them), so no half-written large answer lands.
    """
    before = [(dict(d.labels), dict(d.fields), dict(d.superseded)) for d in docs]
    asked = None if tier == "small" else [escalated_items(d) for d in docs]
    try:
        predict(docs, loaded, tier_config(config, tier), config, tier, asked)
    except Exception as e:
        log.exception("%s tier failed on a batch of %d", tier, len(docs))
        for doc, (labels, fields, superseded) in zip(docs, before, strict=True):
            if tier == "small":
                doc.error = f"small tier failed: {type(e).__name__}: {e}"[:500]
            else:
                doc.labels, doc.fields, doc.superseded = labels, fields, superseded
                escalation_failed(doc, sorted(escalated_items(doc)), f"{type(e).__name__}: {e}")
    return docs


def route_after(doc: Document, config: Config, tier: Tier) -> Document:
    """The routing step after a tier: which tier decides each item the tier answered. A document the
    small tier failed on is not routed (it is an error). After a failed large batch the document holds
    no large answers, so routing leaves the items escalation_failed gave back to the small tier."""
    if not doc.error:
        apply_route(doc, config, tier)
    return doc
