"""The evaluate flow: small alone, large alone and the cascade on a labelled set; report, plots, artifact.

With calibrate, the calibration and thresholds fitted on the set are stored with the model version
the configuration uses (or a new version of the base model, promoted), so the next nightly run uses them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.nightly import resolve_config
from processors import evaluate as evaluation
from processors.datasets import LabelledExample, load_examples


@task
def load(data: str, format: str | None) -> list[LabelledExample]:
    return load_examples(data, format)


@flow(name="evaluate", log_prints=True)
def evaluate(data: str = "", format: str | None = None, out: str = "eval", limit: int | None = None,
             config_path: str | None = None, calibrate: bool = False, target_escalation: float | None = None,
             target_quality_gap_points: float | None = None, outcomes: str = "") -> dict:
    """Evaluates the configured tiers on a labelled file (or an invoice2data folder).

    data: CSV/JSONL (or folder); format: an adapter name (default: picked from the columns). limit: a
    sample of this many examples with the data's class proportions. calibrate: store calibration and
    thresholds with the model version. target_escalation (the escalation budget, 0-1, default 0.15) or
    target_quality_gap_points (the lowest escalation within this many points of the better single tier):
    how thresholds are chosen. outcomes: instead of data, an earlier evaluation's outcomes.parquet,
    re-scored without running a model.
    """
    logger = get_run_logger()
    config, config_file = resolve_config(config_path, registry_must_exist=not calibrate)  # calibrate creates it
    if calibrate and not config.models.registry:
        raise ValueError(f"calibrate needs a model registry: set [models] registry in {config_file}")
    if bool(data) == bool(outcomes):
        raise ValueError("give labelled data or stored outcomes (outcomes.parquet), one of them")
    gap = None if target_quality_gap_points is None else target_quality_gap_points / 100
    if outcomes:
        logger.info("re-scoring stored outcomes %s with %s", outcomes, config_file)
        ev = evaluation.rescore(config, pl.read_parquet(outcomes), target_escalation=target_escalation,
                                target_quality_gap=gap)
        data = outcomes
    else:
        examples = load(data, format)
        logger.info("evaluating %d examples from %s (limit %s) with %s", len(examples), data, limit, config_file)

        ev = evaluation.evaluate(config, examples, limit=limit, target_escalation=target_escalation,
                                 target_quality_gap=gap)  # per-tier progress lines: processors/progress.py
    notes = [f"data: `{data}`" + (f" (format {format})" if format else "") + f"; configuration: `{config_file}`"]
    stored = None
    if calibrate:
        version_id, created = evaluation.store_calibration(config, ev, data)
        stored = {"version": version_id, "created": created, "registry": config.models.registry}
        notes.append(f"calibration and thresholds stored in a new base-model version `{version_id}` (promoted)"
                     if created else f"calibration and thresholds stored in model version `{version_id}`")
        notes[-1] += f" under `{config.models.registry}`: the next nightly run uses them"
    else:
        notes.append("calibration and thresholds below were not stored (run with --calibrate to store them)")
    paths = evaluation.write_report(ev, out, extra=notes)
    create_markdown_artifact(key="evaluate", markdown=evaluation.report_markdown(ev, images=False, extra=notes),
                             description=f"sluicegate evaluation of {Path(data).name}")
    logger.info("report: %s", paths["report"])
    # JSON-able (Prefect keeps it, `--json` prints it): the summary's to_dict, plus where things went.
    return {**ev.summary.to_dict(), "out": str(Path(out).resolve()), "report": str(paths["report"]), "stored": stored}


def print_summary(result: dict) -> None:
    """The terminal table: per task and tier, quality and escalation; then cost and speed.

    result: what the flow returns (the summary's JSON form, plus 'report' and 'stored')."""
    def f(v: float | None, pct: bool = False) -> str:
        return evaluation.format_figure(v, pct, missing="-")  # plain ASCII for terminals

    s = evaluation.Summary.from_dict(result)
    tiers = [("linear", "tier 0"), ("small", "small"), ("large", "large"), ("cascade", "cascade"),
             ("cascade_calibrated", "calibrated")]
    print(f"\nsluicegate evaluate: {s.n_docs} documents, {s.n_items} items")
    print(f"  {'task':<18} {'tier':<11} {'quality':>8} {'macro-F1':>9} {'escalation':>11} {'tier 0 decides':>15}")
    for group in (s.tasks, s.fields):
        for name, entry in group.items():
            for key, label in tiers:
                e = entry.row(key)
                if e is not None:
                    esc = e.escalation_rate if e.escalation_rate is not None else (1.0 if key == "large" else 0.0)
                    print(f"  {name:<18} {label:<11} {f(e.quality):>8} {f(e.macro_f1):>9} "
                          f"{f(esc, True):>11} {f(e.linear_rate, True):>15}")
    print(f"  {'tier':<11} {'tokens/doc':>10} {'cost/1k docs':>13} {'hosted large/1k':>16} {'docs/s':>7}")
    for key, label in tiers:
        c = s.cost.get(key)
        if c is not None:
            print(f"  {label:<11} {c.tokens_per_doc:>10.0f} {c.cost_per_1000_docs:>13.4f} "
                  f"{c.cost_per_1000_docs_hosted_large:>16.4f} {c.docs_per_second:>7.2f}")
    if result.get("stored"):
        st = result["stored"]
        print(f"  calibration stored in {'new ' if st['created'] else ''}version {st['version']} ({st['registry']})")
    print(f"  report: {result['report']}")
