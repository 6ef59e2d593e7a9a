"""A new label set on top of the shipped version: what the next version keeps, and whether it is promoted.

    uv run python bench/new_label_set.py [--examples 700] [--labels 77] [--eval 80]

The case issue 12 reported: `sluicegate finetune --train` on a CSV whose one label column is a new 77-label task,
with the shipped version promoted. The registry (models/) is copied to a temporary folder, so the shipped version
is the promoted one there and nothing in the repository changes. The CSVs are bench/finetune_labels.py's (bitext
intent x register, the data's class priors; held out: bitext validation tickets). The real command runs, not
forced, with --eval and --eval-limit; the new version rehearses the shipped version's training examples and is
judged on its held-out examples too (processors/finetune/job.py: inherit).

Prints, per task, the candidate's and the promoted version's held-out macro-F1 (fields: F1), the margin the
regression check allowed (processors/finetune/compare.py: decide_promotion), the decision, the training figures,
and tier 0's learning curve. Writes bench/new_label_set.json (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")


def config_with_registry_copy(folder: Path) -> Path:
    """The bundled configuration with its registry replaced by a copy of the shipped one."""
    shutil.copytree(ROOT / "models", folder / "models", ignore=shutil.ignore_patterns(".work"))
    text = (ROOT / "fixtures" / "sluicegate.toml").read_text(encoding="utf-8")
    text = text.replace('registry = "../models"', f'registry = "{folder / "models"}"')
    text = text.replace('root = "../out"', f'root = "{folder / "out"}"')
    assert str(folder / "models") in text, "the bundled configuration names no registry to replace"
    path = folder / "sluicegate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_sluicegate(args: list[str]) -> dict:
    """The real CLI in a fresh process, `--json`: its result, or SystemExit with the end of its log."""
    done = subprocess.run([SLUICEGATE, *args, "--json"], capture_output=True, text=True, check=False, cwd=ROOT,
                          env=dict(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"sluicegate {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout[done.stdout.index("{"):])


def main() -> None:
    from bench.finetune_labels import TASK, write_data
    from processors.finetune.compare import regression_margin
    from schemas.versions import read_registry, read_version

    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=700)
    parser.add_argument("--labels", type=int, default=77)
    parser.add_argument("--eval", type=int, default=80, help="held-out examples of the new task, and at most as "
                                                            "many of the shipped version's (--eval-limit)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "new_label_set.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluicegate-bench-labels-") as tmp:
        folder = Path(tmp)
        config = config_with_registry_copy(folder)
        shipped = read_registry(folder / "models").promoted
        train_csv, heldout_csv = write_data(folder, args.examples, args.labels, args.eval)
        started = time.perf_counter()
        result = run_sluicegate(["finetune", "--train", str(train_csv), "--eval", str(heldout_csv),
                                 "--eval-limit", str(args.eval), "--config", str(config)])
        seconds = time.perf_counter() - started
        version = read_version(folder / "models", result["version"])
        report = (Path(result["folder"]) / "evaluation" / "report.md").read_text(encoding="utf-8")
        promoted_after = read_registry(folder / "models").promoted
    metrics = result["metrics"]
    comparison = metrics["promotion"]
    print(f"shipped version {shipped} promoted; new task {TASK}: {args.labels} labels, {args.examples} training "
          f"tickets; held out: {args.eval} of its own, at most {args.eval} of the shipped version's")
    print(f"rehearsed {result['stats'].get('examples:rehearsal', 0)} of the shipped version's training examples; "
          f"{result['stats'].get('heldout:inherited', 0)} of its held-out examples judge the candidate too")
    print(f"tasks served by the new version: {', '.join(t.name for t in version.tasks)}; learned without the option "
          f"list: {', '.join(version.tasks_without_options)}")
    print(f"\n{'task':18s} {'candidate':>10s} {'promoted':>9s} {'margin':>7s}  (small tiers on the same held-out "
          "rows; macro-F1, fields: F1 over present values, <task>=<label>: recall)")
    rows = {}
    for task in sorted({k.rsplit(".", 1)[0] for k in comparison}):
        mine, theirs = comparison.get(f"{task}.candidate"), comparison.get(f"{task}.promoted")
        margin = regression_margin(comparison, task)  # a '<task>=<label>' row: that label's recall
        rows[task] = {"candidate": mine, "promoted": theirs, "margin": margin if theirs is not None else None}
        cells = [f"{v:10.3f}" if v is not None else f"{'-':>10s}" for v in (mine, theirs)]
        print(f"{task:18s} {cells[0]} {cells[1][1:]} {margin if theirs is not None else float('nan'):7.3f}")
    print(f"\n{'promoted' if result['promoted'] else 'not promoted'}: {result['why']}")
    print(f"finetune: {seconds:.0f} s in all; training {version.training.get('seconds')} s for "
          f"{version.training.get('pairs')} pairs, from {version.training.get('started_from', 'base')}")
    curve = report[report.find("## Learning curve"):] if "## Learning curve" in report else "(no learning curve)"
    print("\n" + curve)
    Path(args.json).write_text(json.dumps({
        "task": TASK, "labels": args.labels, "examples": args.examples, "eval": args.eval, "shipped": shipped,
        "promoted": result["promoted"], "promoted_after": promoted_after, "why": result["why"], "seconds": seconds,
        "stats": result["stats"], "training": version.training, "tasks": [t.name for t in version.tasks],
        "tasks_without_options": version.tasks_without_options, "rows": rows, "metrics": metrics}, indent=2) + "\n")


if __name__ == "__main__":
    main()
