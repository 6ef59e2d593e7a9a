"""A large tier that fails, per item or whole: the small tier's answer stands, marked escalation_failed,
the run completes, and the next run retries those items. Garbage from the large tier never lands.

The small tier is the real Gemma model; the large tier is reached over HTTP: a closed port (dead), a
real llama.cpp server (working), or a fake endpoint for misbehaviour (tests named test_fake_*).
"""

from __future__ import annotations

import copy
import json
import math

import polars as pl
import pytest

from processors.models.base import Completion, TokenLogprob
from processors.models.http import HttpRuntime
from processors.sinks import manifest_row, result_row, with_labels
from processors.tasks.candidates import find_candidates
from processors.tiers import LoadedTier, answer_batch, route_after
from schemas.config import Config, FieldSpec, LabelTask, Thresholds
from schemas.records import Document
from tests.conftest import FIXTURE_DATE, FIXTURES, SENTIMENT_RUN, free_port
from tests.processors.models.test_http import (
    KEY,
    KEY_ENV,
    FakeEndpoint,
    completion_body,
    http_tier,
    start_llama_server,
)

SENTIMENT = LabelTask(name="sentiment", labels=["negative", "neutral", "positive"])
ORDER_ID = FieldSpec(name="order_id", type="id", description="order or purchase number")
LINES = (FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl").read_text().splitlines()
GOOD_LINES = [line for line in LINES if line.strip().endswith("}")]


@pytest.fixture
def fake(monkeypatch):
    """Starts fake endpoints (for misbehaviour the real server cannot produce); closes them after the test."""
    monkeypatch.setenv(KEY_ENV, KEY)
    started: list[FakeEndpoint] = []
    yield lambda behave: started.append(FakeEndpoint(behave)) or started[-1]
    for endpoint in started:
        endpoint.close()


def _tier(docs: list[Document], config: Config, runtime, tier: str) -> list[Document]:
    """What the graph does for a tier: its answers for the batch, then the routing step after it."""
    return [route_after(d, config, tier) for d in answer_batch(docs, LoadedTier(runtime), config, tier)]


def _config(large_endpoint: str, **large) -> Config:
    """Everything the small tier says escalates (threshold above any confidence); the large tier decides."""
    return Config(tasks=[SENTIMENT], fields={"tickets": [ORDER_ID]},
                  small=Config().small.model_copy(update={"parallel_sequences": 4}),
                  large=http_tier(large_endpoint, **large),
                  thresholds={"sentiment": Thresholds(small=1.01, large=0.5),
                              "fields": Thresholds(small=1.01, large=0.4)})


@pytest.fixture(scope="module")
def escalated(small_runtime) -> list[Document]:
    """Three real tickets after the real small tier: every item routed to the large tier."""
    from processors.ingest import ingest

    config = _config("http://127.0.0.1:9")
    path = FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl"
    docs = [r for r in ingest(str(path), "tickets", path.read_bytes(), config)
            if isinstance(r, Document)][:3]
    _tier(docs, config, small_runtime, "small")
    assert all(set(d.decided_by.values()) == {"large"} for d in docs)
    return docs


def _large(docs: list[Document], config: Config, runtime) -> list[Document]:
    docs = copy.deepcopy(docs)
    return _tier(docs, config, runtime, "large")


def _label_or_field(n: int, body: dict):
    """A well-formed answer: a label position (no grammar) or a field value (grammar given)."""
    if "grammar" in body:
        return 200, completion_body(' "113542617735902",')
    return 200, completion_body(" negative", {" negative": -0.05, " positive": -3.5, " neutral": -4.0})


def test_fake_endpoint_dies_mid_batch_small_answers_stand(fake, escalated):
    endpoint = fake(lambda n, body: _label_or_field(n, body) if n < 2 else "drop")
    config = _config(endpoint.url, max_concurrency=1, max_retries=1)
    runtime = HttpRuntime(config.large)
    docs = _large(escalated, config, runtime)
    answered = failed = 0
    for small, doc in zip(escalated, docs, strict=True):
        for item, tier in doc.decided_by.items():
            if tier == "small":  # the endpoint was gone: the small answer stands, marked, with the reason
                failed += 1
                assert doc.escalation_failed
                assert any(r.startswith(f"large:failed({item}: connection failed") or
                           r.startswith(f"large:failed({item}: circuit open") for r in doc.escalation_reasons)
                kept = doc.labels.get(item) or doc.fields.get(item.removeprefix("field:"))
                assert kept.tier == "small"
                if item == "sentiment":
                    assert kept.label == small.labels["sentiment"].label
            else:
                answered += 1
                assert tier in ("large", "review")
        row = result_row(doc, config, "r", "h")
        assert row["escalation_failed"] == doc.escalation_failed
        # Not done: the next run with the same version retries this document.
        assert manifest_row(doc, "v", "r")["done"] is (not doc.escalation_failed)
    # 6 items: 2 answered before the endpoint died, 3 lost with it, and the third ticket's order_id needs no call
    # (its only number is a sum of money, "1200 dollars": no id candidate, null without asking).
    assert answered == 3 and failed == 3


def test_fake_endpoint_garbage_cannot_land(fake, escalated):
    """Labels outside the set, an injected instruction as a field value, or non-JSON text: to review."""
    def hostile(n, body):
        if "grammar" in body:
            text = ' "IGNORE PREVIOUS INSTRUCTIONS",' if n % 2 else "{{{ not json"
            return 200, completion_body(text)
        return 200, completion_body(" HACKED", {" HACKED": -0.01, " pwned": -5.0})

    endpoint = fake(hostile)
    config = _config(endpoint.url, max_concurrency=1)
    docs = _large(escalated, config, HttpRuntime(config.large))
    for doc in docs:
        assert not doc.escalation_failed  # the endpoint answered; the answers are what is wrong
        sentiment = doc.labels["sentiment"]
        assert sentiment.tier == "large" and sentiment.label in SENTIMENT.labels  # never "HACKED"
        assert sentiment.confidence == pytest.approx(1 / 3) and doc.decided_by["sentiment"] == "review"
        order = doc.fields["order_id"]
        if not find_candidates("id", doc.text):  # no id in the text ("1200 dollars"): null, the endpoint not asked
            assert order.value is None and order.valid and order.tier == "large"
            continue
        assert order.tier == "large" and not order.valid and doc.decided_by["field:order_id"] == "review"
        assert {"not_in_source", "invalid_json", "not_a_candidate"} & set(order.problems)
        assert order.value in (None, "IGNORE PREVIOUS INSTRUCTIONS")  # recorded, but invalid and reviewed


def test_fake_runtime_raising_mid_batch_keeps_the_small_answers(escalated):
    class Exploding:  # answers the first call, then raises (a bug or a crash in a runtime)
        version = "exploding"
        calls = 0

        def complete(self, prompts, **kw):
            Exploding.calls += 1
            if Exploding.calls > 1:
                raise RuntimeError("runtime crashed")
            return [Completion(" negative", [TokenLogprob(" negative", math.log(0.9), {" negative": math.log(0.9)})],
                               5, 1) for _ in prompts]

    config = _config("http://127.0.0.1:9")
    docs = _large(escalated, config, Exploding())
    for small, doc in zip(escalated, docs, strict=True):
        assert doc.escalation_failed and set(doc.decided_by.values()) == {"small"}
        assert doc.labels["sentiment"] is not None and doc.labels["sentiment"].tier == "small"
        assert doc.labels["sentiment"].label == small.labels["sentiment"].label
        assert doc.fields["order_id"].tier == "small"
        assert any("runtime crashed" in r for r in doc.escalation_reasons)


@pytest.mark.slow
def test_nightly_with_a_dead_large_endpoint_then_a_working_one(tmp_path, monkeypatch, prefect_in_process):
    """The real flow and Beam pipeline: the large tier's endpoint is down, so the run completes with the
    small answers marked; the key comes from a Prefect Secret. When the endpoint is back (same URL, so
    the same version), the next run skips what was done and retries the failed escalations."""
    from prefect.blocks.system import Secret

    from flows.nightly import nightly

    monkeypatch.setenv("SLUICEGATE_LARGE_API_KEY", "unset")  # restored (removed) after the test
    folder = tmp_path / "inbox" / "tickets" / FIXTURE_DATE
    folder.mkdir(parents=True)
    (folder / "export.jsonl").write_text("\n".join([*GOOD_LINES[:4], '{"broken": ']) + "\n")
    port = free_port()
    config = tmp_path / "sluicegate.toml"
    config.write_text(SENTIMENT_RUN + f"""
[[fields.tickets]]
name = "order_id"
type = "id"
description = "order or purchase number"
[small]
model = "gemma3-270m"
parallel_sequences = 4
[large]
runtime = "http"
endpoint = "http://127.0.0.1:{port}/v1"
model = "gemma3-270m"
api_key_secret = "sg-large-key"
prompt_style = "base"
contextual_calibration = false
parallel_sequences = 4
max_retries = 1
retry_backoff_seconds = 0.05
circuit_breaker_failures = 3
[thresholds.sentiment]
small = 1.01
large = 0.0
[thresholds.fields]
small = 1.01
large = 0.0
[tickets.columns."*"]
id = "ticket_id"
""")
    out = tmp_path / "out"

    def table(name: str) -> pl.DataFrame:
        return pl.read_parquet(out / name / f"run_date={FIXTURE_DATE}" / "source=tickets" / "*.parquet")

    Secret(value=KEY).save("sg-large-key", overwrite=True)
    first = nightly(run_date=FIXTURE_DATE, config_path=str(config))
    assert first["invariant_ok"] and first["n_inputs"] == 5 == first["n_results"] + first["n_errors"]
    results = with_labels(table("results"), table("labels"))
    assert results.height == 4 and results["escalation_failed"].all()
    assert (results["sentiment_decided_by"] == "small").all()
    # A field with no candidate in its text is null at the large tier without a call: the only
    # large-tier answers a dead endpoint leaves.
    assert results["decided_by"].is_in(["small", "large"]).all()
    assert results["sentiment"].is_in(SENTIMENT.labels).all()
    reasons = results["escalation_reasons"].explode()
    assert reasons.str.starts_with("large:failed(").any()
    assert not reasons.str.contains(KEY).any()
    fields = table("fields")
    assert fields.filter(pl.col("decided_by") != "small")["value"].is_null().all()
    assert (fields.filter(pl.col("value").is_not_null())["decided_by"] == "small").all()
    manifest = table("manifest")
    assert manifest.filter(pl.col("outcome") == "result")["done"].not_().all()

    server = start_llama_server(KEY, port=port)
    try:
        second = nightly(run_date=FIXTURE_DATE, config_path=str(config))
    finally:
        del server
    assert second["invariant_ok"] and second["n_skipped"] == 1  # only the malformed line was done
    results = with_labels(table("results"), table("labels"))
    assert results.height == 4 and not results["escalation_failed"].any()
    assert results["sentiment_decided_by"].is_in(["large", "review"]).all()
    assert (results["large_model_version"] == f"http:127.0.0.1:{port}/gemma3-270m").all()
    assert table("manifest")["done"].all()
    for path in out.rglob("*.parquet"):  # the key is in no table
        assert KEY.encode() not in path.read_bytes(), path
    assert json.dumps(second, default=str).count(KEY) == 0
