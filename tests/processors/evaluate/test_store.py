"""Calibration and thresholds stored into a model version: what a new fit replaces and what it leaves."""

import polars as pl

from processors.evaluate import OUTCOME_SCHEMA, Evaluation, store_calibration
from schemas.config import TaskCalibration, Thresholds
from schemas.versions import ModelVersion, read_version, write_version


def test_a_new_fields_fit_replaces_the_own_thresholds_of_the_sources_it_saw_and_keeps_the_others(tmp_path, config):
    registry = str(tmp_path / "models")
    old = {"fields": Thresholds(small=0.5), "fields:tickets": Thresholds(small=0.7),
           "fields:pdf": Thresholds(small=0.3)}
    old_maps = {f"small:{k}": TaskCalibration(method="isotonic", x=[0.0, 1.0], y=[0.1, 0.9]) for k in old}
    write_version(registry, ModelVersion(id="v1", thresholds=old, calibration=old_maps))
    cfg = config.model_copy(deep=True)
    cfg.models.registry, cfg.models.active = registry, "v1"
    outcomes = pl.DataFrame([{"example_id": "t1", "source": "tickets", "kind": "field", "item": "order_id"}],
                            schema=OUTCOME_SCHEMA)  # this evaluation saw tickets only
    new_map = TaskCalibration(method="isotonic", x=[0.0, 1.0], y=[0.2, 0.8])
    ev = Evaluation(outcomes, cfg, ("small", "large"), {}, 1, thresholds={"fields": Thresholds(small=0.4)},
                    calibration={"small:fields": new_map})
    assert store_calibration(cfg, ev, "tickets.csv") == ("v1", False)
    stored = read_version(registry, "v1").thresholds
    # the tickets' own threshold would otherwise win over the new fit on tickets; the PDFs' says what it said
    assert stored == {"fields": Thresholds(small=0.4), "fields:pdf": Thresholds(small=0.3)}
    # and so would its own calibration map over the new fields' one (processors.calibration.calibration_of)
    assert read_version(registry, "v1").calibration == {"small:fields": new_map,
                                                        "small:fields:pdf": old_maps["small:fields:pdf"]}
