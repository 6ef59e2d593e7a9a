"""Fault injection for the crash-safety tests (tests/robustness/test_crash.py): where a run kills itself.

A FaultPlan is a field of the RunSpec (None in production), as Beam's RunInference(clock=...) takes its
clock: it travels with the spec to wherever the graph runs, where an environment variable would not.
The graph adds its checkpoints only when a plan is set.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, replace

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
    shard: str | None = None  # only this shard's process dies (None: any)
    # once: a file the first kill creates; no process dies once it exists (a retried shard then completes).
    # The flow sets it under the run's output root; None: every process that reaches the stage dies.
    once_marker: str | None = None
    once: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES or self.nth < 1:
            raise ValueError(f"fault plan {self.stage}:{self.nth}: the stage is one of {', '.join(STAGES)}, n >= 1")

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """'<stage>[:<n>][@<shard>][+once]', e.g. 'write:2', 'inference@00001+once'."""
        body, plus, once = text.partition("+")
        body, _, shard = body.partition("@")
        stage, _, nth = body.partition(":")
        try:
            if plus and once != "once":
                raise ValueError(once)
            return cls(stage, int(nth or 1), shard or None, once=bool(plus))
        except ValueError:
            raise ValueError(f"not a fault plan ('<stage>[:<n>][@<shard>][+once]', stage one of "
                             f"{', '.join(STAGES)}): {text!r}") from None

    def for_shard(self, shard: str, marker: str) -> FaultPlan | None:
        """The plan a shard's spec carries: None for the shards it spares; with its once-marker file set."""
        if self.shard not in (None, shard):
            return None
        return replace(self, once_marker=marker) if self.once else self


def checkpoint(plan: FaultPlan | None, stage: str) -> None:
    """The run has reached `stage` once more: the process kills itself if the plan says this is the time."""
    if plan is None or plan.stage != stage:
        return
    with _lock:
        _reached[stage] = _reached.get(stage, 0) + 1
        if _reached[stage] >= plan.nth:
            if plan.once_marker:
                try:  # the first process here creates the marker and dies; later ones find it and go on
                    os.close(os.open(plan.once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
            os.kill(os.getpid(), signal.SIGKILL)


def pass_checkpoint(element: object, plan: FaultPlan, stage: str) -> object:
    """checkpoint as a graph step (beam.Map): each element passing through reaches `stage` once."""
    checkpoint(plan, stage)
    return element
