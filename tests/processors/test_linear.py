"""Tier 0: TF-IDF + a linear model per label task, and its place in front of the small tier."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from processors.datasets import load_examples
from processors.linear import LinearLabeler
from processors.tiers import LoadedTier, apply_route, predict
from schemas.config import LinearTier
from schemas.records import Document
from tests.conftest import SHARED_DATA
from tests.robustness.hostile import RunsCode


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


_TEXTS = ["cancel my order please", "where is my refund", "I want to cancel the order 123",
          "refund not received yet", "change my delivery address", "update the shipping address",
          "cancel order now", "money back for the refund", "new address for delivery"]
_LABELS = ["ORDER", "REFUND", "ORDER", "REFUND", "ADDRESS", "ADDRESS", "ORDER", "REFUND", "ADDRESS"]


@pytest.mark.parametrize("labels", [_LABELS, [lab if lab == "ORDER" else "OTHER" for lab in _LABELS]],
                         ids=["three-labels", "two-labels"])
def test_saves_as_plain_json_and_loads_to_the_same_probabilities(tmp_path, labels):
    fitted = LinearLabeler.fit(_TEXTS, labels)
    path = tmp_path / "linear-category.json"
    fitted.save(path)
    stored = json.loads(path.read_text(encoding="utf-8"))  # plain JSON: numbers and strings only
    assert stored["format"] == "sluicegate.linear.v2" and stored["labels"] == sorted(set(labels))
    loaded = LinearLabeler.load(path)
    texts = _TEXTS + ["cancel the refund for my new address", "zzzz", ""]
    assert loaded.labels == fitted.labels
    for want, got in zip(fitted.predict_proba(texts), loaded.predict_proba(texts), strict=True):
        assert got == pytest.approx(want, abs=1e-9)


def test_a_pickled_model_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "linear-category.joblib"
    path.write_bytes(pickle.dumps(RunsCode(marker)))  # the old format was joblib's pickle: any pickle loaded
    with pytest.raises(ValueError, match="refused because loading them can run code"):
        LinearLabeler.load(path)
    assert not marker.exists()


def test_a_json_model_carrying_a_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "linear-category.json"
    LinearLabeler.fit(_TEXTS, _LABELS).save(path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored["pipeline"] = base64.b64encode(pickle.dumps(RunsCode(marker))).decode()
    path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid tier-0 model"):
        LinearLabeler.load(path)
    stored.pop("pipeline")
    stored["coef"] = stored["coef"][:1]  # a shape that does not fit its labels
    path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(ValueError, match="coef/intercept do not fit"):
        LinearLabeler.load(path)
    assert not marker.exists()
