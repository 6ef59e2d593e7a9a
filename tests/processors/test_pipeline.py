"""The Beam graph's shape: routing is a step of its own after each tier, and the crash tests' kill
checkpoints are in the graph only when the RunSpec carries a fault plan."""

from __future__ import annotations

import signal
import subprocess
import sys

import apache_beam as beam
import pytest

from processors.faults import FaultPlan
from processors.pipeline import RunSpec, build_pipeline


def _steps(config, faults: FaultPlan | None = None) -> list[str]:
    """The graph's top-level steps in the order build_pipeline applies them (nothing is run)."""
    p = beam.Pipeline()
    build_pipeline(p, RunSpec(run_id="r", run_date="2026-11-20", inputs=[], sources=["tickets"], config=config,
                              config_hash="h", out_root="out", faults=faults))
    return [t.full_label for t in p.transforms_stack[0].parts]


def test_the_graph_reads_small_tier_route_large_tier_route_rows(config):
    steps = _steps(config)
    order = ["Ingest", "SmallTier", "RouteSmall", "KeptOrEscalated", "AfterSmallTier", "LargeTier", "RouteLarge",
             "Rows", "Stage", "Commit"]
    assert [s for s in steps if s in order] == order
    assert not [s for s in steps if s.startswith("Fault")]  # production: no kill checkpoints at all


def test_a_fault_plan_adds_the_kill_checkpoints(config):
    steps = _steps(config, FaultPlan("write", 2))
    assert [s for s in steps if s.startswith("Fault")] == [
        "FaultAfterIngest", "FaultAfterSmallTier", "FaultAfterStage"]
    assert steps.index("FaultAfterSmallTier") == steps.index("SmallTier") + 1


def test_fault_plans_parse_and_refuse_unknown_stages():
    assert FaultPlan.parse("write:2") == FaultPlan("write", 2)
    assert FaultPlan.parse("finish") == FaultPlan("finish", 1)
    for bad in ("writ", "write:0", "write:x", ""):
        with pytest.raises(ValueError, match="stage"):
            FaultPlan.parse(bad)


def test_the_process_kills_itself_the_nth_time_its_stage_is_reached():
    code = ("from processors.faults import FaultPlan, checkpoint\n"
            "plan = FaultPlan('write', 2)\n"
            "checkpoint(None, 'write'); checkpoint(plan, 'ingest'); checkpoint(plan, 'write')\n"
            "print('alive', flush=True)\n"
            "checkpoint(plan, 'write')\n"
            "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL and done.stdout == "alive\n", (done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("threshold, large_loads", [(0.0, 0), (1.0, 1)])
def test_a_tier_loads_its_model_only_when_a_batch_reaches_it(config, tmp_path, monkeypatch, threshold, large_loads):
    """Nothing escalates (threshold 0, one label task, no fields): the large model is never loaded. Everything
    escalates (threshold 1): it is, once, after the small tier has answered every document and been released
    (the process holds one model at a time; the small tier is not loaded again)."""
    from processors import tiers
    from processors.pipeline import run_pipeline
    from processors.tiers import _cache_key, tier_loads
    from schemas.config import Thresholds
    from tests.conftest import FIXTURE_DATE, write_ticket_days

    held_at_load: list[tuple[str, list[str]]] = []  # (tier loading, tiers loaded at that moment)
    load_tier = tiers.load_tier

    def recording_load_tier(config, tier):
        held_at_load.append((tier, tiers.loaded_now()))
        return load_tier(config, tier)

    monkeypatch.setattr(tiers, "load_tier", recording_load_tier)
    write_ticket_days(tmp_path, [FIXTURE_DATE], per_day=2)
    run_config = config.model_copy(update={
        "tasks": [t for t in config.tasks if t.name == "sentiment"], "fields": {},
        "thresholds": {"sentiment": Thresholds(small=threshold, large=0.0)}})
    before = tier_loads()
    spec = RunSpec(run_id="r", run_date=FIXTURE_DATE, config=run_config, config_hash="h",
                   inputs=[(str(p), "tickets") for p in sorted((tmp_path / "inbox").rglob("*.jsonl"))],
                   sources=["tickets"], out_root=str(tmp_path / "out"))
    counters = run_pipeline(spec)
    loads = {key: n - before.get(key, 0) for key, n in tier_loads().items()}
    assert loads.get(_cache_key(run_config, "small")) == 1
    assert loads.get(_cache_key(run_config, "large"), 0) == large_loads
    assert counters["inputs"] == 3 and counters.get("decided_large", 0) == 2 * large_loads, counters
    # Where the time went (bench/cold.py prints it): each tier's load and answers, only where it ran.
    assert counters["ms_small_load"] > 0 and counters["ms_small_answer"] > 0 and "ms_ingest" in counters, counters
    assert (counters.get("ms_large_load", 0) > 0) == bool(large_loads), counters
    assert held_at_load == [("small", []), ("large", [])][:1 + large_loads], held_at_load
