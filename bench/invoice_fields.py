"""PDF fields on invoices no model trained on: the shipped version, then the next version trained on invoices.

    uv run python bench/invoice_fields.py [--per-layout 60] [--held-per-layout 20] [--eval-limit 60]

Issue 12 item 3: the shipped version learns PDF fields too, judged on held-out layouts and on the real invoices
held out by file (here by issuer, which is stricter: one shop's invoices share a template).
- Data: bench/make_invoices.py draws the training layouts (classic, european, statement; seed 0) and the held-out
  ones (receipt, letter; seed 1). The real invoices of ../shared/data/invoices/invoice2data are split by issuer
  (split_real): every other issuer, sorted by name, is held out.
- The registry (models/) is copied to a temporary folder (bench/new_label_set.py), so nothing here changes.
- Before: `sluicegate evaluate` of the shipped version on all held-out invoices.
- Training: the real `sluicegate finetune`, not forced, over the shipped version (trained on from its adapter,
  rehearsing a sample of its examples; with --from-base, from the base model, rehearsing all of them), on the
  generated training invoices and the real training files, `--eval` all the held-out invoices; the promotion check
  also judges the shipped version's label tasks on its held-out examples.
- After: the candidate's own held-out evaluation (evaluation/outcomes.parquet), promoted or not.
Both evaluations' outcome rows are scored per group (held-out layouts, real invoices): small and large alone on every
row; the cascade routed as the nightly routes, at each version's own calibration and thresholds, on the examples the
new version's thresholds were not fitted on (processors/evaluate/fitting.py: the judge half of its held-out rows).

Prints, per group and field, F1 over present values for small alone, large alone and the cascade, with the
cascade's escalation rate; the promotion decision; the training figures. Writes bench/invoice_fields.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "data" / "invoices" / "invoice2data"
TRAIN_LAYOUTS, HELD_LAYOUTS = ["classic", "european", "statement"], ["receipt", "letter"]


def split_real(source: Path, train: Path, held: Path) -> tuple[list[str], list[str]]:
    """Copies each invoice (PDF and JSON) to train or held, by issuer: the issuers sorted by name, every other one
    held out, so no template is on both sides (coolblue1 and coolblue2 are one shop's)."""
    def issuer(path: Path) -> str:
        record = json.loads(path.read_text(encoding="utf-8"))
        record = record[0] if isinstance(record, list) else record
        return str(record.get("issuer") or path.stem)

    by_issuer: dict[str, list[str]] = {}
    for path in sorted(source.glob("*.json")):
        if path.with_suffix(".pdf").exists():
            by_issuer.setdefault(issuer(path), []).append(path.stem)
    out: tuple[list[str], list[str]] = ([], [])
    for i, name in enumerate(sorted(by_issuer, key=str.casefold)):
        folder, names = (held, out[1]) if i % 2 else (train, out[0])
        folder.mkdir(parents=True, exist_ok=True)
        for stem in by_issuer[name]:
            for suffix in (".pdf", ".json"):
                shutil.copy(source / f"{stem}{suffix}", folder / f"{stem}{suffix}")
            names.append(f"{stem}.pdf")
    return out


def per_group(registry: Path, version_id: str, config_file: Path, outcomes: Path, groups: dict[str, list[str]],
              judged: set[str]) -> dict[str, dict]:
    """Per group of example ids: each field's (and all fields') F1 for small and large alone, on every row of the
    group; the cascade routed as the nightly routes (routing.route at the version's own calibration and
    thresholds) and its escalation rate, on the group's `judged` ids only (the new version's thresholds were
    fitted on the other half of its held-out examples)."""
    import polars as pl

    from processors.evaluate import ALL_FIELDS, with_outcome_schema
    from processors.evaluate.cascade import route_outcomes
    from processors.evaluate.summarize import tier_quality
    from schemas.config import load_config
    from schemas.versions import apply_version, read_version, version_dir

    config = apply_version(load_config(config_file), read_version(registry, version_id),
                           version_dir(registry, version_id))
    rows = with_outcome_schema(pl.read_parquet(outcomes)).filter(pl.col("kind") == "field")
    rows = route_outcomes(rows, config.thresholds, config.calibration, config.linear)

    def figures(frame: pl.DataFrame, tier: str) -> dict:
        q = tier_quality(frame, "field", f"{tier}_pred", f"{tier}_correct")
        return {"f1": q.f1, "precision": q.precision, "recall": q.recall, "absent_accuracy": q.absent_accuracy}

    out: dict[str, dict] = {}
    for group, ids in groups.items():
        mine = rows.filter(pl.col("example_id").is_in(ids))
        out[group] = {}
        for name in [*sorted(mine["item"].unique().to_list()), ALL_FIELDS]:
            frame = mine if name == ALL_FIELDS else mine.filter(pl.col("item") == name)
            judged_frame = frame.filter(pl.col("example_id").is_in(sorted(judged)))
            cascade = {}
            if len(judged_frame):
                cascade = {**figures(judged_frame, "cascade"),
                           "escalation_rate": float(judged_frame["decided_by"].is_in(["large", "review"]).mean())}
            out[group][name] = {"n": len(frame), "n_judged": len(judged_frame), "small": figures(frame, "small"),
                                "large": figures(frame, "large"), "cascade": cascade}
    return out


def judged_ids(outcomes: Path) -> set[str]:
    """The examples of an evaluation's held-out rows that its calibration and thresholds were not fitted on."""
    import polars as pl

    from processors.evaluate.fitting import assign_split, judged_rows

    return set(judged_rows(assign_split(pl.read_parquet(outcomes)))["example_id"].to_list())


def _print_table(title: str, figures: dict[str, dict]) -> None:
    def cell(v: float | None) -> str:
        return f"{v:7.3f}" if v is not None and v == v else f"{'-':>7s}"
    print(f"\n{title}")
    for group, fields in figures.items():
        print(f"  {group}: {'field':16s} {'n':>4s} {'small':>7s} {'large':>7s} {'judged':>6s} {'cascade':>7s} "
              f"{'escal.':>7s}")
        for name, row in fields.items():
            small, large, cascade = (row.get(tier) or {} for tier in ("small", "large", "cascade"))
            print(f"  {'':{len(group)}s}  {name:16s} {row['n']:4d} {cell(small.get('f1'))} {cell(large.get('f1'))} "
                  f"{row['n_judged']:6d} {cell(cascade.get('f1'))} {cell(cascade.get('escalation_rate'))}")


def main() -> None:
    from bench.make_invoices import write_invoices
    from bench.new_label_set import config_with_registry_copy, run_sluicegate
    from schemas.versions import read_registry, read_version

    parser = argparse.ArgumentParser()
    parser.add_argument("--per-layout", type=int, default=60, help="generated training invoices per layout")
    parser.add_argument("--held-per-layout", type=int, default=20, help="generated held-out invoices per layout")
    parser.add_argument("--eval-limit", type=int, default=60, help="finetune --eval-limit: the most held-out "
                        "examples judged, of the new ones and of the shipped version's (each)")
    parser.add_argument("--from-base", action="store_true", help="finetune --from-base: a new adapter from the base "
                        "model, rehearsing all the shipped version's stored training examples")
    parser.add_argument("--keep", help="a folder to keep the registry copy and the outcome rows in")
    parser.add_argument("--json", default=str(ROOT / "bench" / "invoice_fields.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluicegate-bench-invoices-") as tmp:
        folder = Path(tmp)
        config = config_with_registry_copy(folder)
        registry = folder / "models"
        shipped = read_registry(registry).promoted
        generated, held = folder / "generated", folder / "held"
        write_invoices(generated, TRAIN_LAYOUTS, args.per_layout, seed=0)
        held_generated = [p.with_suffix(".pdf").name for p in write_invoices(held, HELD_LAYOUTS,
                                                                              args.held_per_layout, seed=1)]
        real_train, real_held = split_real(REAL, folder / "real", held)
        groups = {"held-out layouts": held_generated, "real, held out by issuer": real_held}

        started = time.perf_counter()
        before = run_sluicegate(["evaluate", "--data", str(held), "--out", str(folder / "before"),
                                 "--config", str(config)])
        before_seconds = time.perf_counter() - started
        started = time.perf_counter()
        result = run_sluicegate(["finetune", "--train", str(generated), "--train", str(folder / "real"),
                                 "--eval", str(held), "--eval-limit", str(args.eval_limit), "--config", str(config),
                                 *(["--from-base"] if args.from_base else [])])
        finetune_seconds = time.perf_counter() - started
        version = read_version(registry, result["version"])
        new_outcomes = Path(result["folder"]) / "evaluation" / "outcomes.parquet"
        judged = judged_ids(new_outcomes)  # the same ids judge both versions' cascades
        figures = {"shipped": per_group(registry, shipped, config, Path(before["out"]) / "outcomes.parquet", groups,
                                        judged),
                   "new": per_group(registry, version.id, config, new_outcomes, groups, judged)}
        if args.keep:  # to re-score later: both versions (the new one's held-out outcomes are in its folder)
            shutil.copytree(registry, Path(args.keep) / "models", dirs_exist_ok=True)
            shutil.copy(Path(before["out"]) / "outcomes.parquet", Path(args.keep) / "before-outcomes.parquet")
        promoted_after = read_registry(registry).promoted
    comparison = result["metrics"]["promotion"]
    print(f"shipped version {shipped}; training: {len(TRAIN_LAYOUTS)} layouts x {args.per_layout} generated "
          f"invoices + {len(real_train)} real ({', '.join(real_train)}); held out: {len(HELD_LAYOUTS)} layouts x "
          f"{args.held_per_layout} ({', '.join(HELD_LAYOUTS)}) + {len(real_held)} real ({', '.join(real_held)})")
    _print_table(f"shipped version {shipped} (evaluate: {before_seconds:.0f} s)", figures["shipped"])
    _print_table(f"new version {version.id}, trained from "
                 f"{'the base model' if args.from_base else 'the shipped adapter'}", figures["new"])
    print(f"\n{'promoted' if result['promoted'] else 'not promoted'}: {result['why']}")
    print("promotion check (small tiers on the same held-out rows; <task>=<label>: that label's recall):")
    for key in sorted(k for k in comparison if k.endswith(".candidate")):
        task = key.rsplit(".", 1)[0]
        shipped_score = comparison.get(f"{task}.promoted", float("nan"))
        print(f"  {task:18s} candidate {comparison[key]:.3f}  shipped {shipped_score:.3f}")
    print(f"finetune: {finetune_seconds:.0f} s in all; training {version.training.get('seconds')} s for "
          f"{version.training.get('pairs')} pairs, from {version.training.get('started_from', 'base')}")
    Path(args.json).write_text(json.dumps({
        "shipped": shipped, "new": version.id, "per_layout": args.per_layout, "from_base": args.from_base,
        "held_per_layout": args.held_per_layout,
        "train_layouts": TRAIN_LAYOUTS, "held_layouts": HELD_LAYOUTS, "real_train": real_train, "real_held": real_held,
        "figures": figures, "promoted": result["promoted"], "promoted_after": promoted_after, "why": result["why"],
        "evaluate_seconds": before_seconds, "finetune_seconds": finetune_seconds, "stats": result["stats"],
        "training": version.training, "promotion": comparison}, indent=2) + "\n")


if __name__ == "__main__":
    main()
