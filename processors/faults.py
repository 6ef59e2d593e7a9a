"""Fault injection for the crash-safety tests (tests/robustness/test_crash.py): where a run kills itself.

A FaultPlan is a field of the RunSpec (None in production), as Beam's RunInference(clock=...) takes its
clock: it travels with the spec to wherever the graph runs, where an environment variable would not.
The graph adds its checkpoints only when a plan is set.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

STAGES = ("ingest", "inference", "write", "commit", "finish")
# ingest: per record; write: per partition staged (nothing visible yet); commit: per file renamed into place

_reached: dict[str, int] = {}  # per process: the kill is of the process that counts
_lock = threading.Lock()


@dataclass(frozen=True)
class FaultPlan:
    """Kill the process (SIGKILL, like an OOM kill or a lost machine: no chance to clean up) the nth time
    `stage` is reached."""

    stage: str
    nth: int = 1

    def __post_init__(self) -> None:
        if self.stage not in STAGES or self.nth < 1:
            raise ValueError(f"fault plan {self.stage}:{self.nth}: the stage is one of {', '.join(STAGES)}, n >= 1")

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """'<stage>[:<n>]', e.g. 'write:2'."""
        stage, _, nth = text.partition(":")
        try:
            return cls(stage, int(nth or 1))
        except ValueError:
            raise ValueError(f"not a fault plan ('<stage>[:<n>]', stage one of {', '.join(STAGES)}): {text!r}") \
                from None


def checkpoint(plan: FaultPlan | None, stage: str) -> None:
    """The run has reached `stage` once more: the process kills itself if the plan says this is the time."""
    if plan is None or plan.stage != stage:
        return
    with _lock:
        _reached[stage] = _reached.get(stage, 0) + 1
        if _reached[stage] >= plan.nth:
            os.kill(os.getpid(), signal.SIGKILL)


def pass_checkpoint(element: object, plan: FaultPlan, stage: str) -> object:
    """checkpoint as a graph step (beam.Map): each element passing through reaches `stage` once."""
    checkpoint(plan, stage)
    return element
