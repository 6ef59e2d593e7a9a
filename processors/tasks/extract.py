"""Field extraction: JSON-schema-constrained decoding, one JSON object with every requested field.

Each value is checked against the source text (it must occur there: the evidence span) and its
type's validator; its confidence is the minimum probability of the tokens that spell it, which does
not shrink with the value's length the way a product would.
"""

from __future__ import annotations

import json
import math

from processors.models.base import Completion
from processors.tasks.normalize import find_span, normalize
from processors.tasks.prompts import Style, frame
from schemas.config import FieldSpec
from schemas.records import Document, FieldPrediction, Tier

TASK_VERSION = "sluicegate.extract.v1"


# Longest value per field type, in characters: generated tokens are the small tier's main cost
# (about 75 tokens/s on 2 cores, batched), and a base model otherwise rambles to the limit.
MAX_VALUE_CHARS = {"id": 32, "amount": 20, "date": 32, "currency": 16, "name": 48, "email": 64, "string": 80}


def json_schema(fields: list[FieldSpec]) -> dict:
    """Every field present, string or null, nothing else: a document cannot add keys."""
    return {
        "type": "object",
        "properties": {f.name: {"type": ["string", "null"], "maxLength": MAX_VALUE_CHARS.get(f.type, 80)}
                       for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def build_prompt(fields: list[FieldSpec], style: Style, source: str, text: str) -> str:
    lines = "\n".join(f"- {f.name} ({f.type}): {f.description}".rstrip(": ") for f in fields)
    request = ("Copy these fields exactly as written in the text above; use null when a field is absent:\n"
               f"{lines}")
    return frame(style, source, text, f"{request}\nJSON:" if style == "base" else request)


def _token_offsets(completion: Completion) -> list[tuple[int, int, float]]:
    """(start, end, probability) of each generated token within completion.text."""
    out, pos = [], 0
    for token in completion.tokens:
        out.append((pos, pos + len(token.token), math.exp(token.logprob)))
        pos += len(token.token)
    return out


def _value_confidence(completion: Completion, field: str, value: str | None) -> float:
    """Min probability over the tokens that spell the field's value (or its null) in the generated JSON."""
    text = completion.text
    key = text.find(json.dumps(field))
    if key < 0:
        return 0.0
    literal = json.dumps(value, ensure_ascii=False) if value is not None else "null"
    start = text.find(literal, key + len(field) + 2)
    if start < 0:
        start = text.find(json.dumps(value) if value is not None else "null", key)
        if start < 0:
            return 0.0
    end = start + len(literal)
    probs = [p for s, e, p in _token_offsets(completion) if s < end and e > start]
    return min(probs) if probs else 0.0


def _page_of(doc: Document, offset: int) -> int:
    """1-based page of a character offset in doc.text (pages are joined with a blank line)."""
    pos = 0
    for number, page in enumerate(doc.pages or [doc.text], start=1):
        pos += len(page) + 2
        if offset < pos:
            return number
    return max(len(doc.pages), 1)


def parse(completion: Completion, fields: list[FieldSpec], doc: Document, tier: Tier) -> dict[str, FieldPrediction]:
    """The parse step: never raises. Unusable output makes every requested field invalid."""
    def invalid(spec: FieldSpec, problem: str) -> FieldPrediction:
        return FieldPrediction(spec.name, None, None, 0.0, None, None, None, False, tier, [problem])

    if completion.error:
        return {f.name: invalid(f, "model_error") for f in fields}
    try:
        data = json.loads(completion.text)
    except (json.JSONDecodeError, ValueError):
        return {f.name: invalid(f, "invalid_json") for f in fields}
    if not isinstance(data, dict):
        return {f.name: invalid(f, "invalid_json") for f in fields}
    out: dict[str, FieldPrediction] = {}
    for spec in fields:
        raw = data.get(spec.name)
        value = None if raw is None else str(raw).strip() or None
        confidence = _value_confidence(completion, spec.name, raw if isinstance(raw, str) or raw is None else None)
        if spec.name not in data:
            out[spec.name] = invalid(spec, "missing_key")
            continue
        if value is None:
            out[spec.name] = FieldPrediction(spec.name, None, None, confidence, None, None, None, True, tier)
            continue
        normalized, problems = normalize(spec.type, value)
        span = find_span(doc.text, value)
        if span is None:
            problems.append("not_in_source")
        out[spec.name] = FieldPrediction(
            spec.name, value, normalized, confidence,
            _page_of(doc, span[0]) if span else None,
            span[0] if span else None, span[1] if span else None,
            not problems, tier, problems,
        )
    return out
