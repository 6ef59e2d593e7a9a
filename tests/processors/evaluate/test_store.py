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


def test_a_tier0_threshold_chosen_on_the_data_is_stored_with_the_version(tmp_path, config):
    from schemas.config import LinearTier

    registry = str(tmp_path / "models")
    write_version(registry, ModelVersion(id="v1", linear={"sentiment": LinearTier(path="linear-sentiment.json",
                                                                                   threshold=0.8),
                                                          "category": LinearTier(path="linear-category.json",
                                                                                 threshold=0.0)}))
    cfg = config.model_copy(deep=True)
    cfg.models.registry, cfg.models.active = registry, "v1"
    outcomes = pl.DataFrame([{"example_id": "a1", "source": "tickets", "kind": "label", "item": "sentiment"}],
                            schema=OUTCOME_SCHEMA)
    ev = Evaluation(outcomes, cfg, ("small", "large"), {}, 1, thresholds={"sentiment": Thresholds(small=0.3)},
                    tier0_thresholds={"sentiment": 1.01})
    store_calibration(cfg, ev, "airline.csv")
    stored = read_version(registry, "v1")
    # the path stays the version's own; the task this evaluation did not see keeps its tier 0
    assert stored.linear == {"sentiment": LinearTier(path="linear-sentiment.json", threshold=1.01),
                             "category": LinearTier(path="linear-category.json", threshold=0.0)}
    assert stored.metrics["calibration"]["sentiment.tier0_threshold"] == 1.01


def test_a_refit_of_one_task_keeps_the_record_of_the_others(tmp_path, config):
    """A sentiment refit stored after a fields refit: the version still says what the fields were fitted on."""
    from processors.calibration import OperatingPoint

    registry = str(tmp_path / "models")
    write_version(registry, ModelVersion(id="v1"))
    cfg = config.model_copy(deep=True)
    cfg.models.registry, cfg.models.active = registry, "v1"

    def refit(item: str, kind: str, key: str, data: str) -> None:
        outcomes = pl.DataFrame([{"example_id": "x", "source": "tickets", "kind": kind, "item": item}],
                                schema=OUTCOME_SCHEMA)
        store_calibration(cfg, Evaluation(outcomes, cfg, ("small", "large"), {}, 7,
                                          thresholds={key: Thresholds(small=0.4)},
                                          operating_points={key: OperatingPoint(0.4, 0.1, 0.9, 0.8, 0.85)}), data)
    refit("order_id", "field", "fields", "fields.parquet")
    refit("sentiment", "label", "sentiment", "tweets.parquet")
    stored = read_version(registry, "v1")
    assert stored.metrics["calibration"]["fields.cascade_quality"] == 0.9
    assert stored.metrics["calibration"]["sentiment.escalation_rate"] == 0.1
    assert stored.metrics["calibration"]["sentiment.n_docs"] == 7.0
    assert stored.training["calibrated_on:fields"] == "fields.parquet"
    assert stored.training["calibrated_on:sentiment"] == "tweets.parquet"
    refit("sentiment", "label", "sentiment", "more_tweets.parquet")  # its own record is replaced
    assert read_version(registry, "v1").training["calibrated_on:sentiment"] == "more_tweets.parquet"
