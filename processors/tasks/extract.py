"""Field extraction: one JSON-schema-constrained value per field, assembled into one schema-valid record.

The prompt ends inside the JSON object (`... JSON: {"invoice_number": `), so the model writes only the
value: a JSON string or null, bounded by the field type's length. Keys and punctuation are never
generated, which is most of the saving on a CPU (about 75 generated tokens/s batched on 2 cores), and
a document's text cannot add keys. Each value is checked against the source text (it must occur
there: the evidence span) and its type's validator. Its confidence is the minimum probability of the
tokens that spell it, which does not shrink with the value's length the way a product would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from processors.models.base import Completion
from processors.tasks.normalize import currency_evidence, find_span, normalize
from processors.tasks.prompts import Style, frame
from schemas.config import FieldSpec
from schemas.records import Document, FieldPrediction, Tier

TASK_VERSION = "sluicegate.extract.v3"  # v3: chat-template markers in documents are inert text

# Longest value per field type, in characters: a base model otherwise rambles to the limit.
MAX_VALUE_CHARS = {"id": 32, "amount": 20, "date": 32, "currency": 16, "name": 48, "email": 64, "string": 80}


def value_schema(spec: FieldSpec) -> dict:
    """A JSON string (bounded by type) or null: nothing else can be generated."""
    return {"type": ["string", "null"], "maxLength": MAX_VALUE_CHARS.get(spec.type, 80)}


def grammar(spec: FieldSpec) -> str:
    """llama.cpp (llguidance) grammar for the value: the JSON schema, plus what tokenizers glue to it.

    Tokenizers merge the space after the colon with the quote (' "') and the closing quote with the
    next comma ('",'). A grammar that forbids those tokens makes the model pick null or run on inside
    the string, so an optional leading space and one trailing ',' or '}' are allowed; parse strips them.
    """
    return '%llguidance {}\nstart: " "? value end?\nend: "," | "}"\nvalue: %json ' + json.dumps(value_schema(spec))


def max_tokens(spec: FieldSpec, limit: int) -> int:
    return min(limit, MAX_VALUE_CHARS.get(spec.type, 80) + 2)  # a token is at least one character, plus quotes


def build_prompt(fields: list[FieldSpec], field: FieldSpec, style: Style, source: str, text: str) -> str:
    """All fields are described (same prefix for every field of a document); the answer starts at one key."""
    lines = "\n".join(f"- {f.name} ({f.type}): {f.description}".rstrip(": ") for f in fields)
    request = ("Copy these fields exactly as written in the text above; use null when a field is absent:\n"
               f"{lines}")
    answer = f'JSON: {{"{field.name}":'  # no trailing space: models write ' "' as one token
    if style == "base":
        return frame(style, source, text, f"{request}\n{answer}")
    return frame(style, source, text, request) + answer  # chatml: the assistant's answer is prefilled


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
    allowed = {t: math.exp(lp) for t, lp in first.top.items() if _is_value_start(t)}
    chosen = math.exp(first.logprob)
    total = sum(allowed.values()) + (0.0 if first.token in allowed else chosen)
    probs = [chosen / total if total > 0 else 0.0]
    if literal.startswith('"'):  # the characters between the quotes
        inner_start, inner_end = start + 1, start + len(literal) - 1
        pos = len(first.token)
        for token in tokens[1:]:
            end = pos + len(token.token)
            if pos < inner_end and end > inner_start:
                probs.append(math.exp(token.logprob))
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


def parse(completion: Completion, spec: FieldSpec, doc: Document, tier: Tier) -> FieldPrediction:
    """The parse step: never raises. Unusable output is an invalid prediction naming its problem."""
    def invalid(problem: str) -> FieldPrediction:
        return FieldPrediction(spec.name, None, None, 0.0, None, None, None, False, tier, [problem])

    if completion.error:
        return invalid("model_error")
    literal = completion.text.strip()
    if literal[-1:] in (",", "}"):
        literal = literal[:-1].rstrip()
    try:
        raw = json.loads(literal)
    except (json.JSONDecodeError, ValueError):
        return invalid("invalid_json")  # e.g. cut off at the token limit
    if raw is not None and not isinstance(raw, str):
        return invalid("not_a_string")
    confidence = _value_confidence(completion, literal)
    value = raw.strip() if raw else None
    if value is not None and value.lower() in ("null", "none", "n/a"):
        value = None  # a model writing null as a string means absent
    if value is None:
        return FieldPrediction(spec.name, None, None, confidence, None, None, None, True, tier)
    normalized, problems = normalize(spec.type, value)
    span = find_span(doc.text, value)
    if span is None and spec.type == "currency" and normalized:  # "USD" is evidenced by "$" on the page
        span = next((sp for alt in currency_evidence(normalized) if (sp := find_span(doc.text, alt))), None)
    if span is None:
        problems.append("not_in_source")
    return FieldPrediction(
        spec.name, value, normalized, confidence,
        _page_of(doc, span[0]) if span else None,
        span[0] if span else None, span[1] if span else None,
        not problems, tier, problems,
    )


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
