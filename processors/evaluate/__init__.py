"""Evaluation on labelled data: the small tier alone, the large tier alone, and the cascade.

Both tiers run on every item once (the large tier too, so its quality is known everywhere); the
cascade is then computed offline with the pure routing function, so sweeping thresholds needs no
rerun. A library first (the fine-tuning flow compares model versions with it), a CLI second:

    examples = load_examples("validation.csv")
    ev = evaluate(config, examples, limit=200)
    ev.summary.tasks["category"].small.accuracy
    calibration = fit_calibration(ev); thresholds, points = choose_thresholds(ev, calibration)
    write_report(ev, "eval/")

Tier 0 (the linear model of the configuration's model version, when it has one for a task) runs on
every labelled item too; in the cascade it decides the items at or above its threshold before the
small model, as in the nightly run (`decided_by = linear`).

Only the tasks a document is labelled for and the fields known for it are run. A task in the data
that the configuration lacks is added with the data's label set. Confidences in the outcomes are raw
(the models run without calibration); the configuration's calibration (from its model version) is
applied offline before routing, exactly as the nightly run applies it before it routes.

The modules, in the order the work happens:
- run: `evaluate()` runs the tiers on the examples (`Evaluation`, `TierRun`).
- outcomes: one row per scored item (`OUTCOME_SCHEMA`), built from the tiers' predictions.
- cascade: tier 0, then `routing.route` per tier on the outcome rows, at given thresholds and calibration.
- fitting: calibration (`fit_calibration`, `calibrated_conf`) and thresholds (`choose_thresholds`).
- evaluation: `Evaluation`, what `evaluate()` returns.
- summary: the typed figures (`Summary`); `to_dict()` is summary.json; summarize computes them.
- report: report.md and the plots (`write_report`, `report_markdown`, `format_figure`).
- store: `store_calibration` into the model version.
Each task scores itself: label metrics in processors/tasks/label.py, field matching in processors/tasks/extract.py.
"""

from processors.evaluate.cascade import cascade_at_thresholds, route_outcomes
from processors.evaluate.evaluation import TIERS, Evaluation, TierRun
from processors.evaluate.fitting import calibrated_conf, choose_thresholds, fit_calibration
from processors.evaluate.outcomes import OUTCOME_SCHEMA, outcomes_by_task, with_outcome_schema
from processors.evaluate.report import format_figure, report_markdown, write_report
from processors.evaluate.run import evaluate, evaluation_config, rescore
from processors.evaluate.store import store_calibration
from processors.evaluate.summary import ALL_FIELDS, ItemSummary, Summary, TierQuality
from processors.tasks.extract import field_match

__all__ = [
    "ALL_FIELDS", "OUTCOME_SCHEMA", "TIERS", "Evaluation", "ItemSummary", "Summary", "TierQuality", "TierRun",
    "calibrated_conf", "cascade_at_thresholds", "choose_thresholds", "evaluate", "evaluation_config", "field_match",
    "fit_calibration", "format_figure", "outcomes_by_task", "report_markdown", "rescore", "route_outcomes",
    "store_calibration", "with_outcome_schema",
    "write_report",
]
