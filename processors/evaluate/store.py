"""Storing the fitted calibration and chosen thresholds with the model version the configuration uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from processors.routing import FIELDS_KEY, fields_key, is_fields_key
from schemas.config import Config

if TYPE_CHECKING:
    from processors.evaluate.evaluation import Evaluation


def store_calibration(config: Config, ev: Evaluation, data: str = "") -> tuple[str, bool]:
    """Writes the fitted calibration and chosen thresholds into the model version the config uses.

    The version in use (config.models.active, the promoted or pinned one) is updated in place; with
    no version yet, a new version of the base model is created in the configured registry and promoted.
    Only the configuration's own tasks and 'fields' are stored. Returns (version id, created).
    """
    from schemas.versions import ModelVersion, promote, read_version, version_dir, write_version

    root = config.models.registry
    if not root:
        raise ValueError("storing calibration needs a model registry: set [models] registry in the configuration")
    if not ev.thresholds:
        raise ValueError("storing calibration needs both tiers' outcomes (thresholds are chosen from them)")
    keep = {t.name for t in config.tasks} | {FIELDS_KEY}
    calibration = {k: v for k, v in ev.calibration.items()
                   if k.split(":", 1)[1] in keep or is_fields_key(k.split(":", 1)[1])}
    thresholds = {k: v for k, v in ev.thresholds.items() if k in keep or is_fields_key(k)}
    metrics = {f"{k}.{name}": float(v) for k, p in ev.operating_points.items() if k in thresholds
               for name, v in (("escalation_rate", p.escalation_rate), ("cascade_quality", p.quality),
                               ("large_quality", p.large_quality), ("small_quality", p.small_quality))}
    metrics.update({f"{k}.n_docs": float(ev.n_docs) for k in thresholds})
    created = config.models.active is None
    if created:
        from datetime import UTC, datetime

        version = ModelVersion(
            id=f"base-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}", base_model=config.small.model,
            prompt_style=config.small.prompt_style, contextual_calibration=config.small.contextual_calibration,
            tasks=[t.model_copy(deep=True) for t in config.tasks],
            fields={s: [f.model_copy() for f in specs] for s, specs in config.fields.items()})
        if config.small.adapter:  # a hand-configured adapter travels with the version that calibrated it
            import shutil

            folder = version_dir(root, version.id)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(config.small.adapter, folder / "adapter.gguf")
            version.adapter = "adapter.gguf"
    else:
        version = read_version(root, config.models.active)
    # A calibration this evaluation tried and did not keep is dropped, not left over from an earlier fit.
    tried = {f"{tier}:{k}" for k in thresholds for tier in ev.tiers}
    version.calibration = {k: v for k, v in version.calibration.items() if k not in tried or k in calibration}
    version.calibration.update({k: v.model_copy() for k, v in calibration.items()})
    if FIELDS_KEY in thresholds:  # a source's own field thresholds from an earlier fit are stale for what this saw
        stale = {fields_key(source) for source in ev.outcomes["source"].drop_nulls().unique()} - set(thresholds)
        version.thresholds = {k: v for k, v in version.thresholds.items() if k not in stale}
        version.calibration = {k: v for k, v in version.calibration.items() if k.split(":", 1)[1] not in stale}
    version.thresholds.update({k: v.model_copy() for k, v in thresholds.items()})
    for task, threshold in ev.tier0_thresholds.items():
        if task in version.linear and task in keep:
            version.linear[task] = version.linear[task].model_copy(update={"threshold": threshold})
            metrics[f"{task}.tier0_threshold"] = threshold
    # The record of each refitted task is replaced; the others' stay (a sentiment refit keeps the fields' record).
    earlier = {k: v for k, v in version.metrics.get("calibration", {}).items()
               if k.split(".", 1)[0] not in thresholds and k != "n_docs"}  # n_docs: the old record for all tasks
    version.metrics["calibration"] = {**earlier, **metrics}
    version.training.pop("calibrated_on", None)  # the old record for all tasks: now one per task
    version.training.update({f"calibrated_on:{k}": data or "(examples)" for k in thresholds})
    write_version(root, version)
    if created:
        promote(root, version.id, f"calibration and thresholds fitted on {data or 'labelled examples'}")
    return version.id, created
