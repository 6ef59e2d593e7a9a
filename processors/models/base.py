"""The one interface every model runtime implements. Tasks talk to this, never to a runtime directly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from schemas.records import Usage


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)  # candidate token text -> logprob (max per text)


@dataclass
class Completion:
    text: str
    tokens: list[TokenLogprob]
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None  # set when this sequence failed; the others in the batch still count
    computed_tokens: int = 0  # prompt tokens the runtime evaluated (not taken from a cache); 0: not known


def probability(logprob: float) -> float:
    """A returned log-probability as a probability; above 0 it is no log-probability (a broken endpoint): 1 at
    most, never an OverflowError (parsers never raise)."""
    return math.exp(min(logprob, 0.0))


def usage_of(completion: Completion) -> Usage:
    """A completion's token counts, for a document's usage."""
    return Usage(completion.prompt_tokens, completion.completion_tokens, computed_tokens=completion.computed_tokens)


class Runtime(Protocol):
    version: str  # model version id written into output rows

    def complete(self, prompts: list[str], *, max_tokens: int, top_logprobs: int = 0,
                 json_schema: dict | None = None, grammar: str | None = None) -> list[Completion]:
        """Greedy completions for a batch of prompts, in order, one per prompt; never raises per prompt.

        json_schema or grammar (llama.cpp's grammar syntax) constrain what can be generated.
        """
        ...

    def close(self) -> None: ...
