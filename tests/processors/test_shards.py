"""The shard plan: balanced by size, largest first; inputs stay where their rows are; every shard runs."""

from __future__ import annotations

import pytest

from processors.faults import FaultPlan
from processors.shards import automatic_shards, plan_shards


def _inputs(*names: str) -> list[tuple[str, str]]:
    return [(f"/in/{n}", "tickets") for n in names]


def test_largest_first_onto_the_least_loaded_shard():
    sizes = {"/in/a": 100, "/in/b": 60, "/in/c": 50, "/in/d": 10}
    plan = plan_shards(_inputs("a", "b", "c", "d"), sizes, 2, held_by={})
    assert [s.name for s in plan] == ["00000", "00001"]
    # a (100) -> 0; b (60) -> 1; c (50) -> 1 (60 < 100); d (10) -> 0 (100 < 110)
    assert {uri for uri, _ in plan[0].inputs} == {"/in/a", "/in/d"}
    assert {uri for uri, _ in plan[1].inputs} == {"/in/b", "/in/c"}
    assert [s.size for s in plan] == [110, 110]


def test_the_same_inputs_make_the_same_plan_whatever_their_order():
    sizes = {f"/in/{i}": (i * 37) % 11 for i in range(20)}
    inputs = _inputs(*map(str, range(20)))
    assert plan_shards(inputs, sizes, 3, {}) == plan_shards(list(reversed(inputs)), sizes, 3, {})


def test_an_input_with_rows_stays_on_the_shard_that_holds_them_even_beyond_the_count():
    sizes = {"/in/a": 100, "/in/b": 60, "/in/c": 50}
    plan = plan_shards(_inputs("a", "b", "c"), sizes, 1, held_by={"/in/b": "00003"})
    by_name = {s.name: {uri for uri, _ in s.inputs} for s in plan}
    assert by_name == {"00000": {"/in/a", "/in/c"}, "00003": {"/in/b"}}


def test_kept_rows_of_inputs_gone_from_the_inbox_stay_with_their_shard():
    gone = ("tickets", "/in/old.jsonl#L3")
    plan = plan_shards(_inputs("a"), {"/in/a": 1}, 1, {}, unseen=[gone], unseen_held_by={gone: "00002"})
    assert [s.name for s in plan] == ["00000", "00002"]
    assert plan[1].inputs == () and plan[1].unseen == frozenset([gone])


def test_every_planned_shard_runs_even_without_inputs():
    plan = plan_shards(_inputs("a"), {"/in/a": 5}, 3, {})
    assert [s.name for s in plan] == ["00000", "00001", "00002"]
    assert [len(s.inputs) for s in plan] == [1, 0, 0]
    assert "none" in plan[2].describe()


def test_automatic_count_is_twice_the_threads_but_no_more_than_the_files():
    assert automatic_shards(2, 100) == 4
    assert automatic_shards(2, 3) == 3
    assert automatic_shards(4, 0) == 1


def test_describe_names_the_inputs():
    plan = plan_shards(_inputs(*"abcdefg"), {}, 1, {})
    text = plan[0].describe(limit=2)
    assert "shard 00000 (7 inputs: /in/a, /in/b and 5 more)" == text


def test_fault_plan_for_one_shard_once():
    plan = FaultPlan.parse("inference:2@00001+once")
    assert (plan.stage, plan.nth, plan.shard, plan.once) == ("inference", 2, "00001", True)
    assert plan.for_shard("00000", "/tmp/m") is None
    assert plan.for_shard("00001", "/tmp/m").once_marker == "/tmp/m"
    assert FaultPlan.parse("write").for_shard("00007", "/tmp/m") == FaultPlan("write")
    with pytest.raises(ValueError, match="not a fault plan"):
        FaultPlan.parse("write+twice")
