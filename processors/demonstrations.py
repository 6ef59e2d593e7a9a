"""A model version's stored examples: few-shot demonstrations for the large tier, rehearsal and held-out data.

A model version stores a sample of its training examples (`demonstrations.jsonl`: text, source, labels,
fields) and its held-out examples (`heldout.jsonl`, the same format). When the large tier is asked an item,
the k training examples labelled for that item whose TF-IDF vectors are nearest to the document's are shown
first, as earlier questions answered correctly (processors/tasks/prompts.py: frame's shots). The index is
built when the tier loads (seconds for a few thousand texts) and used read-only. The next fine-tuning run
reads both files back (`read_examples`): it rehearses the training sample, so the new adapter keeps what
this one knew, and judges every task this version serves on its held-out examples (processors/finetune/job.py).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from processors.datasets import LabelledExample, text_id

MAX_STORED = 2000  # examples a version keeps for demonstrations (and rehearsal)
STORED_CHARS = 2000  # a stored text is cut to this many characters (the small tier's default max_doc_chars)
SHOT_CHARS = 400  # a demonstration's text is cut to this many characters when shown: shots stay short


@dataclass(frozen=True)
class Demonstration:
    text: str
    source: str
    labels: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str | None] = field(default_factory=dict)  # known values (None: known absent)


def write_demonstrations(examples: Iterable[LabelledExample], path: str | Path,
                         field_names: dict[str, list[str]] | None = None, seed: int = 0,
                         limit: int | None = MAX_STORED, max_chars: int | None = STORED_CHARS) -> Path:
    """A reproducible sample of at most `limit` examples as JSONL (texts cut to `max_chars`), with their
    labels and the known values of their source's fields (field_names: source -> field names)."""
    demos = []
    for ex in examples:
        names = (field_names or {}).get(ex.source, [])
        known = {n: ex.field_value(n)[1] for n in names if ex.field_value(n)[0]}
        if ex.labels or known:
            demos.append(Demonstration(ex.text[:max_chars], ex.source, dict(ex.labels), known))
    if limit is not None and len(demos) > limit:
        demos = random.Random(seed).sample(demos, limit)
    path = Path(path)
    path.write_text("".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in demos), encoding="utf-8")
    return path


def read_demonstrations(path: str | Path) -> list[Demonstration]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Demonstration(**json.loads(line)) for line in lines if line.strip()]


def match_id(text: str) -> str:
    """Which texts count as the same example across stored files and new data: the id of the first SHOT_CHARS
    characters (files store texts cut, the shortest to SHOT_CHARS), so a cut copy matches its whole text."""
    return text_id(text[:SHOT_CHARS])


def read_examples(path: str | Path) -> list[LabelledExample]:
    """A stored file as labelled examples again (ids from the stored text; match with match_id): a field counts
    as known only where the file lists it. PDF page texts are not stored: evidence pages are not scored."""
    return [LabelledExample(text_id(d.text), d.text, d.source, dict(d.labels), dict(d.fields))
            for d in read_demonstrations(path)]


class DemonstrationIndex:
    """Nearest labelled examples by TF-IDF cosine similarity, per item (a task, or 'field:<name>')."""

    def __init__(self, demos: list[Demonstration]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.demos = demos
        self._vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        self._matrix = self._vectorizer.fit_transform([d.text for d in demos]) if demos else None

    @classmethod
    def load(cls, path: str | Path) -> DemonstrationIndex:
        return cls(read_demonstrations(path))

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
        # the nearest last, next to the document; cut, so shots stay short
        return [replace(self.demos[usable[j]], text=self.demos[usable[j]].text[:SHOT_CHARS]) for j in reversed(order)]
