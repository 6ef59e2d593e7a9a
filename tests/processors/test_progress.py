"""Progress lines: counts, percent, rate and ETA, throttled in time (a fake clock)."""

import logging

import pytest

from processors.progress import LOGGER, Progress, duration


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    return lambda: [r.getMessage() for r in caplog.records if r.name == LOGGER.name]


def test_counts_percent_rate_and_eta(lines):
    clock = Clock()
    p = Progress("evaluate small tier", 300, clock=clock, interval=10)
    p.start()
    clock.now += 4
    p.advance(8)  # the first count is written whatever the interval
    clock.now += 53.1
    p.advance(112)  # 120 done in 57.1 s: 2.1 docs/s, 180 to go: 86 s
    assert lines() == ["evaluate small tier: 0/300 (0%)",
                       "evaluate small tier: 8/300 (2%) 2.0 docs/s, ETA 2m26s",
                       "evaluate small tier: 120/300 (40%) 2.1 docs/s, ETA 1m26s"]


def test_lines_are_throttled_to_the_interval_plus_the_last(lines):
    clock = Clock()
    p = Progress("finetune training", 100, unit="steps", clock=clock, interval=10)
    for _ in range(100):
        clock.now += 1
        p.advance(1, "loss 0.500")
    p.finish()  # the last line is written already: nothing more
    got = lines()
    # the first step, one every 10 s (steps 11, 21, ... 91), and the last
    assert len(got) == 1 + 9 + 1, got
    assert got[0] == "finetune training: 1/100 (1%) 1.0 steps/s, ETA 1m39s, loss 0.500"
    assert got[1].startswith("finetune training: 11/100 (11%)")
    assert got[-1] == "finetune training: 100/100 (100%) 1.0 steps/s, done in 1m40s, loss 0.500"


def test_resumed_work_counts_its_own_rate(lines):
    clock = Clock()
    p = Progress("finetune training", 200, unit="steps", done=150, clock=clock)
    p.start()
    clock.now += 25
    p.advance(10)  # 10 steps in 25 s here (not 160): 40 to go at 0.4/s
    assert lines() == ["finetune training: 150/200 (75%)",
                       "finetune training: 160/200 (80%) 0.4 steps/s, ETA 1m40s"]


def test_unknown_total_and_an_early_stop(lines):
    clock = Clock()
    night = Progress("small tier", None, clock=clock, interval=10)
    for _ in range(10):
        clock.now += 2
        night.advance(4)
    night.finish()  # no total: the last count is written only here
    assert lines() == ["small tier: 4 docs, 2.0 docs/s",
                       "small tier: 24 docs, 2.0 docs/s",
                       "small tier: 40 docs, 2.0 docs/s"]
    quiet = Progress("finetune training", 10, clock=clock, enabled=False)
    quiet.advance(10)
    assert len(lines()) == 3  # progress=False: counted, not written


def test_percent_reaches_100_only_when_done():
    p = Progress("x", 1000, clock=Clock())
    p.done = 999
    assert p.line().startswith("x: 999/1000 (99%)")


def test_durations():
    assert [duration(s) for s in (0, 44.6, 86, 3599, 7500)] == ["0s", "45s", "1m26s", "59m59s", "2h05m"]
