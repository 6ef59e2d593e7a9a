"""Model runtimes behind one interface (processors/models/base.py). Register a new runtime in RUNTIMES."""

from __future__ import annotations

from processors.models.base import Completion, Runtime, TokenLogprob
from schemas.config import TierModel


def _llamacpp(tier: TierModel) -> Runtime:
    from processors.models.llamacpp import LlamaCppRuntime

    return LlamaCppRuntime(tier)


def _http(tier: TierModel) -> Runtime:
    from processors.models.http import HttpRuntime

    return HttpRuntime(tier)


RUNTIMES = {"llamacpp": _llamacpp, "http": _http}


def load_runtime(tier: TierModel) -> Runtime:
    return RUNTIMES[tier.runtime](tier)


def tier_version(tier: TierModel) -> str:
    """The model version id a tier writes into rows, known without loading it (and without the network)."""
    if tier.runtime == "http":
        from processors.models.http import http_version

        return http_version(tier)
    from processors.models.weights import model_version

    return model_version(tier.model, tier.adapter)


__all__ = ["RUNTIMES", "Completion", "Runtime", "TokenLogprob", "load_runtime", "tier_version"]
