"""Tier 0: TF-IDF + a linear model per label task, and its place in front of the small tier."""

from __future__ import annotations

from processors.datasets import load_examples
from processors.tiers import LoadedTier, apply_route, predict
from schemas.config import LinearTier
from schemas.records import Document
from tests.conftest import SHARED_DATA


def test_fits_saves_and_predicts_well_on_held_out_bitext(linear_category):
    labeler, _ = linear_category
    held = load_examples(SHARED_DATA / "tickets/bitext/validation.csv")[:200]
    dists = labeler.predict_proba([e.text for e in held])
    accuracy = sum(max(d, key=d.get) == e.labels["category"] for d, e in zip(dists, held, strict=True)) / len(held)
    assert accuracy > 0.9
    assert all(abs(sum(d.values()) - 1) < 1e-6 for d in dists)


def test_confident_items_skip_the_small_model(config, small_runtime, linear_category):
    labeler, path = linear_category
    cfg = config.model_copy(deep=True)
    cfg.fields = {}
    cfg.linear = {"category": LinearTier(path=str(path), threshold=0.5)}
    docs = [Document("a", "tickets", "u#1", "I want to cancel my order 12345, please help"),
            Document("b", "tickets", "u#2", "zzzz qqqq")]  # nothing the linear model knows
    before = labeler.predict_proba([d.text for d in docs])
    assert max(before[0].values()) >= 0.5 > max(before[1].values())
    loaded = LoadedTier(small_runtime, linear={"category": labeler})
    predict(docs, loaded, cfg.small, cfg, "small")
    for doc in docs:
        apply_route(doc, cfg, "small")
    assert docs[0].labels["category"].tier == "linear" and docs[0].decided_by["category"] == "linear"
    assert docs[0].labels["category"].label == "ORDER"
    assert docs[1].labels["category"].tier == "small"  # went on to the language model
    assert docs[0].labels["sentiment"].tier == "small"  # no tier 0 for sentiment
