"""What an evaluation is: the outcome rows and what each tier cost (`evaluate()` in run.py makes one)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from processors import calibration as cal
from processors.evaluate.summary import Summary
from schemas.config import Config, TaskCalibration, Thresholds

TIERS = ("small", "large")


@dataclass
class TierRun:
    """What one tier cost on the evaluated documents."""

    tier: str
    model_version: str
    n_docs: int
    seconds: float  # prediction time, all documents (model loading excluded)
    load_seconds: float
    tokens: int  # prompt + completion tokens, all documents


@dataclass
class Evaluation:
    outcomes: pl.DataFrame  # one row per (example, labelled task or known field): OUTCOME_SCHEMA
    config: Config  # the configuration evaluated (tasks and fields as run, thresholds, calibration)
    tiers: tuple[str, ...]
    runs: dict[str, TierRun]
    n_docs: int
    summary: Summary | None = None  # metrics per task / field / tier, cost, calibration, thresholds
    calibration: dict[str, TaskCalibration] = field(default_factory=dict)  # fitted on this data
    thresholds: dict[str, Thresholds] = field(default_factory=dict)  # chosen on this data
    tier0_thresholds: dict[str, float] = field(default_factory=dict)  # tier 0's, chosen on this data
    operating_points: dict[str, cal.OperatingPoint] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
