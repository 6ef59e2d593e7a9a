"""Tier 0 for label tasks: TF-IDF features and a linear model, one per task.

It trains in seconds and labels thousands of items per second on one core. Items it is confident
on (probability at or above the task's threshold) skip the language models for that task; the
rest go to the small tier as before. Whether a task keeps its tier 0 is decided on held-out data
when it is trained (processors/finetune/job.py): only where the cascade costs less at equal quality.

On disk a tier 0 is one JSON file (`linear-<task>.json`, `LinearModelFile`): the vectorizers'
settings, vocabularies and idf weights, and the classifier's coefficients. Loading it only reads
numbers and strings; nothing is unpickled, so a model file cannot run code (the old joblib files
could). Prediction is numpy (as scikit-learn computes it, checked against it in the tests), so a
nightly run never imports scikit-learn; fitting uses it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError, model_validator

from schemas.config import LabelTask, Strict
from schemas.records import LabelPrediction

FORMAT = "sluicegate.linear.v2"  # v1 was a joblib (pickle) file: refused


class VectorizerParams(Strict):
    """The TfidfVectorizer settings that shape features at prediction time (fit-only ones are left out)."""

    analyzer: Literal["word", "char", "char_wb"]
    ngram_range: tuple[int, int]
    lowercase: bool
    token_pattern: str | None
    strip_accents: Literal["ascii", "unicode"] | None
    stop_words: Literal["english"] | list[str] | None
    binary: bool
    norm: Literal["l1", "l2"] | None
    sublinear_tf: bool


class VectorizerFile(Strict):
    name: str
    params: VectorizerParams
    vocabulary: list[str]  # the terms in column order
    idf: list[float]


class LinearModelFile(Strict):
    """Everything tier 0 needs to predict, as plain JSON."""

    format: Literal["sluicegate.linear.v2"]
    labels: list[str]  # the classifier's classes, in column order
    features: list[VectorizerFile]  # a FeatureUnion of these, in order
    coef: list[list[float]]  # (classes, features); one row when there are two classes
    intercept: list[float]

    @model_validator(mode="after")
    def _shapes_agree(self) -> LinearModelFile:
        for vec in self.features:
            if len(vec.idf) != len(vec.vocabulary) or len(set(vec.vocabulary)) != len(vec.vocabulary):
                raise ValueError(f"features {vec.name!r}: idf and vocabulary differ in length or repeat a term")
        rows = 1 if len(self.labels) == 2 else len(self.labels)
        width = sum(len(vec.vocabulary) for vec in self.features)
        if len(self.labels) < 2 or len(self.coef) != rows or len(self.intercept) != rows \
                or any(len(row) != width for row in self.coef):
            raise ValueError(f"coef/intercept do not fit {len(self.labels)} labels and {width} features")
        return self


class _TfidfFeatures:
    """One vectorizer of the file, predicting as scikit-learn's TfidfVectorizer.transform does: the same
    analyzer (preprocess, tokenize, n-grams), counts of the vocabulary's terms, sublinear tf, idf, row norm.
    In numpy, so that a nightly run never imports scikit-learn (about 2 s of every cold start)."""

    _white_spaces = re.compile(r"\s\s+")

    def __init__(self, vec: VectorizerFile, offset: int):
        self.params = vec.params
        self.columns = {term: offset + i for i, term in enumerate(vec.vocabulary)}
        self.idf = np.asarray(vec.idf, dtype=np.float64)
        self.offset = offset
        if vec.params.analyzer == "word" and vec.params.token_pattern is None:
            raise ValueError(f"features {vec.name!r}: a word analyzer needs a token_pattern")
        self._tokens = re.compile(vec.params.token_pattern or "").findall
        stop = vec.params.stop_words
        if stop == "english":  # the list lives in scikit-learn; no shipped tier 0 uses it
            from sklearn.feature_extraction._stop_words import ENGLISH_STOP_WORDS
            stop = ENGLISH_STOP_WORDS
        self._stop_words = frozenset(stop) if stop is not None else None

    def _preprocess(self, text: str) -> str:
        if self.params.lowercase:
            text = text.lower()
        if self.params.strip_accents == "ascii":
            text = unicodedata.normalize("NFKD", text).encode("ASCII", "ignore").decode("ASCII")
        elif self.params.strip_accents == "unicode" and not text.isascii():
            text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        return text

    def terms(self, text: str) -> list[str]:
        """The text's terms, as the vectorizer's analyzer yields them (repeats kept)."""
        text = self._preprocess(text)
        low, high = self.params.ngram_range
        if self.params.analyzer == "word":
            words = [w for w in self._tokens(text) if self._stop_words is None or w not in self._stop_words]
            grams = list(words) if low == 1 else []
            for n in range(max(low, 2), min(high, len(words)) + 1):
                grams += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
            return grams
        text = self._white_spaces.sub(" ", text)
        if self.params.analyzer == "char":
            return [text[i:i + n] for n in range(low, min(high, len(text)) + 1) for i in range(len(text) - n + 1)]
        grams = []  # char_wb: n-grams inside each space-padded word; a word shorter than n counted once
        for word in text.split():
            word = f" {word} "
            for n in range(low, high + 1):
                grams += [word[i:i + n] for i in range(max(len(word) - n, 0) + 1)]
                if len(word) <= n:
                    break
        return grams

    def transform(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The text's row: the columns of its known terms (union-wide) and their weights."""
        counts = Counter(c for c in map(self.columns.get, self.terms(text)) if c is not None)
        columns = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        values = np.asarray([counts[c] for c in columns.tolist()], dtype=np.float64)
        if self.params.binary:
            values[:] = 1.0
        if self.params.sublinear_tf:
            values = np.log(values) + 1.0
        values *= self.idf[columns - self.offset]
        if self.params.norm == "l2":
            norm = np.sqrt(np.dot(values, values))
        elif self.params.norm == "l1":
            norm = np.abs(values).sum()
        else:
            norm = 0.0
        if norm > 0:
            values /= norm
        return columns, values


class LinearLabeler:
    """A tier 0: the model file and its prediction (numpy only; scikit-learn only to fit)."""

    def __init__(self, spec: LinearModelFile):
        self.spec = spec
        self.labels = list(spec.labels)
        self._features, offset = [], 0
        for vec in spec.features:
            self._features.append(_TfidfFeatures(vec, offset))
            offset += len(vec.vocabulary)
        self._coef = np.asarray(spec.coef, dtype=np.float64)  # (classes, features); one row for two classes
        self._intercept = np.asarray(spec.intercept, dtype=np.float64)

    @classmethod
    def fit(cls, texts: list[str], labels: list[str], seed: int = 0) -> LinearLabeler:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        features = FeatureUnion([
            ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)),
            # character n-grams survive typos ("purhase", "havew"), common in support tickets
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
        ])
        pipeline = make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
        pipeline.fit(texts, labels)
        return cls.from_sklearn(pipeline)

    @classmethod
    def from_sklearn(cls, pipeline) -> LinearLabeler:
        """A fitted scikit-learn pipeline (a FeatureUnion of TfidfVectorizers, then LogisticRegression)."""
        union, classifier = pipeline[0], pipeline[-1]
        features = []
        for name, vec in union.transformer_list:
            params = VectorizerParams.model_validate(
                {k: v for k, v in vec.get_params().items() if k in VectorizerParams.model_fields})
            vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
            features.append(VectorizerFile(name=name, params=params, vocabulary=vocabulary, idf=vec.idf_.tolist()))
        # Python floats round-trip exactly through JSON, so the loaded model predicts bit for bit the same
        return cls(LinearModelFile(format=FORMAT, labels=[str(c) for c in classifier.classes_], features=features,
                                   coef=classifier.coef_.tolist(), intercept=classifier.intercept_.tolist()))

    def predict_proba(self, texts: list[str]) -> list[dict[str, float]]:
        out = []
        for text in texts:
            decision = self._intercept.copy()
            for features in self._features:
                columns, values = features.transform(text)
                decision += self._coef[:, columns] @ values
            if len(self.labels) == 2:  # one row: the second class's log-odds (LogisticRegression's binary case)
                second = 1.0 / (1.0 + np.exp(-decision[0]))
                probs = np.asarray([1.0 - second, second])
            else:
                probs = np.exp(decision - decision.max())
                probs /= probs.sum()
            out.append({label: float(p) for label, p in zip(self.labels, probs, strict=True)})
        return out

    def predict(self, task: LabelTask, texts: list[str]) -> list[LabelPrediction]:
        """Tier 0's answer per text: the distribution over the task's labels and its most likely label."""
        out = []
        for dist in self.predict_proba(texts):
            dist = {k: v for k, v in dist.items() if k in task.labels}
            best = max(dist, key=dist.get, default=None)
            out.append(LabelPrediction(task.name, best, dist.get(best, 0.0), dist, "linear"))
        return out

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(self.spec.model_dump_json(), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> LinearLabeler:
        data = Path(path).read_bytes()
        if not data.lstrip().startswith(b"{"):
            raise ValueError(f"{path}: not a tier-0 JSON model ({FORMAT}); joblib/pickle files are refused "
                             "because loading them can run code: convert it to JSON")
        try:
            spec = LinearModelFile.model_validate_json(data)
        except ValidationError as err:
            raise ValueError(f"{path}: not a valid tier-0 model ({FORMAT}): {err}") from err
        return cls(spec)
