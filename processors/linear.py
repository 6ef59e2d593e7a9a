"""Tier 0 for label tasks: TF-IDF features and a linear model, one per task.

It trains in seconds and labels thousands of items per second on one core. Items it is confident
on (probability at or above the task's threshold) skip the language models for that task; the
rest go to the small tier as before. Whether a task keeps its tier 0 is decided on held-out data
when it is trained (processors/finetune/job.py): only where the cascade costs less at equal quality.
"""

from __future__ import annotations

from pathlib import Path

from schemas.config import LabelTask
from schemas.records import LabelPrediction

MODEL_VERSION = "sluicegate.linear.v1"


class LinearLabeler:
    def __init__(self, pipeline=None, labels: list[str] | None = None):
        self._pipeline = pipeline
        self.labels = labels or []

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

    def save(self, path: Path) -> None:
        import joblib

        tmp = path.with_name(path.name + ".partial")
        joblib.dump({"pipeline": self._pipeline, "labels": self.labels, "version": MODEL_VERSION}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> LinearLabeler:
        import joblib

        state = joblib.load(path)
        return cls(state["pipeline"], state["labels"])
