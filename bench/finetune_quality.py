"""Label quality per tier, in one run on the same held-out items: tier 0, base small, fine-tuned small, large.

    uv run python bench/finetune_quality.py [--limit 200] [--version ID] [--skip-large]

Data no model was trained on: the bitext validation split (category, intent) and a stratified part of
airline_dev (sentiment; the shipped adapter and tier 0 learned sentiment from VADER only). The baseline
is the base Gemma 3 270M with the run-time prompts and contextual calibration; the fine-tuned rows use
the promoted model version (or --version). Prints accuracy and macro-F1 per task and tier, and each
tier's documents per second (labels only: fields are evaluated by `sluicegate evaluate`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from processors.datasets import load_examples, sample
from processors.evaluate import evaluate
from processors.linear import LinearLabeler
from processors.tasks.label import label_metrics
from schemas.config import load_config
from schemas.versions import apply_version, resolve, version_file

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def _labels_only(examples):
    for ex in examples:
        ex.fields, ex.fields_complete = {}, False
    return examples


def _linear_rows(folder: Path, version, examples) -> dict[str, dict[str, float]]:
    """Tier 0 alone, as the run uses it (LinearLabeler.predict over the task's labels), scored by the task's scorer."""
    out = {}
    tasks = {t.name: t for t in version.tasks} if version else {}
    for task, tier0 in version.linear.items() if version else []:
        labelled = [ex for ex in examples if task in ex.labels]
        if not labelled or task not in tasks:
            continue
        labeler = LinearLabeler.load(version_file(folder, version, f"linear.{task}.path", tier0.path))
        started = time.perf_counter()
        pred = [p.label for p in labeler.predict(tasks[task], [ex.text for ex in labelled])]
        seconds = time.perf_counter() - started
        metrics = label_metrics([ex.labels[task] for ex in labelled], pred)
        out[task] = {"accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1,
                     "docs_per_second": len(labelled) / seconds, "n": len(labelled)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "fixtures" / "sluicegate.toml"))
    parser.add_argument("--limit", type=int, default=200, help="items per data set (stratified)")
    parser.add_argument("--version", help="model version id (default: the promoted one)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    base = load_config(args.config)
    found = resolve(base.models.registry, args.version)
    if not found:
        raise SystemExit("no model version: train one with `sluicegate finetune` (or pass --version)")
    version, folder = found
    tuned = apply_version(base, version, folder)
    tuned.linear = {}  # the language model alone; tier 0 has its own rows
    sets = {
        "bitext validation": _labels_only(sample(load_examples(DATA / "tickets/bitext/validation.csv"), args.limit,
                                                 stratify="intent")),
        "airline_dev": _labels_only(sample(load_examples(DATA / "sentiment/airline_dev.csv"), args.limit,
                                           seed=1, stratify="sentiment")),
    }
    figures: dict = {"version": version.id, "limit": args.limit, "sets": {}}
    for name, examples in sets.items():
        rows: dict[str, dict] = {"tier 0 (linear)": _linear_rows(folder, version, examples)}
        runs = [("base small (zero-shot, calibrated)", base, ("small",)),
                (f"fine-tuned small ({version.id})", tuned, ("small",))]
        if not args.skip_large:
            runs.append(("large (Qwen2.5 1.5B)", base, ("large",)))
        for label, config, tiers in runs:
            ev = evaluate(config, examples, tiers=tiers)
            tier = tiers[0]
            dps = ev.summary.cost[tier].docs_per_second
            rows[label] = {task: {"accuracy": e.row(tier).accuracy, "macro_f1": e.row(tier).macro_f1,
                                  "docs_per_second": dps, "n": e.n}
                           for task, e in ev.summary.tasks.items()}
        figures["sets"][name] = rows
        print(f"\n## {name} ({len(examples)} items)\n")
        print("| tier | task | accuracy | macro-F1 | docs/s |\n|---|---|---|---|---|")
        for label, tasks in rows.items():
            for task, m in sorted(tasks.items()):
                print(f"| {label} | {task} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['docs_per_second']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
