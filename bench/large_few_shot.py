"""The large tier alone, zero-shot against few-shot (the model version's nearest training examples), in one run.

    uv run python bench/large_few_shot.py [--limit 60] [--shots 4] [--version ID]

Data no model was trained on: the bitext validation split (category, intent, ticket fields). Both rows
run the same items with a fresh runtime each, one item per prompt (as `sluicegate evaluate` runs the large
tier); only the demonstrations differ. Prints per task accuracy and macro-F1, per field F1 over present
values, documents per second and prompt tokens per document, and writes the figures as JSON beside the
table (bench/large_few_shot.json) so commits can be compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from processors.datasets import load_examples, sample
from processors.evaluate import evaluate
from processors.evaluate.summarize import tier_quality
from schemas.config import load_config
from schemas.versions import apply_version, resolve

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--version", help="model version id (default: the promoted one)")
    args = parser.parse_args()
    base = load_config(ROOT / "fixtures" / "sluicegate.toml")
    found = resolve(base.models.registry, args.version)
    if not found or not found[0].demonstrations:
        raise SystemExit("the model version stores no demonstrations")
    examples = load_examples(DATA / "tickets" / "bitext" / "validation.csv")
    examples = sample(examples, args.limit, seed=0, stratify="intent")
    figures: dict[str, dict] = {}
    for shots in (0, args.shots):
        config = apply_version(base, *found)
        config.large.demonstrations = shots
        ev = evaluate(config, examples, tiers=("large",))
        run = ev.runs["large"]
        row = {"docs_per_second": run.n_docs / run.seconds if run.seconds else float("nan"),
               "tokens_per_doc": run.tokens / max(run.n_docs, 1)}
        # Every item (nothing is fitted on a single tier's answers, so no half is held back here).
        o = ev.outcomes
        for (kind, item), frame in sorted(o.group_by(["kind", "item"]), key=lambda kv: kv[0]):
            q = tier_quality(frame, kind, "large_pred", "large_correct")
            if kind == "label":
                row[f"{item}.accuracy"], row[f"{item}.macro_f1"] = q.accuracy, q.macro_f1
            else:
                row[f"{item}.f1"] = q.f1
        fields = o.filter(o["kind"] == "field")
        if len(fields):
            row["fields.f1"] = tier_quality(fields, "field", "large_pred", "large_correct").f1
        figures[f"large, {shots} shots"] = row
    keys = sorted({k for row in figures.values() for k in row})
    print(f"large tier alone on {len(examples)} bitext validation tickets (every item)\n")
    print(f"{'figure':<28}" + "".join(f"{name:>20}" for name in figures))
    for key in keys:
        print(f"{key:<28}" + "".join(f"{row.get(key, float('nan')):>20.3f}" for row in figures.values()))
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"limit": args.limit, "version": found[0].id, "figures": figures}, indent=2) + "\n")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
