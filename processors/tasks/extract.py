"""Field extraction: one grounded value per field, assembled into one schema-valid record.

The prompt ends inside the JSON object (`... JSON: {"invoice_number": `), so the model writes only the
value. Keys and punctuation are never generated, which is most of the saving on a CPU, and a
document's text cannot add keys.

Grounded types (id, amount, date, email, currency, name): the value is one of the document's
candidate spans of that type (processors/tasks/candidates.py) or null, so a value cannot be invented. A
field with no candidate in the text is null without a model call. The answers are scored like a label
task (label.score_labels over null and each candidate as the model writes it), nothing is generated:
the model's probability of every answer, summed over the written forms of one value ("USD 7,996.12"
and "7,996.12" are one amount), and the most probable value is the answer, its mass the confidence.
After every field of a document is answered, one span fills at most one field (`resolve_shared_spans`):
fields whose answers share a span are decided together, the most probable answer in which none shares one.

Type 'string' has no candidates: a JSON string bounded in length is generated, and it must occur in
the source text (the evidence span). Its confidence is the minimum probability of the tokens that
spell it, which does not shrink with the value's length the way a product would.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from processors.models.base import Completion, probability
from processors.tasks.candidates import GROUNDED_TYPES, Candidate, find_candidates, sum_it_is_part_of
from processors.tasks.label import LabelScores
from processors.tasks.normalize import currency_evidence, find_span, normalize
from processors.tasks.prompts import Style, frame
from schemas.config import FieldSpec
from schemas.records import Document, FieldPrediction, Tier

# v16: an id's leading "#" is not part of it: "bill #72235" was a candidate whose value failed the id validator
# (`not_an_id`), so every such invoice number escalated, and the large tier dropped 4 in 7 of them on fresh values;
# v15: a group of five or more fields sharing a span weighs fewer values per field (at most JOINT_ANSWERS joint
# answers: six fields on one number took 0.96 s per document, nine times more per added field, about two hours
# at ten), and a group too large for one value each falls back to the more confident keeping the span; groups of
# up to four fields (every shipped source) are decided as in v14;
# v14: fields whose answers share a span are decided together (resolve_shared_spans), each confidence given that
# no two share one; the less confident was marked invalid (`span_of`) and escalated;
# v13: grounded fields scored over their answers (null and each candidate) instead of generated under a grammar;
# the probabilities of one value's written forms add up (a letter's "USD 7,996.12" and "7,996.12" had split it);
# v12: a field with the check "total" (schemas/config.py FieldSpec.checks) is invalid when its value and another
# written amount make a third (`part_of_sum:<sum>`): a receipt's SUBTOTAL escalates instead of passing as the total;
# v11: the large tier's system turn and header kept evaluated across documents (LlamaCppRuntime.sequence);
# v10: an amount written with a currency before it is also offered as the number alone ("USD 7,996.12" and
# "7,996.12"): a model that began the number was held by the grammar to another one with the same first digits (a
# line's quantity "7", the subtotal); v9: a number with a percent sign is neither an amount nor an id candidate
# ("plus 7% tax"); no piece of a number is an id ("0.2", "1970.40", the "1.234" of "1.234,56"); an ungrouped
# decimal is an amount ("1970.40");
# v8: a date that ends a sentence ("21.05.2025.") is a date candidate (it was none, and "21.05" an amount);
# v7: grammars in GBNF instead of llguidance (the same answers on the quick start; another engine constrains a
# 'string' field's JSON); v6: a sum of money is no id candidate; v5: one sequence per document (batch-free);
# v4: grounded values
TASK_VERSION = "sluicegate.extract.v16"

# Longest value per field type, in characters: a base model otherwise rambles to the limit.
MAX_VALUE_CHARS = {"id": 32, "amount": 20, "date": 32, "currency": 16, "name": 48, "email": 64, "string": 80}


def value_schema(spec: FieldSpec) -> dict:
    """A JSON string (bounded by type) or null: nothing else can be generated."""
    return {"type": ["string", "null"], "maxLength": MAX_VALUE_CHARS.get(spec.type, 80)}


# Grammars are llama.cpp's own GBNF, not llguidance (%llguidance): llama.cpp keeps one llguidance tokenizer per
# process and rebuilds it whenever another model's vocabulary asks (3-4 s for Gemma's 262k tokens, 2 s for
# Qwen's), so a night that alternates small and large tier batches paid that at every switch. GBNF needs no
# tokenizer, and any llama.cpp server takes it (llguidance is an optional build there).
_VALUE_END = 'root ::= " "? value end?\nend ::= "," | "}"\n'
# One character of a JSON string: anything but a quote, a backslash or a control character, or the escapes
# JSON needs (\u only for control characters: a lone surrogate such as \ud800 could not be written to Parquet).
_JSON_CHAR = r'char ::= [^"\\\x00-\x1F] | "\\" (["\\bfnrt] | "u00" [01] [0-9a-fA-F])' + "\n"


def grammar(spec: FieldSpec) -> str:
    """llama.cpp grammar (GBNF) for the value: `value_schema` (null or a bounded JSON string), plus what
    tokenizers glue to it.

    Tokenizers merge the space after the colon with the quote (' "') and the closing quote with the
    next comma ('",'). A grammar that forbids those tokens makes the model pick null or run on inside
    the string, so an optional leading space and one trailing ',' or '}' are allowed; parse strips them.
    """
    longest = value_schema(spec)["maxLength"]
    return _VALUE_END + f'value ::= "null" | "\\"" char{{0,{longest}}} "\\""\n' + _JSON_CHAR


def is_grounded(spec: FieldSpec) -> bool:
    return spec.type in GROUNDED_TYPES


def candidates(spec: FieldSpec, text: str, held: Iterable[str] = ()) -> list[Candidate]:
    """The spans a grounded field may take in the text the model reads; `held` are the values other
    fields of the document hold (a span that contains one, or is contained in one, is left out)."""
    held = [h.casefold() for h in held if h]
    return [c for c in find_candidates(spec.type, text)
            if "\n" not in c.text and not any(c.text.casefold() in h or h in c.text.casefold() for h in held)]


def _literals(values: Iterable[str]) -> list[str]:
    """The JSON answers allowed: null and each value as a JSON string, as the model writes them."""
    return ["null", *(json.dumps(v, ensure_ascii=False) for v in values)]


def answer_targets(values: Iterable[str]) -> dict[str, str]:
    """Each allowed answer (null and each value as a JSON literal) as the model writes it after the prompt's
    key, up to its closing quote: the quote comes glued to what follows it (`",` in training, `"}` in
    demonstrations), so a value that is the start of another ("7" of "7,996.12") ends where the other goes on,
    and gets the mass its continuation does not take (label.split_candidates)."""
    return {lit: " " + (lit[:-1] if lit.startswith('"') else lit) for lit in _literals(values)}


def max_tokens(spec: FieldSpec, limit: int) -> int:
    return min(limit, MAX_VALUE_CHARS.get(spec.type, 80) + 2)  # a token is at least one character, plus quotes


def build_prompt(fields: list[FieldSpec], field: FieldSpec, style: Style, source: str, text: str,
                 shots: Sequence[tuple[str, str | None]] = ()) -> str:
    """All fields are described (same prefix for every field of a document); the answer starts at one key.
    shots: (text, value or None) demonstrations shown first, answered."""
    lines = "\n".join(f"- {f.name} ({f.type}): {f.description}".rstrip(": ") for f in fields)
    request = ("Copy these fields exactly as written in the text above; use null when a field is absent:\n"
               f"{lines}")
    answer = f'JSON: {{"{field.name}":'  # no trailing space: models write ' "' as one token

    def written(value: str | None) -> str:
        return " " + (json.dumps(value, ensure_ascii=False) if value is not None else "null") + "}"
    if style == "base":
        return frame(style, source, text, f"{request}\n{answer}", [(t, written(v)) for t, v in shots])
    # chatml: the assistant's answer is prefilled
    return frame(style, source, text, request, [(t, answer + written(v)) for t, v in shots]) + answer


def _is_value_start(token: str) -> bool:
    """Could this token start a JSON string-or-null value (what the grammar allows first)?"""
    text = token.lstrip()
    return text.startswith('"') or (bool(text) and ("null".startswith(text) or text.startswith("null")))


def _value_confidence(completion: Completion, literal: str) -> float:
    """Length-robust confidence of the generated value.

    llama.cpp reports each token's probability before the grammar is applied. At the first position
    the grammar allows only a quote or null, while the raw model spreads its mass over anything, so
    the first token is renormalized over the allowed candidates in its top-k: that is the choice
    between "absent" and "present". Inside the string, the raw probabilities of the tokens that
    overlap the value's characters count as they are; the minimum over all of them is the confidence.
    """
    tokens = completion.tokens
    start = completion.text.find(literal)
    if not tokens or start < 0:
        return 0.0
    first = tokens[0]
    allowed = {t: probability(lp) for t, lp in first.top.items() if _is_value_start(t)}
    chosen = probability(first.logprob)
    total = sum(allowed.values()) + (0.0 if first.token in allowed else chosen)
    probs = [chosen / total if total > 0 else 0.0]
    if literal.startswith('"'):  # the characters between the quotes
        inner_start, inner_end = start + 1, start + len(literal) - 1
        pos = len(first.token)
        for token in tokens[1:]:
            end = pos + len(token.token)
            if pos < inner_end and end > inner_start:
                probs.append(probability(token.logprob))
            pos = end
    return min(probs)


def _page_of(doc: Document, offset: int) -> int:
    """1-based page of a character offset in doc.text (pages are joined with a blank line)."""
    pos = 0
    for number, page in enumerate(doc.pages or [doc.text], start=1):
        pos += len(page) + 2
        if offset < pos:
            return number
    return max(len(doc.pages), 1)


def absent(spec: FieldSpec, tier: Tier) -> FieldPrediction:
    """A grounded field with no candidate of its type in the text: null, certainly (no model call)."""
    return FieldPrediction(spec.name, None, None, 1.0, None, None, None, True, tier)


def _invalid(spec: FieldSpec, tier: Tier, problem: str) -> FieldPrediction:
    return FieldPrediction(spec.name, None, None, 0.0, None, None, None, False, tier, [problem])


def parse(completion: Completion, spec: FieldSpec, doc: Document, tier: Tier) -> FieldPrediction:
    """The parse step of a generated value ('string' fields): never raises. Unusable output is an invalid
    prediction naming its problem."""
    if completion.error:
        return _invalid(spec, tier, "model_error")
    literal = completion.text.strip()
    if literal[-1:] in (",", "}"):
        literal = literal[:-1].rstrip()
    try:
        raw = json.loads(literal)
    except (json.JSONDecodeError, ValueError):
        return _invalid(spec, tier, "invalid_json")  # e.g. cut off at the token limit
    if raw is not None and not isinstance(raw, str):
        return _invalid(spec, tier, "not_a_string")
    if raw and any("\ud800" <= ch <= "\udfff" for ch in raw):
        return _invalid(spec, tier, "invalid_json")  # a lone surrogate: no table can hold it
    value = raw.strip() if raw else None
    if value is not None and value.lower() in ("null", "none", "n/a"):
        value = None  # a model writing null as a string means absent
    return _prediction(spec, doc, tier, value, _value_confidence(completion, literal))


@dataclass(frozen=True)
class FieldChoice:
    """A grounded field's answers as the model scored them: probability mass per value (`comparable` key; None
    is null), summed over its written forms, and the form the model liked best for each (None for null)."""

    mass: dict[str | None, float]
    written: dict[str | None, str | None]


def answer_distribution(scores: LabelScores, spec: FieldSpec, values: Sequence[str],
                        shown: Sequence[str] | None = None) -> FieldChoice | None:
    """The distribution choose picks from (None: the scoring failed or answered no candidate). values: the
    candidates; shown: the same as the model read them (PII placeholders), by position."""
    if scores.error or not scores.probabilities or not scores.answered:
        return None
    real = {json.dumps(s, ensure_ascii=False): v for s, v in zip(shown or values, values, strict=True)}
    mass: dict[str | None, float] = {}
    best: dict[str | None, tuple[float, str | None]] = {}
    for literal, p in scores.probabilities.items():
        p = p if math.isfinite(p) and p > 0 else 0.0
        value = real.get(literal)  # None: null (an unknown key cannot come back: the keys are the targets)
        key = comparable(spec.type, value)
        mass[key] = mass.get(key, 0.0) + p
        if p > best.get(key, (-1.0, None))[0]:
            best[key] = (p, value)
    return FieldChoice(mass, {k: v for k, (_, v) in best.items()})


def choose(scores: LabelScores, spec: FieldSpec, doc: Document, tier: Tier, values: Sequence[str],
           shown: Sequence[str] | None = None) -> FieldPrediction:
    """The parse step of a grounded field scored over its answers (answer_targets): never raises.

    The value with the most probability, summed over its written forms (`comparable`: "USD 7,996.12" and
    "7,996.12", "#37777" and "37777"), is the answer; that sum is its confidence, and the form the model
    liked best is the value written (its span). values: the candidates; shown: the same as the model read
    them (PII placeholders), by position."""
    return choose_from(scores, answer_distribution(scores, spec, values, shown), spec, doc, tier)


def choose_from(scores: LabelScores, choice: FieldChoice | None, spec: FieldSpec, doc: Document,
                tier: Tier) -> FieldPrediction:
    """choose, on the distribution answer_distribution made of these scores (a caller that keeps the
    distribution computes it once)."""
    if scores.error or not scores.probabilities:
        return _invalid(spec, tier, "model_error")
    if choice is None:  # the model's likely next tokens start no allowed answer: it answered something else
        return _invalid(spec, tier, "not_a_candidate")
    key = max(choice.mass, key=lambda k: (choice.mass[k], k is None))  # a tie goes to null: nothing claimed
    return _prediction(spec, doc, tier, choice.written[key], min(1.0, choice.mass[key]))


def _prediction(spec: FieldSpec, doc: Document, tier: Tier, value: str | None, confidence: float) -> FieldPrediction:
    """A value the model gave (None: absent), checked against the document: normalised, found in the text
    (its span and page), and the field's checks."""
    if value is None:
        return FieldPrediction(spec.name, None, None, confidence, None, None, None, True, tier)
    normalized, problems = normalize(spec.type, value)
    span = find_span(doc.text, value)
    if span is None and spec.type == "currency" and normalized:  # "USD" is evidenced by "$" on the page
        span = next((sp for alt in currency_evidence(normalized) if (sp := find_span(doc.text, alt))), None)
    if span is None:
        problems.append("not_in_source")
    if "total" in spec.checks and normalized and (whole := sum_it_is_part_of(normalized, doc.text)):
        problems.append(f"part_of_sum:{whole}")  # a subtotal: the value is kept for review, and escalates
    return FieldPrediction(
        spec.name, value, normalized, confidence,
        _page_of(doc, span[0]) if span else None,
        span[0] if span else None, span[1] if span else None,
        not problems, tier, problems,
    )


# Answers per field weighed when fields that share a span are decided together (the rest of a field's mass is
# spread too thin to change the joint answer): at most this many values besides null ...
JOINT_VALUES = 8
# ... and at most this many joint answers in all (each field's choices multiply: 9 per field for four fields is
# 6,561; for ten it would be 3.5 billion). A larger group weighs fewer values per field (values_per_field).
JOINT_ANSWERS = 10_000


def values_per_field(n_fields: int) -> int:
    """How many values besides null each of n fields that share a span weighs, so that the joint answers stay
    within JOINT_ANSWERS; 0: not even one each (the group is not decided jointly)."""
    for k in range(JOINT_VALUES, 0, -1):
        if (k + 1) ** n_fields <= JOINT_ANSWERS:
            return k
    return 0


def resolve_shared_spans(fields: dict[str, FieldPrediction], specs: dict[str, FieldSpec], doc: Document | None = None,
                         choices: dict[str, FieldChoice] | None = None,
                         calibrate: Callable[[FieldPrediction], FieldPrediction] = lambda p: p,
                         ) -> dict[str, FieldPrediction]:
    """One span fills at most one field. Where fields' answers overlap in the text (an order number taken as
    the invoice number too), the fields that share it are decided together when each has its scored answers
    (choices): the most probable joint answer in which no two fields share a span, each field's confidence its
    probability given that constraint (decide_jointly; calibrate maps it as the tier maps its answers). Without
    them (a generated field, a failed scoring), the more confident keeps the span and the other is marked invalid
    (`span_of:<field>`), so it escalates. Currencies are exempt: "$" is part of the amount "$4.11"."""
    out = dict(fields)
    held = [name for _, name in sorted(((p.confidence, name) for name, p in fields.items()
                                        if p.value is not None and p.span_start is not None
                                        and specs[name].type != "currency"), reverse=True)]

    def overlap(a: str, b: str) -> bool:
        return fields[a].span_start < fields[b].span_end and fields[b].span_start < fields[a].span_end
    for group in _sharing_groups(held, overlap):
        if doc is not None and choices and all(n in choices for n in group):
            others = [(fields[n].span_start, fields[n].span_end) for n in held if n not in group]
            joint = decide_jointly({n: choices[n] for n in group}, doc.text, others)
            if joint is not None:
                for name, (value, confidence) in joint.items():
                    out[name] = calibrate(_prediction(specs[name], doc, fields[name].tier, value, confidence))
                continue
        kept: list[str] = []
        for name in group:  # most confident first
            winner = next((k for k in kept if overlap(k, name)), None)
            if winner is None:
                kept.append(name)
            else:
                p = fields[name]
                out[name] = replace(p, value=None, normalized=None, confidence=0.0, page=None, span_start=None,
                                    span_end=None, valid=False, problems=[f"span_of:{winner}"])
    return out


def _sharing_groups(names: list[str], overlap: Callable[[str, str], bool]) -> list[list[str]]:
    """The fields whose spans overlap, directly or through another, in groups of two or more (in names' order)."""
    group_of = {n: i for i, n in enumerate(names)}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if overlap(a, b) and group_of[a] != group_of[b]:
                old, new = group_of[b], group_of[a]
                group_of = {n: new if g == old else g for n, g in group_of.items()}
    groups: dict[int, list[str]] = {}
    for n in names:
        groups.setdefault(group_of[n], []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def decide_jointly(choices: dict[str, FieldChoice], text: str, taken: Sequence[tuple[int, int]] = (),
                   ) -> dict[str, tuple[str | None, float]] | None:
    """The most probable joint answer of fields whose answers are independent scores, under the constraint
    that no two fields' values share a span of the text and none overlaps a span already taken: for each
    field its written value (None: null) and its probability given the constraint (the mass of the joint
    answers that agree with it, over all allowed ones). None when no allowed answer has any mass.

    Each field's most probable values (values_per_field: JOINT_VALUES, fewer in a group of five or more) and null
    are weighed; a value not found in the text constrains nothing (it is invalid as `not_in_source` anyway). None
    too for a group too large to weigh even one value per field."""
    names = list(choices)
    per_field = values_per_field(len(names))
    if per_field == 0:
        return None
    options: list[list[tuple[str | None, float, tuple[int, int] | None]]] = []
    for n in names:
        c = choices[n]
        values = sorted((k for k in c.mass if k is not None), key=lambda k: -c.mass[k])[:per_field]
        opts: list[tuple[str | None, float, tuple[int, int] | None]] = [(None, c.mass.get(None, 0.0), None)]
        for k in values:
            span = find_span(text, c.written[k]) if c.written.get(k) else None
            if span is None or not any(span[0] < e and s < span[1] for s, e in taken):
                opts.append((k, c.mass[k], span))
        options.append(opts)
    total = 0.0
    best: tuple[float, tuple] | None = None
    agree = [dict.fromkeys([o[0] for o in opts], 0.0) for opts in options]
    for combo in itertools.product(*options):
        weight = math.prod(o[1] for o in combo)
        spans = [o[2] for o in combo if o[2] is not None]
        if weight <= 0 or any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:]):
            continue
        total += weight
        for i, o in enumerate(combo):
            agree[i][o[0]] += weight
        if best is None or weight > best[0]:
            best = (weight, combo)
    if best is None or total <= 0:
        return None
    return {n: (choices[n].written.get(o[0]), min(1.0, agree[i][o[0]] / total))
            for i, (n, o) in enumerate(zip(names, best[1], strict=True))}


# --- scoring against gold values (evaluation) ----------------------------------------------------

def comparable(field_type: str, value: str | None) -> str | None:
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
    return comparable(field_type, gold) == comparable(field_type, predicted)


@dataclass(frozen=True)
class FieldMetrics:
    """Fields' quality on gold values, over present values (exact match over mostly-absent fields would
    reward answering null)."""

    precision: float  # of the values given, the share that match a present gold value
    recall: float  # of the present gold values, the share found
    f1: float  # harmonic mean of the two (NaN: no value given and none present)
    absent_accuracy: float  # of the items whose gold is absent, the share answered absent

    @property
    def quality(self) -> float:
        """The figure cascades and versions are compared on: F1 over present values."""
        return self.f1


def field_metrics(gold: list[str | None], predicted: list[str | None], correct: list[bool]) -> FieldMetrics:
    """Precision, recall and F1 over present values, and accuracy on absent ones; `correct` is field_match
    per item. A wrong value where the gold is present counts against both precision and recall."""
    given = [p is not None and p.strip() != "" for p in predicted]
    present = [g is not None and g.strip() != "" for g in gold]
    hit = sum(c and g and p for g, p, c in zip(present, given, correct, strict=True))
    n_given, n_present = sum(given), sum(present)
    precision = hit / n_given if n_given else float("nan")
    recall = hit / n_present if n_present else float("nan")
    if n_given == 0 and n_present == 0:
        f1 = float("nan")
    else:  # no value given (or none present): precision or recall is 0 for F1's purpose
        f1 = 2 * hit / (n_given + n_present)
    n_absent = len(present) - n_present
    absent_ok = sum(not g and not p for g, p in zip(present, given, strict=True))
    return FieldMetrics(precision, recall, f1, absent_ok / n_absent if n_absent else float("nan"))
