"""A tier's answers for a batch and the routing step after it, without Beam (runtimes faked here; the real
model is exercised in test_large_faults, test_linear and the pipeline tests)."""

from __future__ import annotations

import math

from processors.models.base import Completion, TokenLogprob
from processors.tiers import LoadedTier, answer_batch, escalated_items, route_after
from schemas.config import Config, LabelTask, Thresholds
from schemas.records import Document

SENTIMENT = LabelTask(name="sentiment", labels=["negative", "neutral", "positive"])
CONFIG = Config(tasks=[SENTIMENT], fields={}, linear={},
                thresholds={"sentiment": Thresholds(small=1.01, large=0.0)})  # small escalates all, large keeps


class Answering:
    """Says ' negative' with probability 0.9 to every prompt."""

    version = "answering"

    def complete(self, prompts, **kw):
        return [Completion(" negative", [TokenLogprob(" negative", math.log(0.9), {" negative": math.log(0.9)})],
                           5, 1) for _ in prompts]


class Raising:
    version = "raising"

    def complete(self, prompts, **kw):
        raise RuntimeError("runtime crashed")


def _docs() -> list[Document]:
    return [Document(f"d{i}", "tickets", f"u#{i}", text) for i, text in enumerate(["I am furious.", "Thanks!"])]


def _small(docs: list[Document], runtime) -> list[Document]:
    return [route_after(d, CONFIG, "small") for d in answer_batch(docs, LoadedTier(runtime), CONFIG, "small")]


def test_the_small_tier_answers_and_routing_escalates_what_is_below_threshold():
    docs = _small(_docs(), Answering())
    for doc in docs:
        assert doc.labels["sentiment"].tier == "small" and doc.labels["sentiment"].label in SENTIMENT.labels
        assert doc.decided_by == {"sentiment": "large"} and escalated_items(doc) == {"sentiment"}
        assert any(r.startswith("small:sentiment:") for r in doc.escalation_reasons)


def test_answers_alone_do_not_route():
    # Routing is its own step: a tier's answers leave decided_by to it.
    docs = answer_batch(_docs(), LoadedTier(Answering()), CONFIG, "small")
    assert all(d.labels["sentiment"].tier == "small" and not d.decided_by for d in docs)


def test_a_small_tier_that_raises_marks_each_document_an_error_and_routing_skips_it():
    docs = _small(_docs(), Raising())
    for doc in docs:
        assert doc.error.startswith("small tier failed: RuntimeError: runtime crashed")
        assert not doc.labels and not doc.decided_by


def test_a_large_tier_that_raises_leaves_the_small_answers_marked():
    docs = _small(_docs(), Answering())
    small_labels = [d.labels["sentiment"] for d in docs]
    docs = [route_after(d, CONFIG, "large") for d in answer_batch(docs, LoadedTier(Raising()), CONFIG, "large")]
    for doc, small in zip(docs, small_labels, strict=True):
        assert doc.escalation_failed and doc.decided_by == {"sentiment": "small"}
        assert doc.labels["sentiment"] == small and not doc.error
        assert doc.escalation_reasons[-1].startswith("large:failed(sentiment: RuntimeError: runtime crashed")


def test_the_large_tier_answers_only_the_escalated_items_and_routing_decides_them():
    docs = _small(_docs(), Answering())
    docs = [route_after(d, CONFIG, "large") for d in answer_batch(docs, LoadedTier(Answering()), CONFIG, "large")]
    for doc in docs:
        assert doc.labels["sentiment"].tier == "large" and doc.decided_by == {"sentiment": "large"}
        assert not doc.escalation_failed


def test_loading_a_tier_releases_the_idle_ones_and_never_one_a_batch_is_using(monkeypatch):
    """TierOnDemand's rule with a fake load (the real models: test_pipeline's load test)."""
    from processors import tiers
    from processors.tiers import TierOnDemand, loaded_now

    closed: list[object] = []

    class Closing(Answering):
        def close(self):
            closed.append(self)

    monkeypatch.setattr(tiers, "load_tier", lambda config, tier: LoadedTier(Closing()))
    small, large = TierOnDemand(CONFIG, "small"), TierOnDemand(CONFIG, "large")
    with small.use() as first:
        assert loaded_now() == ["small"]
    with large.use():  # the small tier is idle: released
        assert loaded_now() == ["large"] and closed == [first.runtime]
        with small.use() as again:  # loaded afresh; the large tier is in use: kept
            assert again is not first and loaded_now() == ["large", "small"] and len(closed) == 1
    assert small.release() and loaded_now() == ["large"] and closed == [first.runtime, again.runtime]
    monkeypatch.setattr(tiers, "_kept", {})  # a dask worker keeps its tiers for its life: nothing is released
    assert not large.release() and loaded_now() == ["large"]
