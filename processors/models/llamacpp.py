"""llama.cpp in-process through xllamacpp: the default runtime for both tiers."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from processors.models.base import Completion, TokenLogprob
from processors.models.weights import model_path, model_version
from schemas.config import TierModel

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger(__name__)


LOOPBACK = "127.0.0.1"


def server_params(tier: TierModel) -> xllamacpp.CommonParams:
    """The llama.cpp server parameters for a tier: the model and its threads, and a locked-down listener.

    xllamacpp always opens an HTTP listener (there is no switch to turn it off), although sluicegate only
    calls the server in-process. Its options are set explicitly rather than left to defaults: loopback only,
    a port the OS picks, a random key per runtime (never logged or stored), and no web UI, /slots,
    /metrics, POST /props or CORS, so another local process or a browser page gets nothing from it
    (/health stays public in llama.cpp; it says only {"status":"ok"}).
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path(tier.model))
    if tier.adapter:
        lora = xllamacpp.CommonAdapterLoraInfo()
        lora.path = tier.adapter
        lora.scale = 1.0
        params.lora_adapters = [lora]
    params.cpuparams.n_threads = tier.threads
    params.cpuparams_batch.n_threads = tier.threads
    params.n_parallel = tier.parallel_sequences
    params.n_ctx = tier.context_per_sequence * tier.parallel_sequences
    # Gemma 3 uses sliding-window attention; a full-size cache lets a document's prefix be reused
    # across its tasks (measured about 2x on label scoring).
    params.swa_full = True
    params.verbosity = 0
    # The listener nobody needs (every call is in-process): nothing on it that need not be.
    params.hostnames = [LOOPBACK]
    params.port = 0  # the OS picks a free port at bind time (no race with a port chosen beforehand)
    params.reuse_port = False  # no SO_REUSEPORT: no other process can bind beside it and take its connections
    params.api_keys = [secrets.token_urlsafe(24)]
    params.ui = False  # the web UI ("/" and its assets) is public in llama.cpp even with a key
    params.endpoint_slots = False
    params.endpoint_metrics = False
    params.endpoint_props = False  # POST /props (changes server settings)
    params.ui_mcp_proxy = False
    params.cors_origins = ""  # no browser origin may read a response (the default "*" reflects any)
    # n_threads_http stays at its default: with 1, one evaluation test ran 160 s instead of 103 s here
    # (not confirmed in a full suite run: 111 s against 106 s).
    return params


class LlamaCppRuntime:
    def __init__(self, tier: TierModel):
        import xllamacpp  # imported here: the module is heavy and only workers need it

        self._server = xllamacpp.Server(server_params(tier))
        self.version = model_version(tier.model, tier.adapter)
        self._reuse_prompt_cache = tier.reuse_prompt_cache

    def complete(self, prompts: list[str], *, max_tokens: int, top_logprobs: int = 0,
                 json_schema: dict | None = None, grammar: str | None = None) -> list[Completion]:
        if not prompts:
            return []
        request: dict = {"prompt": prompts, "max_tokens": max_tokens, "temperature": 0.0,
                         "cache_prompt": self._reuse_prompt_cache}
        if top_logprobs:
            request["n_probs"] = top_logprobs
        if json_schema is not None:
            request["json_schema"] = json_schema
        if grammar is not None:
            request["grammar"] = grammar
        response = self._server.handle_completions(request)
        if isinstance(response, dict) and "choices" in response:
            return _to_completions(response, len(prompts))
        if isinstance(response, list) and len(response) == len(prompts):  # older shape: one dict each
            return [_to_completions(r, 1)[0] for r in response]
        message = str(response.get("error") if isinstance(response, dict) else response)[:300]
        return [Completion("", [], 0, 0, error=f"runtime error: {message}") for _ in prompts]

    def close(self) -> None:
        self._server = None


def _to_completions(response: dict, n: int) -> list[Completion]:
    out = [Completion("", [], 0, 0, error="missing from response") for _ in range(n)]
    choices = response.get("choices") or []
    usage = response.get("usage") or {}
    for position, choice in enumerate(choices):
        index = choice.get("index", position)
        if not 0 <= index < n:
            continue
        tokens = []
        for item in ((choice.get("logprobs") or {}).get("content") or []):
            top: dict[str, float] = {}
            for cand in item.get("top_logprobs") or []:
                text = cand.get("token", "")
                top[text] = max(top.get(text, -1e9), float(cand.get("logprob", -1e9)))
            tokens.append(TokenLogprob(item.get("token", ""), float(item.get("logprob", -1e9)), top))
        out[index] = Completion(
            text=choice.get("text") or "",
            tokens=tokens,
            # usage is reported for the whole batch; split it evenly for per-document accounting
            prompt_tokens=int(usage.get("prompt_tokens", 0)) // max(len(choices), 1),
            completion_tokens=len(tokens) or int(usage.get("completion_tokens", 0)) // max(len(choices), 1),
        )
    return out
