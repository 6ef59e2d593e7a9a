"""llama.cpp in-process through xllamacpp: the default runtime for both tiers."""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
    # One sequence slot, each document's prompts one sequence on it (ModelCopy.sequence): a document
    # then gets bit-identical probabilities alone, in any batch, in any order and on any rerun. Several slots
    # decode their prompts' tokens in one shared batch, and llama.cpp's CPU matrix kernels add up in
    # another order for another number of rows (llamafile sgemm, the repacked Q4 kernels): the same
    # ticket's probability moved by up to 0.027 with its batch. On 2 cores one slot is as fast as 8.
    params.n_parallel = 1
    params.n_ctx = tier.context_per_sequence
    params.cache_ram_mib = 0  # no host-side prompt cache (llama.cpp's default holds up to 8 GiB)
    # Weights read into memory, not mapped: llama.cpp repacks most CPU weights into its own buffers, and with a
    # mapping the file's pages it read them from stay resident too. Qwen 1.5B (a 1.1 GB file) then added
    # 1,780 MB of RSS; read, 1,180 MB, with the same logits. bench/cold.py's peak RSS: 2.49 -> 1.88 GB (tickets).
    params.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    params.swa_full = True  # Gemma 3's sliding-window attention over the whole prompt (as measured so far)
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


def copies_and_threads(tier: TierModel) -> tuple[int, int]:
    """The copies of the model a tier runs, and each copy's threads: the tier's threads split among at most as
    many copies as threads."""
    n = max(1, min(tier.copies, tier.threads))
    return n, max(1, tier.threads // n)


class LlamaCppRuntime:
    """The tier's model in [tier] copies (each its own llama.cpp server with one slot and threads / copies
    threads). A document's sequence runs on one copy, whole; documents on different copies run at once (the
    server releases the GIL). Every copy computes the same probabilities for the same document: their thread
    counts are equal, and llama.cpp's CPU kernels give each output the same sums whatever the thread count."""

    def __init__(self, tier: TierModel):
        n, threads = copies_and_threads(tier)
        one = tier.model_copy(update={"threads": threads})
        self._copies = [ModelCopy(one) for _ in range(n)]
        self._free: queue.SimpleQueue[ModelCopy] = queue.SimpleQueue()
        for copy in self._copies:
            self._free.put(copy)
        self._bound = threading.local()  # the copy this thread's sequence runs on
        self.version = self._copies[0].version
        self.copies = n  # sequences that can run at once (tiers.predict runs that many documents together)

    @contextmanager
    def sequence(self, shared: str = "", separator: str = "") -> Iterator[None]:
        """One document's prompts on one free copy (ModelCopy.sequence); waits for one when all are busy."""
        copy = self._free.get()
        self._bound.copy = copy
        try:
            with copy.sequence(shared, separator):
                yield
        finally:
            self._bound.copy = None
            self._free.put(copy)

    def complete(self, prompts: list[str], *, max_tokens: int, top_logprobs: int = 0,
                 json_schema: dict | None = None, grammar: str | None = None) -> list[Completion]:
        options = {"max_tokens": max_tokens, "top_logprobs": top_logprobs, "json_schema": json_schema,
                   "grammar": grammar}
        copy = getattr(self._bound, "copy", None)
        if copy is not None:  # inside this thread's sequence
            return copy.complete(prompts, **options)
        copy = self._free.get()  # outside a sequence: each prompt afresh, on any free copy
        try:
            return copy.complete(prompts, **options)
        finally:
            self._free.put(copy)

    def close(self) -> None:
        for copy in self._copies:
            copy.close()


class ModelCopy:
    """One copy of the model: a llama.cpp server with one sequence slot."""

    def __init__(self, tier: TierModel):
        import xllamacpp  # imported here: the module is heavy and only workers need it

        self._server = xllamacpp.Server(server_params(tier))
        self.version = model_version(tier.model, tier.adapter)
        self._served = False  # whether the server answered a request (close() depends on it)
        self._slot = threading.RLock()  # held for a whole sequence: no other prompt may come in between
        self._in_sequence = False
        self._reuse = False  # inside a sequence, after its first prompt: reuse the slot's cached prefix
        self._primed: tuple[str, str] | None = None  # the shared prefix (and separator) the slot holds, canonical
        self._prefix_tokens: dict[tuple[str, str], int] = {}  # (prefix, separator) -> the prefix's tokens; 0: the
        # separator is no single token after it, the prefix is not kept

    @contextmanager
    def sequence(self, shared: str = "", separator: str = "") -> Iterator[None]:
        """One document's prompts, alone on the slot, each reusing the prefix it shares with the prompt before
        it (the same document's text). The same document asked the same things in the same order therefore
        gets the same probabilities, whatever ran before it or beside it. Outside a sequence, every prompt is
        evaluated afresh.

        shared, separator (prompts.shared_prefix): the text all of the document's prompts start with (the
        system turn and the document header: 35 tokens for the large tier, a third of a ticket's first
        prompt) and a control token no document holds. The prefix is not evaluated again for every document:
        the slot keeps it, computed afresh with the separator after it, so that the document's first prompt
        reuses exactly the prefix, in the same state, whatever ran before. Before each document the slot is
        brought back to prefix + separator (one token to evaluate); when that is not all it took (something
        overwrote the prefix: a prompt evaluated afresh, a document whose first token merged with the
        prefix's last), the prefix is evaluated afresh again. Without them, the first prompt is evaluated afresh."""
        with self._slot:
            self._in_sequence, self._reuse = True, False
            try:
                if shared and separator:
                    self._reuse = self._prime(shared, separator)
                yield
            finally:
                self._in_sequence = self._reuse = False

    def _prime(self, shared: str, separator: str) -> bool:
        """Brings the slot to shared + separator in its canonical state; False: it cannot (evaluate afresh)."""
        request = {"prompt": shared + separator, "max_tokens": 1, "temperature": 0.0}
        key = (shared, separator)
        if key not in self._prefix_tokens:  # once per prefix: the separator must be one token after it
            alone = self._request({**request, "prompt": shared, "cache_prompt": False})
            both = self._request({**request, "cache_prompt": False})  # afresh: canonical
            self._primed = None
            if not (_answered(alone) and _answered(both)):
                return False
            n = _prompt_tokens(alone)
            self._prefix_tokens[key] = n if _prompt_tokens(both) == n + 1 else 0
            self._primed = key if self._prefix_tokens[key] else None
            return self._primed is not None
        if not self._prefix_tokens[key]:
            return False
        if self._primed == key:  # the slot holds it, with the last document after it: only the separator
            if _computed(self._request({**request, "cache_prompt": True})) == 1:
                return True
        afresh = self._request({**request, "cache_prompt": False})
        self._primed = key if _answered(afresh) else None
        return self._primed is not None

    def complete(self, prompts: list[str], *, max_tokens: int, top_logprobs: int = 0,
                 json_schema: dict | None = None, grammar: str | None = None) -> list[Completion]:
        # One request per prompt: the one slot takes them in turn anyway, and each response then carries
        # that prompt's own token counts (a list request reports one prompt's usage for all of them).
        request: dict = {"max_tokens": max_tokens, "temperature": 0.0}
        if top_logprobs:
            request["n_probs"] = top_logprobs
        if json_schema is not None:
            request["json_schema"] = json_schema
        if grammar is not None:
            request["grammar"] = grammar
        with self._slot:
            return [self._one({**request, "prompt": prompt}) for prompt in prompts]

    def _one(self, request: dict) -> Completion:
        request["cache_prompt"] = self._reuse
        kept = self._primed if self._reuse and self._primed and request["prompt"].startswith(self._primed[0]) else None
        response = self._request(request)
        self._reuse = self._in_sequence
        if kept is None or _prompt_tokens(response) - _computed(response) < self._prefix_tokens.get(kept, 0):
            self._primed = None  # the prefix was (partly) evaluated again: no longer in its canonical state
        if _answered(response):
            return _to_completion(response)
        message = str(response.get("error") if isinstance(response, dict) else response)[:300]
        return Completion("", [], 0, 0, error=f"runtime error: {message}")

    def _request(self, request: dict) -> object:
        self._served = True
        return self._server.handle_completions(request)

    def close(self) -> None:
        # Dropping a server that never served a request hung for minutes (PLATFORM.md): serve one first.
        if self._server is not None and not self._served:
            self._request({"prompt": " ", "max_tokens": 1, "temperature": 0.0})
        self._server = None


def _answered(response: object) -> bool:
    return isinstance(response, dict) and "choices" in response


def _prompt_tokens(response: object) -> int:
    return int(((response.get("usage") or {}) if isinstance(response, dict) else {}).get("prompt_tokens", 0))


def _computed(response: object) -> int:
    """Prompt tokens llama.cpp evaluated for the request (not reused from its slot); -1: not reported."""
    return int(((response.get("timings") or {}) if isinstance(response, dict) else {}).get("prompt_n", -1))


def _to_completion(response: dict) -> Completion:
    """One prompt's completion, with its exact token counts: the prompt's tokens, and those llama.cpp
    computed for it (timings.prompt_n)."""
    choices = response.get("choices") or []
    if not choices:
        return Completion("", [], 0, 0, error="missing from response")
    choice = choices[0]
    tokens = []
    for item in ((choice.get("logprobs") or {}).get("content") or []):
        top: dict[str, float] = {}
        for cand in item.get("top_logprobs") or []:
            text = cand.get("token", "")
            top[text] = max(top.get(text, -1e9), float(cand.get("logprob", -1e9)))
        tokens.append(TokenLogprob(item.get("token", ""), float(item.get("logprob", -1e9)), top))
    usage = response.get("usage") or {}
    return Completion(text=choice.get("text") or "", tokens=tokens, prompt_tokens=_prompt_tokens(response),
                      completion_tokens=len(tokens) or int(usage.get("completion_tokens", 0)),
                      computed_tokens=max(_computed(response), 0))
