"""Tier 0 for label tasks: TF-IDF features and a linear model, one per task.

It trains in seconds and labels thousands of items per second on one core. Items it is confident
on (probability at or above the task's threshold) skip the language models for that task; the
rest go to the small tier as before. Whether a task keeps its tier 0 is decided on held-out data
when it is trained (processors/finetune/job.py): only where the cascade costs less at equal quality.

On disk a tier 0 is one JSON file (`linear-<task>.json`, `LinearModelFile`): the vectorizers'
settings, vocabularies and idf weights, and the classifier's coefficients. Loading it only reads
numbers and strings into fresh scikit-learn objects; nothing is unpickled, so a model file cannot
run code (the old joblib files could).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

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


class LinearLabeler:
    def __init__(self, pipeline, labels: list[str]):
        self._pipeline = pipeline
        self.labels = labels

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
        return cls(pipeline, [str(c) for c in pipeline.classes_])

    def predict_proba(self, texts: list[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        rows = self._pipeline.predict_proba(texts)
        return [{label: float(p) for label, p in zip(self.labels, row, strict=True)} for row in rows]

    def predict(self, task: LabelTask, texts: list[str]) -> list[LabelPrediction]:
        """Tier 0's answer per text: the distribution over the task's labels and its most likely label."""
        out = []
        for dist in self.predict_proba(texts):
            dist = {k: v for k, v in dist.items() if k in task.labels}
            best = max(dist, key=dist.get, default=None)
            out.append(LabelPrediction(task.name, best, dist.get(best, 0.0), dist, "linear"))
        return out

    def to_file(self) -> LinearModelFile:
        union, classifier = self._pipeline[0], self._pipeline[-1]
        features = []
        for name, vec in union.transformer_list:
            params = VectorizerParams.model_validate(
                {k: v for k, v in vec.get_params().items() if k in VectorizerParams.model_fields})
            vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
            features.append(VectorizerFile(name=name, params=params, vocabulary=vocabulary, idf=vec.idf_.tolist()))
        # Python floats round-trip exactly through JSON, so the loaded model predicts bit for bit the same
        return LinearModelFile(format=FORMAT, labels=self.labels, features=features,
                               coef=classifier.coef_.tolist(), intercept=classifier.intercept_.tolist())

    @classmethod
    def from_file(cls, spec: LinearModelFile) -> LinearLabeler:
        """Fresh scikit-learn objects with the fitted attributes set from the file (no refitting)."""
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
        return cls(make_pipeline(FeatureUnion(vectorizers), classifier), list(spec.labels))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(self.to_file().model_dump_json(), encoding="utf-8")
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
        return cls.from_file(spec)
