import json
import urllib.error
import urllib.request

import pytest

from processors.models.weights import PACKAGED_MODELS, model_path, model_version


def test_packaged_small_model_is_assembled_once_and_verified():
    path = model_path("gemma3-270m")
    assert path.stat().st_size == PACKAGED_MODELS["gemma3-270m"].size
    assert model_path("gemma3-270m") == path
    assert model_version("gemma3-270m", None) == "gemma3-270m@a5fd3b62230a"


def test_unknown_model_and_missing_file_are_clear_errors():
    with pytest.raises(KeyError, match="unknown model"):
        model_path("gpt-17")
    with pytest.raises(FileNotFoundError):
        model_path("/nonexistent/model.gguf")


def test_completion_batch_with_logprobs(small_runtime):
    prompts = ["The capital of France is", "One, two, three,"]
    out = small_runtime.complete(prompts, max_tokens=3, top_logprobs=5)
    assert len(out) == 2 and all(c.error is None for c in out)
    assert all(len(c.tokens) == 3 and len(c.tokens[0].top) == 5 for c in out)
    assert " four" in out[1].tokens[0].top or "four" in out[1].text
    assert all(-50 < t.logprob <= 0 for c in out for t in c.tokens)


def test_json_schema_constrains_output(small_runtime):
    schema = {"type": "object", "properties": {"city": {"type": ["string", "null"], "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    [c] = small_runtime.complete(["Ann lives in Paris. JSON:"], max_tokens=40, json_schema=schema)
    assert set(json.loads(c.text)) == {"city"}


def test_builtin_http_listener_refuses_requests_without_the_key(small_runtime):
    address = small_runtime._copies[0]._server.listening_address
    request = urllib.request.Request(f"{address}/v1/completions", data=b'{"prompt": "hi", "max_tokens": 1}',
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_server_params_lock_the_listener_down(config):
    """xllamacpp's listener options are set, not left to defaults (issue #11, item 9; the listeners of a real
    run are probed in tests/flows/test_nightly.py): loopback, an OS-chosen port, a fresh random key per runtime, no web
    UI, /slots, /metrics, POST /props or CORS."""
    from processors.models.llamacpp import server_params

    params, other = server_params(config.large), server_params(config.large)
    assert params.hostnames == ["127.0.0.1"] and params.port == 0 and not params.reuse_port
    [key] = params.api_keys
    assert len(key) >= 32 and other.api_keys != params.api_keys
    assert not (params.ui or params.endpoint_slots or params.endpoint_metrics or params.endpoint_props
                or params.ui_mcp_proxy)
    assert params.cors_origins == ""
    assert not (params.ssl_file_key or params.public_path or params.api_prefix or params.server_tools)
    # the model side is the tier's
    assert params.model.path.endswith(".gguf") and params.n_parallel == 1  # one slot: answers never depend on a batch
    assert params.cache_ram_mib == 0  # no host-side prompt cache across documents
    assert params.load_mode.name == "LLAMA_LOAD_MODE_NONE"  # weights read, not mapped: RSS (bench/cold.py)
    assert params.cpuparams.n_threads == params.cpuparams_batch.n_threads == config.large.threads


def _fixture_tickets(config, n: int) -> list:
    """The first n documents of the quick start's ticket export."""
    from processors.ingest import ingest
    from schemas.records import Document
    from tests.conftest import FIXTURE_DATE, FIXTURES

    path = FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl"
    return [r for r in ingest(str(path), "tickets", path.read_bytes(), config) if isinstance(r, Document)][:n]


def test_a_document_gets_identical_answers_alone_in_any_batch_and_on_a_rerun(config, small_runtime):
    """Every label probability and field value and confidence, to the bit: the documents in one batch,
    reversed, each alone, and mixed with others (with several llama.cpp slots, a ticket's probability
    moved by up to 0.027 with its batch, and prompt-cache reuse made it depend on history)."""
    import copy
    import random

    from processors.tiers import LoadedTier, predict

    docs = _fixture_tickets(config, 6)
    loaded = LoadedTier(small_runtime)

    def answers(batches: list[list[int]]) -> dict[str, tuple]:
        out = {}
        for batch in batches:
            done = [copy.deepcopy(docs[i]) for i in batch]
            predict(done, loaded, config.small, config, "small")
            for d in done:
                out[d.doc_id] = (sorted((k, sorted(p.probabilities.items())) for k, p in d.labels.items()),
                                 sorted((k, p.value, p.confidence) for k, p in d.fields.items()))
        return out

    assert small_runtime.copies == 2  # the fixtures' [small] copies: documents of a batch run on both at once
    together = answers([[0, 1, 2, 3, 4, 5]])
    assert len(together) == 6 and all(labels and fields for labels, fields in together.values())
    order = list(range(6))
    random.Random(7).shuffle(order)
    for batches in ([list(reversed(range(6)))], [[i] for i in range(6)], [order[:4], order[4:]], [[0, 1, 2, 3, 4, 5]]):
        assert answers(batches) == together, batches
    # one copy with both threads (the [small] copies = 1 default): the same bits as two 1-thread copies
    from processors.models import load_runtime

    single = load_runtime(config.small.model_copy(update={"copies": 1}))
    try:
        assert single.copies == 1
        loaded = LoadedTier(single)
        assert answers([[0, 1, 2, 3, 4, 5]]) == together
    finally:
        single.close()


def test_documents_on_two_copies_share_the_tier_s_time_without_counting_it_twice(config, small_runtime):
    """Each document's seconds are its share of the tier's wall time: side by side on two copies, their own
    times overlap, and added up they would say the tier took twice as long (docs/s in the runs table)."""
    import time

    from processors.tiers import LoadedTier, predict

    docs = _fixture_tickets(config, 6)
    assert small_runtime.copies == 2
    started = time.perf_counter()
    predict(docs, LoadedTier(small_runtime), config.small, config, "small")
    wall = time.perf_counter() - started
    seconds = [d.usage["small"].seconds for d in docs]
    assert all(s > 0 for s in seconds)
    assert sum(seconds) <= wall  # not 2x: the copies ran at once


def _kept_prefix_answers(runtime, prefix: str, separator: str, prompts: list[str], order: list[int],
                        interrupt: bool = False) -> dict[int, tuple]:
    """Each prompt's first-token distribution, asked as a one-prompt document in `order`, and the share of its
    tokens llama.cpp evaluated. interrupt: a prompt evaluated afresh between documents (it overwrites the slot)."""
    out = {}
    for i in order:
        if interrupt:
            runtime.complete(["Something else entirely."], max_tokens=1)
        with runtime.sequence(prefix, separator):
            [c] = runtime.complete([prompts[i]], max_tokens=1, top_logprobs=10)
        assert c.error is None
        out[i] = (c.tokens[0].top, c.prompt_tokens - c.computed_tokens)
    return out


def test_a_kept_prefix_is_evaluated_once_and_a_document_s_answer_never_depends_on_what_ran_before(small_runtime):
    """The shared prefix stays on the slot across documents (ModelCopy.sequence): each document's first
    prompt reuses exactly the prefix, whatever document came before (even one starting with the same words,
    or one whose first token merges with the prefix's last), and gets the same bits in any order."""
    from processors.tasks.prompts import frame, shared_prefix

    prefix = shared_prefix("base", "tickets")[0]  # its separator is none (the base style keeps nothing): Gemma's <eos>
    texts = ["Where is my parcel? Order 12345.", "Where is my refund?", "\n\nthanks a lot!", "Cancel it."]
    prompts = [frame("base", "tickets", t, "Is the tone negative, neutral or positive?\nAnswer:") for t in texts]
    one_copy = small_runtime._copies[0]  # the interrupting prompt must land on the copy the documents use
    first = _kept_prefix_answers(one_copy, prefix, "<eos>", prompts, [0, 1, 2, 3])
    assert first[1][1] == first[0][1] > 5  # the header, not "Where is my"
    for order, interrupt in (([3, 2, 1, 0], False), ([1], False), ([2, 0, 3, 1], True), ([0, 1, 2, 3], False)):
        again = _kept_prefix_answers(one_copy, prefix, "<eos>", prompts, order, interrupt)
        assert all(again[i][0] == first[i][0] for i in order), (order, interrupt)
    # a separator that is no single token of the model: nothing is kept, every document is evaluated afresh
    fresh = _kept_prefix_answers(one_copy, prefix, "<|im_end|>", prompts, [0, 1])
    assert all(reused == 0 for _, reused in fresh.values())


def test_the_large_tier_keeps_its_system_turn_and_answers_the_same_alone_and_in_any_batch(config):
    """The real large tier (Qwen, ChatML): its 35-token system turn and header are evaluated once, not per
    document, and each document's probabilities are the same alone, batched and in another order."""
    import copy

    from processors.ingest import ingest
    from processors.models import load_runtime
    from processors.tiers import LoadedTier, predict
    from schemas.records import Document
    from tests.conftest import FIXTURE_DATE, FIXTURES

    docs = []
    for source in ("tickets", "pdf"):  # the two shortest of each source (Qwen reads 55 tokens/s here)
        found = [r for path in sorted((FIXTURES / "inbox" / source / FIXTURE_DATE).iterdir())
                 for r in ingest(str(path), source, path.read_bytes(), config) if isinstance(r, Document)]
        docs += sorted(found, key=lambda d: len(d.text))[:2]
    runtime = load_runtime(config.large)
    try:
        def answers(batches: list[list[int]]) -> dict[str, tuple]:
            out = {}
            for batch in batches:
                done = [copy.deepcopy(docs[i]) for i in batch]
                predict(done, LoadedTier(runtime), config.large, config, "large", [["sentiment"]] * len(done))
                for d in done:
                    usage = d.usage["large"]
                    out[d.doc_id] = (sorted(d.labels["sentiment"].probabilities.items()),
                                     usage.prompt_tokens - usage.computed_tokens)
            return out

        together = answers([list(range(len(docs)))])
        assert len(together) >= 4 and {d.source for d in docs} == {"tickets", "pdf"}
        assert all(reused >= 30 for _, reused in together.values())  # the system turn and header, every document
        assert answers([[i] for i in reversed(range(len(docs)))]) == together  # each alone, in another order
    finally:
        runtime.close()


@pytest.mark.parametrize("value", ["#37777", 'say "hi"', "€ 5,00", "C:\\temp\\x", "tab\there"])
def test_llamacpp_reads_a_grammar_literal_as_the_value_it_stands_for(small_runtime, value):
    """The grammars are GBNF: a value pinned as the only answer (as the tests pin answers, tests/grammar.py) comes
    back exactly, however it is escaped (JSON inside a GBNF literal). A grammar llama.cpp cannot read would be an
    error here."""
    from tests.grammar import gbnf_literal

    literal = json.dumps(value, ensure_ascii=False)
    [c] = small_runtime.complete(['The value is written here. JSON: {"v":'], max_tokens=len(literal) + 2,
                                 top_logprobs=10, grammar="root ::= " + gbnf_literal(literal))
    assert c.error is None and json.loads(c.text) == value


def test_a_grounded_field_is_scored_over_its_answers_on_the_real_model(small_runtime):
    """A grounded field's answers (null and its candidates) get a distribution from the real model, summing to
    1 over exactly those answers; a 'string' field is generated: null or a JSON string within its type's
    length."""
    from processors.tasks import extract, label
    from schemas.config import FieldSpec
    from schemas.records import Document

    text = "Order #37777 of Ann Lee was refunded."
    prompt = f'{text} JSON: {{"order_id":'
    targets = extract.answer_targets(["#37777", "Ann"])
    [scores] = label.score_labels(small_runtime, [prompt], targets, 40, max_depth=40)
    assert scores.error is None and set(scores.probabilities) == set(targets)
    assert sum(scores.probabilities.values()) == pytest.approx(1.0)
    doc = Document(doc_id="o", source="tickets", uri="u", text=text)
    out = extract.choose(scores, FieldSpec(name="order_id", type="id"), doc, "small", ["#37777", "Ann"])
    assert out.valid and out.value in (None, "#37777", "Ann")
    spec = FieldSpec(name="note", type="string", description="what happened")
    [c] = small_runtime.complete(['Order #37777 was refunded. JSON: {"note":'],
                                 max_tokens=extract.max_tokens(spec, 100), top_logprobs=10,
                                 grammar=extract.grammar(spec))
    written = c.text.strip().removesuffix(",").removesuffix("}")
    assert c.error is None and (written == "null" or isinstance(json.loads(written), str))
