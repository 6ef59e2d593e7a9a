"""The `finetune` flow: labelled examples (and past nights' large-tier decisions) -> a new model version.

The work is processors/finetune/job.py; this flow adds Prefect's run record, a markdown artifact
with the training and evaluation figures, and typed parameters the UI renders as a form.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.nightly import resolve_config
from schemas.config import load_config


@flow(name="finetune", log_prints=True)
def finetune(train: list[str], eval: str | None = None, format: str | None = None, limit: int | None = None,
             eval_limit: int = 150, epochs: float = 1.0, distill_out: str | None = None,
             distill_start: date | None = None, distill_end: date | None = None, corrections: str | None = None,
             force: bool = False, linear: bool = True, from_base: bool = False,
             config_path: str | None = None) -> dict:
    """Trains a LoRA adapter (and tier 0) on `train` files, evaluates it, promotes it if better.

    distill_*: also learn from the large tier's decisions in that date range of an output root;
    corrections: a CSV of doc_id + corrected labels / field.<name> values, which win.
    """
    from processors.finetune import require_training_stack

    require_training_stack()  # an optional extra: one error that says what to install
    from processors.finetune.job import FinetuneRequest, run_finetune
    from processors.finetune.train import TrainOptions

    logger = get_run_logger()
    _, path = resolve_config(config_path, registry_must_exist=False)
    config = load_config(path if path != "<defaults>" else None)  # the file as written: training picks its base
    if not config.models.registry:
        raise ValueError("set [models].registry in the configuration: the folder where model versions live")
    request = FinetuneRequest(
        train=list(train), registry=config.models.registry, eval=eval, format=format, limit=limit,
        eval_limit=eval_limit, distill_out=distill_out or (config.output.root if distill_start else None),
        distill_start=distill_start, distill_end=distill_end or distill_start, corrections=corrections,
        force=force, linear=linear, from_base=from_base, options=TrainOptions(epochs=epochs),
    )
    outcome = run_finetune(config, request)
    logger.info("version %s: %s (%s)", outcome.version_id, "promoted" if outcome.promoted else "not promoted",
                outcome.why)
    create_markdown_artifact(key="finetune-summary", markdown=_markdown(outcome), description="sluicegate finetune")
    return {"version": outcome.version_id, "promoted": outcome.promoted, "why": outcome.why,
            "folder": outcome.folder, "metrics": outcome.metrics, "training": outcome.train,
            "linear_kept": outcome.linear_kept, "stats": outcome.stats}


def _markdown(outcome) -> str:
    lines = [f"# finetune {outcome.version_id}", "",
             f"**{'promoted' if outcome.promoted else 'not promoted'}**: {outcome.why}", "",
             "| metric | " + " | ".join(outcome.metrics) + " |", "|---|" + "---|" * len(outcome.metrics)]
    keys = sorted({k for m in outcome.metrics.values() for k in m})
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{m.get(key, float('nan')):.3f}" for m in outcome.metrics.values())
                     + " |")
    t = outcome.train
    lines += ["", f"Training: {t.get('pairs')} pairs, {t.get('steps')} steps, {t.get('seconds')} s "
              f"({t.get('seconds_per_100_examples')} s per 100), loss {t.get('loss_first')} -> {t.get('loss_last')}",
              f"Tier 0 kept for: {', '.join(f'{k} (>= {v:.2f})' for k, v in outcome.linear_kept.items()) or 'none'}"]
    return "\n".join(lines)
