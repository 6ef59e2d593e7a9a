"""Property tests of the parse steps and routing: whatever a model returns, they never raise, and their
answers stay inside the label set, the schema and the source text."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.models.base import Completion, TokenLogprob
from processors.routing import overall_tier, route
from processors.tasks import extract, label
from processors.tasks.normalize import find_span, normalize
from schemas.config import FieldSpec, LabelTask, Thresholds
from schemas.records import Document, FieldPrediction, LabelPrediction

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)
FIELD_TYPES = ["string", "id", "date", "amount", "currency", "email", "name"]
TASK = LabelTask(name="category", labels=["ORDER", "ORDER_STATUS", "REFUND", "check invoice", "check"])

floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-50, 0)
token_text = st.text(max_size=6) | st.sampled_from(['"', ' "', "null", '",', "}", " n", "ORDER", " check"])
tokens = st.builds(TokenLogprob, token=token_text, logprob=floats,
                   top=st.dictionaries(token_text, floats, max_size=6))
completions = st.builds(Completion, text=st.text(max_size=60) | st.sampled_from(['"A-1"', ' null', ' "12.50",', '"']),
                        tokens=st.lists(tokens, max_size=6), prompt_tokens=st.integers(0, 99),
                        completion_tokens=st.integers(0, 99), error=st.none() | st.text(max_size=10))
texts = st.text(max_size=200) | st.sampled_from(["Order A-1 total 12.50 EUR on 2026-11-03", ""])


@FUZZ
@given(completion=completions, field_type=st.sampled_from(FIELD_TYPES), text=texts,
       pages=st.lists(st.text(max_size=50), max_size=3))
def test_extract_parse_never_raises_and_accepts_only_evidenced_values(completion, field_type, text, pages):
    doc = Document("d", "pdf", "u", text, pages=pages)
    pred = extract.parse(completion, FieldSpec(name="f", type=field_type), doc, "small")
    assert isinstance(pred, FieldPrediction) and pred.field == "f"
    if pred.valid and pred.value is not None:
        assert pred.span_start is not None and 0 <= pred.span_start <= pred.span_end <= len(text)
        assert find_span(text, pred.value) is not None or field_type == "currency"
        assert len(pred.value) <= extract.MAX_VALUE_CHARS[field_type] or not completion.text.strip()
    if not pred.valid:
        assert pred.problems


@FUZZ
@given(field_type=st.sampled_from(FIELD_TYPES), text=texts, probabilities=st.lists(floats, max_size=6),
       error=st.none() | st.text(max_size=5))
def test_extract_choose_never_raises_and_answers_a_candidate_of_the_text(field_type, text, probabilities, error):
    # What score_labels can hand over for a grounded field: its keys are the targets (null and the candidates).
    spec = FieldSpec(name="f", type=field_type)
    values = [c.text for c in extract.candidates(spec, text)]
    keys = list(extract.answer_targets(values))
    scores = label.LabelScores(dict(zip(keys, probabilities, strict=False)), error, None)
    pred = extract.choose(scores, spec, Document("d", "pdf", "u", text), "small", values)
    assert isinstance(pred, FieldPrediction) and 0.0 <= pred.confidence <= 1.0
    assert pred.value is None or pred.value in values
    if not pred.valid:
        assert pred.problems


@FUZZ
@given(text=texts, first=st.lists(floats, max_size=6), second=st.lists(floats, max_size=6))
def test_fields_sharing_a_span_are_resolved_without_raising_and_never_share_one(text, first, second):
    """Two id fields scored over the same candidates, whatever their probabilities: resolve_shared_spans never
    raises, and no two valid values it leaves overlap in the text."""
    specs = {n: FieldSpec(name=n, type="id") for n in ("order_id", "invoice_id")}
    doc = Document("d", "tickets", "u", text)
    values = [c.text for c in extract.candidates(specs["order_id"], text)]
    keys = list(extract.answer_targets(values))
    fields, choices = {}, {}
    for name, probabilities in (("order_id", first), ("invoice_id", second)):
        scores = label.LabelScores(dict(zip(keys, probabilities, strict=False)), None, None)
        fields[name] = extract.choose(scores, specs[name], doc, "small", values)
        if (choice := extract.answer_distribution(scores, specs[name], values)) is not None:
            choices[name] = choice
    out = extract.resolve_shared_spans(fields, specs, doc, choices)
    held = [p for p in out.values() if p.valid and p.value is not None and p.span_start is not None]
    assert all(0.0 <= p.confidence <= 1.0 for p in out.values())
    assert len(held) < 2 or not (held[0].span_start < held[1].span_end and held[1].span_start < held[0].span_end)


@FUZZ
@given(probabilities=st.dictionaries(st.sampled_from(TASK.labels + ["HACKED", ""]), floats, max_size=7),
       content_free=st.none() | st.dictionaries(st.sampled_from(TASK.labels), floats, max_size=5),
       error=st.none() | st.text(max_size=5))
def test_to_prediction_never_raises_and_stays_in_the_label_set(probabilities, content_free, error):
    # What score_labels can hand over: its keys are the targets (the label set); the values anything.
    in_set = {k: v for k, v in probabilities.items() if k in TASK.labels}
    pred = label.to_prediction(TASK, label.LabelScores(in_set, error, None), content_free, "small")
    assert isinstance(pred, LabelPrediction)
    if pred.valid:
        assert pred.label in TASK.labels
    else:
        assert pred.label is None and pred.confidence == 0.0


@FUZZ
@given(top=st.dictionaries(token_text, st.floats(0, 1), max_size=8),
       remaining=st.dictionaries(st.sampled_from(TASK.labels), st.text(max_size=8), max_size=5))
def test_split_candidates_never_raises_and_keeps_every_label(top, remaining):
    groups = label.split_candidates(top, remaining)
    members = [m for _, group in groups for m in group]
    assert sorted(members) == sorted(remaining)  # every label once, none invented
    assert all(mass >= 0 or math.isnan(mass) for mass, _ in groups)


@FUZZ
@given(field_type=st.sampled_from(FIELD_TYPES) | st.text(max_size=5), value=st.text(max_size=80))
def test_normalize_never_raises(field_type, value):
    normalized, problems = normalize(field_type, value)
    assert normalized is None or isinstance(normalized, str)
    assert isinstance(problems, list)


label_preds = st.builds(LabelPrediction, task=st.sampled_from(["category", "sentiment"]),
                        label=st.none() | st.sampled_from(TASK.labels), confidence=floats,
                        probabilities=st.just({}), tier=st.sampled_from(["small", "large"]), valid=st.booleans())
field_preds = st.builds(FieldPrediction, field=st.text(max_size=5), value=st.none() | st.text(max_size=5),
                        normalized=st.none(), confidence=floats, page=st.none(), span_start=st.none(),
                        span_end=st.none(), valid=st.booleans(), tier=st.sampled_from(["small", "large"]),
                        problems=st.lists(st.sampled_from(["not_in_source", "unparseable_date", ""]), max_size=2))
thresholds = st.dictionaries(st.sampled_from(["category", "sentiment", "fields", "other"]),
                             st.builds(Thresholds, small=st.floats(0, 1), large=st.floats(0, 1)), max_size=4)


@FUZZ
@given(labels=st.dictionaries(st.sampled_from(["category", "sentiment"]), label_preds, max_size=2),
       fields=st.dictionaries(st.text(max_size=5), field_preds, max_size=4), thresholds=thresholds,
       tier=st.sampled_from(["small", "large"]))
def test_route_never_raises_and_decides_every_item_once(labels, fields, thresholds, tier):
    decision = route(labels, fields, thresholds, tier)
    items = set(labels) | {f"field:{name}" for name in fields}
    assert set(decision.passed) | set(decision.failed) == items
    assert not set(decision.passed) & set(decision.failed)
    assert len(decision.reasons) == len(decision.failed)
    for name, pred in labels.items():  # invalid or unlabelled answers are never kept
        if not pred.valid or pred.label is None:
            assert name in decision.failed, (name, pred)
    assert overall_tier({i: "small" for i in decision.passed}) == "small"


def test_route_never_keeps_a_nan_confidence():
    nan = float("nan")
    labels = {"category": LabelPrediction("category", "ORDER", nan, {}, "small")}
    fields = {"x": FieldPrediction("x", "v", None, nan, None, None, None, True, "small")}
    decision = route(labels, fields, {}, "small")
    assert set(decision.failed) == {"category", "field:x"}
