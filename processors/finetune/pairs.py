"""Training pairs: the exact prompts the small tier sends at run time, and the answer it should give.

A label task's answer is the label's verbalizer as scored at run time (` cancel order`); a field's
answer is the JSON value as it would write it (` "370795561790",` or ` null,`), which the run time scores
among the field's candidates. Because the prompts come from the same builders as the nightly run, the
adapter is trained on what it will see.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import get_args

from processors.datasets import LabelledExample, label_sets
from processors.tasks import extract, label
from processors.tasks.normalize import find_span
from processors.tasks.prompts import Style, cut
from schemas.config import Config, FieldSpec, LabelTask
from schemas.records import Source

_SOURCES = set(get_args(Source))

# Questions for label tasks that come from the data rather than the configuration.
_QUESTIONS = {
    "intent": "What does the customer want to do?",
    "sentiment": "Is the writer's tone negative, neutral or positive?",
    "category": "Which topic is this about?",
}

# A label task with at most this many labels learns them balanced: each label's pairs are repeated up to the
# commonest label's count. Stops 32 and 34: adapters trained on 800 sentiment examples (412 positive, 237 negative,
# 151 neutral) without the option list read neutral tickets as negative. Larger label sets are left as they are
# (a 77-label task would multiply its pairs, and training time with them).
MAX_BALANCED_LABELS = 8


@dataclass
class Pair:
    prompt: str
    answer: str
    kind: str  # '<task>' or 'field:<name>'
    example_id: str


def training_tasks(config: Config, examples: list[LabelledExample]) -> tuple[list[LabelTask], dict[str, int]]:
    """The configured tasks, plus a task for every label column the configuration does not name.

    A learned task runs only on the sources it was learned from: the sources of the examples that
    carry its label (a task learned from tickets alone does not label PDFs).
    Returns the tasks and, per task, how many examples carry a label outside the task's label set
    (they are left out of that task's pairs, and reported).
    """
    tasks = [t.model_copy(deep=True) for t in config.tasks]
    known = {t.name for t in tasks}
    for name, labels in label_sets(examples).items():
        if name not in known and len(labels) >= 2:
            sources = sorted({ex.source for ex in examples if name in ex.labels} & _SOURCES)
            if not sources:  # labelled only on rows of an unknown source: no pairs to learn from
                continue
            question = _QUESTIONS.get(name, f"Which {name.replace('_', ' ')} fits this document?")
            tasks.append(LabelTask(name=name, labels=labels, question=question, sources=sources))
    outside = {t.name: sum(1 for ex in examples if t.name in ex.labels and ex.labels[t.name] not in t.labels)
               for t in tasks}
    return tasks, outside


def label_tasks_learned(pairs: list[Pair]) -> list[str]:
    """The label tasks the pairs teach (a configured task with no labelled example is not among them)."""
    return sorted({p.kind for p in pairs if not p.kind.startswith("field:")})


def printed_value(spec: FieldSpec, text: str, value: str) -> str | None:
    """The span of `text` that prints a field's gold value, as the small tier would answer it; None when the text
    does not print it.

    A grounded field answers one of its candidates (extract.candidates, as at run time), so the first candidate
    that means the gold value is the answer (for an amount, the first written with more than digits):
    invoice2data's JSON holds "2014-08-03" and "4.11" where the PDF prints "Aug 3, 2014" and "$4.11". A generated
    ('string') field is copied from the text as written.
    """
    if extract.is_grounded(spec):
        meant = [c.text for c in extract.candidates(spec, text) if extract.field_match(spec.type, value, c.text)]
        if spec.type == "amount":  # "Rs 1939.00" is the total; a bare "1939" elsewhere is more likely a line or a code
            meant.sort(key=lambda t: t.isdigit())
        return meant[0] if meant else None
    return value if find_span(text, value) is not None else None


def build_pairs(config: Config, tasks: list[LabelTask], examples: list[LabelledExample], seed: int = 0,
                null_fields_per_example: int = 1, listed: Collection[str] = ()) -> list[Pair]:
    """Pairs for every labelled task of every example, and its fields.

    Label prompts list the options only for the tasks in `listed`. A new adapter learns its label sets without the
    list (the version records those tasks as `tasks_without_options`, and the small tier asks them so): with many
    labels the list costs hundreds of tokens per prompt, in training and in every run (bench/finetune_labels.py).

    Fields: every known field whose value the text prints (`printed_value`: a value the model cannot copy
    from the text would teach it to invent), answered as printed, plus up to `null_fields_per_example` absent
    fields so it also learns to answer null. Unknown fields are left out.
    """
    rng = random.Random(seed)
    style: Style = config.small.prompt_style
    limit = config.small.max_doc_chars
    pairs: list[Pair] = []
    for ex in examples:
        text = cut(ex.text, limit)
        for task in tasks:
            gold = ex.labels.get(task.name)
            if gold is None or gold not in task.labels or ex.source not in task.sources:
                continue
            pairs.append(Pair(label.build_prompt(task, style, ex.source, text, options=task.name in listed),
                              label.targets_for(task, style)[gold], task.name, ex.example_id))
        specs = config.fields.get(ex.source, [])
        present, absent = [], []
        for spec in specs:
            known, value = ex.field_value(spec.name)
            if not known:
                continue
            if value is None:
                absent.append(spec)
            elif (printed := printed_value(spec, text, value)) is not None:
                present.append((spec, printed))
        for spec, value in present:
            pairs.append(Pair(extract.build_prompt(specs, spec, style, ex.source, text),
                              f" {json.dumps(value, ensure_ascii=False)},", f"field:{spec.name}", ex.example_id))
        for spec in rng.sample(absent, min(null_fields_per_example, len(absent))):
            pairs.append(Pair(extract.build_prompt(specs, spec, style, ex.source, text), " null,",
                              f"field:{spec.name}", ex.example_id))
    return balance_labels(pairs, tasks, style, seed)


def balance_labels(pairs: list[Pair], tasks: list[LabelTask], style: Style, seed: int = 0) -> list[Pair]:
    """The pairs, plus repeats of the rarer labels' pairs of each task with at most MAX_BALANCED_LABELS labels,
    so that every label of such a task has as many pairs as its commonest one (repeats drawn in a seeded order,
    each pair once before any twice)."""
    rng = random.Random(seed)
    extra: list[Pair] = []
    for task in tasks:
        if len(task.labels) > MAX_BALANCED_LABELS:
            continue
        label_of = {answer: name for name, answer in label.targets_for(task, style).items()}
        by_label: dict[str, list[Pair]] = {}
        for pair in pairs:
            if pair.kind == task.name:
                by_label.setdefault(label_of[pair.answer], []).append(pair)
        most = max((len(group) for group in by_label.values()), default=0)
        for name in sorted(by_label):
            group = rng.sample(by_label[name], len(by_label[name]))
            extra += [group[i % len(group)] for i in range(most - len(group))]
    return pairs + extra
