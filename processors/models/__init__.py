"""Model runtimes behind one interface (processors/models/base.py). Register a new runtime in RUNTIMES."""

from __future__ import annotations

from processors.models.base import Completion, Runtime, TokenLogprob
from schemas.config import TierModel


def _llamacpp(tier: TierModel) -> Runtime:
    from processors.models.llamacpp import LlamaCppRuntime

    return LlamaCppRuntime(tier)


RUNTIMES = {"llamacpp": _llamacpp}


def load_runtime(tier: TierModel) -> Runtime:
    return RUNTIMES[tier.runtime](tier)


__all__ = ["RUNTIMES", "Completion", "Runtime", "TokenLogprob", "load_runtime"]
