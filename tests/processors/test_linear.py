"""Tier 0: TF-IDF + a linear model per label task, and its place in front of the small tier."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys

import pytest

from processors.datasets import load_examples
from processors.linear import LinearLabeler, LinearModelFile
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


def _sklearn_pipeline(spec: LinearModelFile):
    """The reference: scikit-learn's own objects with the file's fitted numbers set (no refitting)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    vectorizers = []
    for vec in spec.features:
        vectorizer = TfidfVectorizer(**vec.params.model_dump(), vocabulary=vec.vocabulary)
        vectorizer.idf_ = np.asarray(vec.idf, dtype=np.float64)
        vectorizers.append((vec.name, vectorizer))
    classifier = LogisticRegression()
    classifier.classes_ = np.asarray(spec.labels)
    classifier.coef_ = np.asarray(spec.coef, dtype=np.float64)
    classifier.intercept_ = np.asarray(spec.intercept, dtype=np.float64)
    classifier.n_features_in_ = classifier.coef_.shape[1]
    return make_pipeline(FeatureUnion(vectorizers), classifier)


_ODD_TEXTS = ["", "   ", "a", "Ünïcödé café déjà-vu", "x\ty\n\nz  w", "I", "ORDER #12345!!", "ab " * 50]


@pytest.mark.parametrize("params", [{}, {"analyzer": "char", "ngram_range": (1, 3), "strip_accents": "unicode"},
                                    {"analyzer": "word", "ngram_range": (2, 3), "strip_accents": "ascii",
                                     "stop_words": ["the", "my"], "binary": True, "norm": "l1"},
                                    {"sublinear_tf": False, "lowercase": False, "norm": None}],
                         ids=["as-fitted", "char", "word-variants", "raw-tf"])
def test_numpy_prediction_equals_scikit_learns_on_held_out_tickets(linear_category, params):
    """Tier 0 predicts without scikit-learn at run time; its probabilities are scikit-learn's, whatever the
    vectorizer settings a file may hold (the first vectorizer's are varied; its vocabulary is kept)."""
    labeler, _ = linear_category
    spec = labeler.spec.model_copy(deep=True)
    first = spec.features[0]
    first.params = first.params.model_copy(update=params)
    if "analyzer" in params:  # a vocabulary of that analyzer's terms, with the file's idf values reused
        from sklearn.feature_extraction.text import TfidfVectorizer
        terms = TfidfVectorizer(**first.params.model_dump()).fit(_TEXTS + _ODD_TEXTS[3:]).get_feature_names_out()
        first.vocabulary = list(terms)
        first.idf = first.idf[:len(terms)]
        spec.coef = [row[:len(terms)] + row[len(labeler.spec.features[0].vocabulary):] for row in spec.coef]
    spec = LinearModelFile.model_validate(spec.model_dump())
    held = [e.text for e in load_examples(SHARED_DATA / "tickets/bitext/validation.csv")[:300]] + _ODD_TEXTS
    want = _sklearn_pipeline(spec).predict_proba(held)
    got = LinearLabeler(spec).predict_proba(held)
    for row, dist in zip(want, got, strict=True):
        assert [dist[label] for label in spec.labels] == pytest.approx(list(row), abs=1e-12)


def test_two_label_prediction_equals_scikit_learns():
    labeler = LinearLabeler.fit(_TEXTS, [lab if lab == "ORDER" else "OTHER" for lab in _LABELS])
    texts = _TEXTS + _ODD_TEXTS
    want = _sklearn_pipeline(labeler.spec).predict_proba(texts)
    for row, dist in zip(want, labeler.predict_proba(texts), strict=True):
        assert [dist["ORDER"], dist["OTHER"]] == pytest.approx(list(row), abs=1e-12)


def test_loading_and_predicting_never_imports_scikit_learn(linear_category):
    _, path = linear_category
    code = ("import sys; from processors.linear import LinearLabeler; "
            f"p = LinearLabeler.load({str(path)!r}).predict_proba(['cancel my order']); "
            "assert abs(sum(p[0].values()) - 1) < 1e-9; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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
