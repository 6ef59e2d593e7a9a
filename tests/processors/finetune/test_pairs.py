"""Training pairs are built with the run-time prompt builders."""

from __future__ import annotations

from processors.datasets import LabelledExample
from processors.finetune.pairs import build_pairs, label_tasks_learned, training_tasks
from processors.tasks import extract, label


def test_pairs_use_the_runtime_prompts_and_answers(config):
    examples = [
        LabelledExample("a", "Please refund order 12345 now", labels={"category": "REFUND", "intent": "get_refund"},
                        fields={"order_id": "12345"}, fields_complete=True),
        LabelledExample("b", "I love this shop", labels={"sentiment": "positive", "category": "NOT_A_LABEL",
                                                        "intent": "review"}),
    ]
    tasks, outside = training_tasks(config, examples)
    intent = next(t for t in tasks if t.name == "intent")  # not configured: learned from the data
    assert intent.labels == ["get_refund", "review"]
    assert outside["category"] == 1  # NOT_A_LABEL is left out, and counted
    pairs = build_pairs(config, tasks, examples, null_fields_per_example=1)
    by_kind = {(p.example_id, p.kind): p for p in pairs}
    category = next(t for t in tasks if t.name == "category")
    # A new adapter learns its label sets without the option list, and its version says so.
    expected = label.build_prompt(category, config.small.prompt_style, "tickets", "Please refund order 12345 now",
                                  options=False)
    assert by_kind[("a", "category")].prompt == expected and "Options:" not in expected
    listed = build_pairs(config, tasks, examples, listed={"category"})
    assert listed[0].prompt == label.build_prompt(category, config.small.prompt_style, "tickets",
                                                  "Please refund order 12345 now")
    assert by_kind[("a", "category")].answer == " refund"
    assert ("b", "category") not in by_kind
    assert by_kind[("b", "sentiment")].answer == " positive"
    # what the version records as learned without options: not the configured tasks no example carries
    assert label_tasks_learned(pairs) == ["category", "intent", "sentiment"]
    assert label_tasks_learned(build_pairs(config, tasks, examples[1:])) == ["intent", "sentiment"]
    order = by_kind[("a", "field:order_id")]
    specs = config.fields["tickets"]
    spec = next(s for s in specs if s.name == "order_id")
    assert order.prompt == extract.build_prompt(specs, spec, "base", "tickets", "Please refund order 12345 now")
    assert order.answer == ' "12345",'
    nulls = [p for p in pairs if p.example_id == "a" and p.answer == " null,"]
    assert len(nulls) == 1  # one absent field, so the model also learns null


def test_a_field_value_not_in_the_text_is_not_taught(config):
    ex = LabelledExample("c", "Invoice dated 3 March 2020", source="tickets", fields={"invoice_id": "INV-9"})
    tasks, _ = training_tasks(config, [ex])
    assert not [p for p in build_pairs(config, tasks, [ex]) if p.kind == "field:invoice_id"]


def test_an_invoice_field_is_taught_as_the_document_prints_it(config):
    # invoice2data's JSON holds an ISO date and a plain number; the PDF prints "Aug 3, 2014" and "$4.11".
    # The small tier can only answer spans of the text, so that is what it must learn (the decoy amount and
    # the due date are other candidates of the same types, not the answer).
    text = "Invoice 42183017\nDate: Aug 3, 2014\nDue: Sep 2, 2014\nSubtotal $3.80\nTotal $4.11 USD"
    ex = LabelledExample("aws", text, source="pdf", fields={"invoice_number": "42183017", "date": "2014-08-03",
                                                           "total_amount": "4.11", "currency": "USD"})
    tasks, _ = training_tasks(config, [ex])
    answers = {p.kind: p.answer for p in build_pairs(config, tasks, [ex])}
    assert answers == {"field:invoice_number": ' "42183017",', "field:date": ' "Aug 3, 2014",',
                       "field:total_amount": ' "$4.11",', "field:currency": ' "$",'}
    # each answer is one the run-time grammar allows
    specs = {s.name: s for s in config.fields["pdf"]}
    for kind, answer in answers.items():
        spec = specs[kind.removeprefix("field:")]
        assert answer.strip(' ,"') in [c.text for c in extract.candidates(spec, text)]


def test_a_total_printed_twice_is_taught_where_it_is_written_as_money(config):
    # OYO's JSON total is 1939.0: "Booking 1939" comes first, but the total is the money "Rs 1939.00".
    text = "Booking 1939 nights 2\nTotal Rs 1939.00"
    ex = LabelledExample("oyo", text, source="pdf", fields={"total_amount": "1939.0"})
    tasks, _ = training_tasks(config, [ex])
    [pair] = [p for p in build_pairs(config, tasks, [ex]) if p.kind == "field:total_amount"]
    assert pair.answer == ' "Rs 1939.00",'


def test_a_learned_task_keeps_the_sources_it_was_learned_from(config):
    examples = [
        LabelledExample("t1", "Cancel my order", source="tickets", labels={"urgency": "high"}),
        LabelledExample("t2", "No rush, just asking", source="tickets", labels={"urgency": "low"}),
        LabelledExample("p1", "Invoice 7 from ACME", source="pdf", labels={"doc_kind": "invoice"}),
        LabelledExample("p2", "Contract for services", source="pdf", labels={"doc_kind": "contract"}),
        LabelledExample("t3", "Where is my parcel?", source="tickets", labels={"doc_kind": "contract"}),
    ]
    tasks, _ = training_tasks(config, examples)
    by_name = {t.name: t for t in tasks}
    assert by_name["urgency"].sources == ["tickets"]  # labelled on tickets only: never run on PDFs
    assert by_name["doc_kind"].sources == ["pdf", "tickets"]
    assert not [p for p in build_pairs(config, tasks, examples) if p.kind == "urgency" and p.example_id.startswith("p")]


def test_a_rare_label_of_a_small_label_set_is_repeated_up_to_the_commonest_one(config):
    moods = ["positive"] * 5 + ["negative"] * 3 + ["neutral"] * 1
    examples = [LabelledExample(f"s{i}", f"Ticket number {i} about the shop", labels={"sentiment": mood})
                for i, mood in enumerate(moods)]
    tasks, _ = training_tasks(config, examples)
    pairs = [p for p in build_pairs(config, tasks, examples) if p.kind == "sentiment"]
    counts = {answer: sum(p.answer == answer for p in pairs) for answer in (" positive", " negative", " neutral")}
    assert counts == {" positive": 5, " negative": 5, " neutral": 5}
    # each negative pair once before any twice: the three originals plus two of them again
    negatives = [p.example_id for p in pairs if p.answer == " negative"]
    assert sorted(set(negatives)) == ["s5", "s6", "s7"] and len(negatives) == 5
    # a label set larger than MAX_BALANCED_LABELS is left as the data has it
    many = [LabelledExample(f"i{i}", f"Ticket {i}", labels={"intent": f"intent_{i % 10}" if i < 10 else "intent_0"})
            for i in range(20)]
    tasks, _ = training_tasks(config, many)
    assert len([p for p in build_pairs(config, tasks, many) if p.kind == "intent"]) == 20
