"""The large tier alone, zero-shot against few-shot (the model version's nearest training examples), in one run.

    uv run python bench/large_few_shot.py [--limit 60] [--shots 4] [--version ID]
    uv run python bench/large_few_shot.py --data sentiment [--shots 4]

Data no model was trained on: the bitext validation split (category, intent, ticket fields), or with
`--data sentiment` the judged half of the version's sentiment evaluation (`evaluation-sentiment/outcomes.parquet`:
its held-out rows and airline_dev tweets no model trained on, rebuilt by id). Both rows run the same items with a
fresh runtime each, one item per prompt (as `sluicegate evaluate` runs the large tier); only the demonstrations
differ. Prints per task accuracy and macro-F1, per field F1 over present values, documents per second and prompt
tokens per document, and writes the figures as JSON beside the table (bench/large_few_shot.json, or
bench/large_few_shot.sentiment.json) so commits can be compared. For sentiment it also prints the cascade at the
version's stored thresholds with each row's large answers (the small tier's answers and routing from the stored
rows: which items escalate does not depend on the large tier).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from processors.datasets import LabelledExample, load_examples, sample
from processors.demonstrations import read_examples
from processors.evaluate import evaluate
from processors.evaluate.summarize import tier_quality
from schemas.config import Config, load_config
from schemas.versions import ModelVersion, apply_version, resolve

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def sentiment_judged(config: Config, version: ModelVersion, folder: Path) -> tuple[list[LabelledExample],
                                                                                  pl.DataFrame]:
    """The judged rows of the version's sentiment evaluation as examples (airline tweets by their tweet id, the
    version's held-out rows by their text's id), and those outcome rows routed at the version's thresholds
    (config: the version applied; the small tier's answers and where the cascade escalates)."""
    from processors.evaluate import cascade_at_thresholds, rescore

    ev = rescore(config, pl.read_parquet(folder / "evaluation-sentiment" / "outcomes.parquet"))
    rows = cascade_at_thresholds(ev.outcomes.filter((pl.col("split") == "judge") & (pl.col("item") == "sentiment")),
                                 "sentiment", ev)
    wanted = set(rows["example_id"].to_list())
    tweets = [LabelledExample(f"airline_unused:{ex.example_id.split(':', 1)[1]}", ex.text, ex.source, ex.labels)
              for ex in load_examples(DATA / "sentiment" / "airline_dev.csv")]
    held = read_examples(folder / version.heldout) if version.heldout else []
    gold = dict(zip(rows["example_id"].to_list(), rows["gold"].to_list(), strict=True))
    by_id: dict[str, LabelledExample] = {}
    for ex in [*tweets, *held]:  # airline_dev repeats some tweet ids: the first with the stored gold label
        if ex.example_id in wanted and ex.labels.get("sentiment") == gold[ex.example_id]:
            by_id.setdefault(ex.example_id, ex)
    examples = list(by_id.values())
    if len(examples) != len(wanted):
        raise SystemExit(f"rebuilt {len(examples)} of the {len(wanted)} judged sentiment rows")
    return examples, rows


def cascade_accuracy(judged: pl.DataFrame, large_correct: dict[str, bool]) -> tuple[float, float]:
    """(accuracy, escalation rate) of the stored cascade's routing with these large-tier answers on its escalated
    items (review keeps the large answer, as evaluate scores it)."""
    up = judged["decided_by"].is_in(["large", "review"]).to_list()
    right = [large_correct[i] if u else bool(s) for i, u, s in
             zip(judged["example_id"].to_list(), up, judged["small_correct"].to_list(), strict=True)]
    return sum(right) / len(right), sum(up) / len(up)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=("bitext", "sentiment"), default="bitext")
    parser.add_argument("--limit", type=int, default=60, help="bitext: this many validation tickets")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--version", help="model version id (default: the promoted one)")
    args = parser.parse_args()
    base = load_config(ROOT / "fixtures" / "sluicegate.toml")
    found = resolve(base.models.registry, args.version)
    if not found or not found[0].demonstrations:
        raise SystemExit("the model version stores no demonstrations")
    judged = None
    if args.data == "sentiment":
        examples, judged = sentiment_judged(apply_version(base, *found), *found)
    else:
        examples = load_examples(DATA / "tickets" / "bitext" / "validation.csv")
        examples = sample(examples, args.limit, seed=0, stratify="intent")
    figures: dict[str, dict] = {}
    if judged is not None:
        figures["small (stored rows)"] = {"sentiment.accuracy": sum(judged["small_correct"]) / len(judged)}
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
        if judged is not None:
            large = dict(zip(o["example_id"].to_list(), o["large_correct"].to_list(), strict=True))
            row["cascade.accuracy"], row["cascade.escalation"] = cascade_accuracy(judged, large)
            stored = dict(zip(judged["example_id"].to_list(), judged["large_pred"].to_list(), strict=True))
            # the same answers as the stored rows' (zero-shot): the same texts and the same model
            row["same_as_stored_large"] = sum(stored[i] == p for i, p in
                                              zip(o["example_id"].to_list(), o["large_pred"].to_list(),
                                                  strict=True)) / len(o)
        figures[f"large, {shots} shots"] = row
    keys = sorted({k for row in figures.values() for k in row})
    what = "bitext validation tickets" if judged is None else "judged sentiment rows of the version's evaluation"
    print(f"large tier alone on {len(examples)} {what} (every item)\n")
    print(f"{'figure':<28}" + "".join(f"{name:>20}" for name in figures))
    for key in keys:
        print(f"{key:<28}" + "".join(f"{row.get(key, float('nan')):>20.3f}" for row in figures.values()))
    out = Path(__file__).with_suffix(".json" if judged is None else ".sentiment.json")
    out.write_text(json.dumps({"data": args.data, "limit": args.limit if judged is None else len(examples),
                               "version": found[0].id, "figures": figures}, indent=2) + "\n")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
