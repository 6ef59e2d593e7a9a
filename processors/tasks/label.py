"""Label tasks (category, sentiment, intent ...): the probability mass over the label set.

The model is never asked to generate a label. We read the next-token distribution where the answer
starts and walk a trie of the labels' texts: labels that share a first token ("check invoice",
"check refund policy") are told apart by one more cached step. The result is a distribution over
exactly the configured labels, so no output can fall outside the label set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.models.base import Runtime, probability, usage_of
from processors.tasks.prompts import Style, answer_lead, frame
from schemas.config import LabelTask, TierModel
from schemas.records import LabelPrediction, Tier, Usage

# v5: the large tier's system turn and header kept evaluated across documents (LlamaCppRuntime.sequence);
# v4: trie branches under 1 % not read further; v3: each document evaluated as its own sequence (batch-free);
# v2: inert markers
TASK_VERSION = "sluicegate.label.v5"
CONTENT_FREE_INPUTS = ("N/A", "", "[document]")  # for contextual calibration (Zhao et al., 2021)
_MAX_DEPTH = 6
# A branch of the trie (labels sharing the tokens read so far) with less probability than this is not read
# further: its labels share its mass evenly. Every label in it is below 1 %, so the top label and its raw
# probability stay exact, while a large label set with shared prefixes no longer costs a model call for
# every unlikely branch. Not under contextual calibration, which divides each label by its own content-free
# probability: an evenly shared value could change which label wins (the tiers pass expand_min=0 then).
EXPAND_MIN = 0.01


def build_prompt(task: LabelTask, style: Style, source: str, text: str,
                 shots: Sequence[tuple[str, str]] = (), options: bool = True) -> str:
    """The document, the question and the options, ending where the label starts. shots: (text, label)
    demonstrations shown first, answered. options=False: no option list, for a model that learned the
    label set (the answer is still scored over exactly the labels)."""
    request = task.question
    if options:
        listed = ", ".join(task.verbalizer(label) for label in task.labels)
        request += f"\nOptions: {listed}" if style == "base" else f"\nAnswer with one of: {listed}"
    if style == "base":
        request += "\nAnswer:"
    answered = [(t, answer_lead(style) + task.verbalizer(label)) for t, label in shots]
    return frame(style, source, text, request, answered)


def asks_options(task: LabelTask, tier: TierModel) -> bool:
    """Whether this tier's prompts for the task list its options (not for a task its adapter learned)."""
    return task.name not in tier.tasks_without_options


@dataclass
class LabelScores:
    probabilities: dict[str, float]  # sums to 1 over the label set
    error: str | None
    usage: Usage
    # Whether any of the first position's top-k tokens starts a label. False: every label got the floor mass, so
    # the distribution is even and says nothing (an endpoint answering something else entirely).
    answered: bool = True


def _starts(token: str, rest: str) -> bool:
    """Whether a candidate token begins a label's remaining text (the trie walk's one match rule)."""
    return bool(token) and rest.startswith(token)


def split_candidates(top: dict[str, float], remaining: dict[str, str]) -> list[tuple[float, dict[str, str]]]:
    """Groups labels by the candidate token that starts their remaining text; pure, never raises.

    top: candidate token text -> probability. remaining: label -> text still to match.
    Returns (mass, {label: rest after the token}) groups. A label with no matching candidate gets
    half the smallest candidate's mass (it was not in the top-k). A label already fully matched
    (a prefix of another label) gets the mass not claimed by the other labels' continuations.
    """
    floor = 0.5 * min(top.values()) if top else 1e-6
    groups: dict[str, tuple[float, dict[str, str]]] = {}
    singles: list[tuple[float, dict[str, str]]] = []
    done = [label for label, rest in remaining.items() if not rest]
    for label, rest in remaining.items():
        if not rest:
            continue
        matches = [t for t in top if _starts(t, rest)]
        if not matches:
            singles.append((floor, {label: ""}))
            continue
        token = max(matches, key=len)  # the canonical tokenization is (nearly always) the longest piece
        mass, members = groups.get(token, (top[token], {}))
        members[label] = rest[len(token):]
        groups[token] = (mass, members)
    claimed = sum(mass for mass, _ in groups.values())
    for label in done:
        singles.append((max(floor, 1.0 - claimed), {label: ""}))
    return list(groups.values()) + singles


def score_labels(runtime: Runtime, prompts: list[str], targets: dict[str, str],
                 top_logprobs: int, expand_min: float = EXPAND_MIN, max_depth: int = _MAX_DEPTH) -> list[LabelScores]:
    """Distributions over the label set for a batch of prompts: one call per trie depth, for each branch that
    holds at least expand_min of a prompt's mass (0: every branch). Labels that share their first max_depth
    tokens share their mass evenly (a grounded field's answers pass a deeper limit: long ids share digits)."""
    probs = [dict.fromkeys(targets, 0.0) for _ in prompts]
    errors: list[str | None] = [None] * len(prompts)
    usage = [Usage() for _ in prompts]
    answered = [False] * len(prompts)
    # pending: (prompt index, answer prefix so far, labels still in play -> remaining text, weight)
    pending = [(i, "", dict(targets), 1.0) for i in range(len(prompts))]
    for depth in range(max_depth):
        if not pending:
            break
        completions = runtime.complete([prompts[i] + prefix for i, prefix, _, _ in pending],
                                       max_tokens=1, top_logprobs=top_logprobs)
        next_pending = []
        for (i, prefix, remaining, weight), comp in zip(pending, completions, strict=False):
            usage[i].add(usage_of(comp))
            if comp.error or not comp.tokens:
                errors[i] = comp.error or "no tokens returned"
                continue
            top = {t: probability(lp) for t, lp in comp.tokens[0].top.items()}
            if depth == 0:
                answered[i] = any(_starts(t, rest) for t in top for rest in remaining.values())
            groups = split_candidates(top, remaining)
            total = sum(mass for mass, _ in groups) or 1.0
            for mass, members in groups:
                share = weight * mass / total
                if len(members) == 1:
                    probs[i][next(iter(members))] += share
                elif depth == max_depth - 1 or share < expand_min:  # identical this deep, or too unlikely
                    for label in members:
                        probs[i][label] += share / len(members)
                else:
                    token = targets[next(iter(members))][len(prefix):][: _common_len(targets, members, prefix)]
                    next_pending.append((i, prefix + token, members, share))
        pending = next_pending
    out = []
    for p, err, u, ok in zip(probs, errors, usage, answered, strict=False):
        total = sum(p.values())
        dist = {k: v / total for k, v in p.items()} if total > 0 and not err else {}
        out.append(LabelScores(dist, err, u, ok))
    return out


def _common_len(targets: dict[str, str], members: dict[str, str], prefix: str) -> int:
    """Length of the token just consumed: the part of the label text between prefix and rest."""
    label = next(iter(members))
    return len(targets[label]) - len(prefix) - len(members[label])


def targets_for(task: LabelTask, style: Style) -> dict[str, str]:
    lead = answer_lead(style)
    return {label: lead + task.verbalizer(label) for label in task.labels}


def calibrate(probabilities: dict[str, float], content_free: dict[str, float] | None) -> dict[str, float]:
    """Divides by the content-free distribution so a label the model likes by default is not picked."""
    if not probabilities or not content_free:
        return probabilities
    scaled = {k: v / max(content_free.get(k, 0.0), 1e-6) for k, v in probabilities.items()}
    total = sum(scaled.values())
    return {k: v / total for k, v in scaled.items()} if total > 0 else probabilities


def to_prediction(task: LabelTask, scores: LabelScores, content_free: dict[str, float] | None,
                  tier: Tier) -> LabelPrediction:
    """The parse step: never raises; an unusable answer is an invalid prediction with confidence 0."""
    if scores.error or not scores.probabilities:
        return LabelPrediction(task.name, None, 0.0, {}, tier, valid=False, error=scores.error or "no scores")
    dist = calibrate(scores.probabilities, content_free)
    label = max(dist, key=dist.get)
    return LabelPrediction(task.name, label, float(dist[label]), dist, tier)


# --- scoring against gold labels (evaluation) ----------------------------------------------------


@dataclass(frozen=True)
class LabelMetrics:
    """A label task's quality on gold labels."""

    accuracy: float
    macro_f1: float
    # Per gold label: its items, and the share of them answered with it. Where accuracy comes from: on skewed
    # data a tier that leans to the common label wins accuracy and loses the rare ones (airline sentiment).
    label_support: dict[str, int] = field(default_factory=dict)
    label_recall: dict[str, float] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        """The figure cascades and versions are compared on: accuracy."""
        return self.accuracy


def label_metrics(gold: list[str], predicted: list[str | None]) -> LabelMetrics:
    """Accuracy and macro-F1 (over the gold and predicted labels; an invalid answer is always wrong), and each
    gold label's recall.

    Per label F1 = 2 tp / (2 tp + fp + fn), as scikit-learn's f1_score(average="macro", zero_division=0),
    counted directly: promotion bootstraps it hundreds of times (processors/finetune/compare.py)."""
    if not gold:
        return LabelMetrics(float("nan"), float("nan"))
    acc = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    labels = set(gold) | {p for p in predicted if p is not None}
    hits = Counter(g for g, p in zip(gold, predicted, strict=True) if g == p)
    golds, answers = Counter(gold), Counter(p for p in predicted if p is not None)
    f1 = [2 * hits[lab] / (golds[lab] + answers[lab]) for lab in sorted(labels)]
    return LabelMetrics(acc, sum(f1) / len(f1), label_support=dict(sorted(golds.items())),
                        label_recall={lab: hits[lab] / n for lab, n in sorted(golds.items())})
