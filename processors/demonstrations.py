"""Few-shot demonstrations for the large tier: the k labelled training examples nearest to a document.

A model version stores a sample of its training examples (`demonstrations.jsonl`: text, source, labels,
fields). When the large tier is asked an item, the k examples labelled for that item whose TF-IDF
vectors are nearest to the document's are shown first, as earlier questions answered correctly
(processors/tasks/prompts.py: frame's shots). The index is built when the tier loads (seconds for a
few thousand texts) and used read-only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from processors.datasets import LabelledExample

MAX_STORED = 2000  # examples a version keeps for demonstrations
SHOT_CHARS = 400  # a demonstration's text is cut to this many characters: shots stay short


@dataclass(frozen=True)
class Demonstration:
    text: str
    source: str
    labels: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str | None] = field(default_factory=dict)  # known values (None: known absent)


def write_demonstrations(examples: Iterable[LabelledExample], path: str | Path,
                         field_names: dict[str, list[str]] | None = None, seed: int = 0) -> Path:
    """A reproducible sample of at most MAX_STORED training examples as JSONL (texts cut to SHOT_CHARS), with
    their labels and the known values of their source's fields (field_names: source -> field names)."""
    demos = []
    for ex in examples:
        names = (field_names or {}).get(ex.source, [])
        known = {n: ex.field_value(n)[1] for n in names if ex.field_value(n)[0]}
        if ex.labels or known:
            demos.append(Demonstration(ex.text[:SHOT_CHARS], ex.source, dict(ex.labels), known))
    if len(demos) > MAX_STORED:
        demos = random.Random(seed).sample(demos, MAX_STORED)
    path = Path(path)
    path.write_text("".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in demos), encoding="utf-8")
    return path


class DemonstrationIndex:
    """Nearest labelled examples by TF-IDF cosine similarity, per item (a task, or 'field:<name>')."""

    def __init__(self, demos: list[Demonstration]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.demos = demos
        self._vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        self._matrix = self._vectorizer.fit_transform([d.text for d in demos]) if demos else None

    @classmethod
    def load(cls, path: str | Path) -> DemonstrationIndex:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls([Demonstration(**json.loads(line)) for line in lines if line.strip()])

    def nearest(self, text: str, item: str, source: str, k: int) -> list[Demonstration]:
        """The k examples of this source labelled for the item, most similar first (fewer if fewer exist)."""
        if k <= 0 or self._matrix is None:
            return []
        name = item.removeprefix("field:")
        usable = [i for i, d in enumerate(self.demos) if d.source == source and
                  (name in d.fields if item.startswith("field:") else name in d.labels)]
        if not usable:
            return []
        scores = (self._matrix[usable] @ self._vectorizer.transform([text]).T).toarray().ravel()
        order = sorted(range(len(usable)), key=lambda j: (-scores[j], usable[j]))[:k]
        return [self.demos[usable[j]] for j in reversed(order)]  # the nearest last, next to the document
