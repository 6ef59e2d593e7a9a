"""Any OpenAI-compatible /v1/completions endpoint (llama.cpp server, vLLM, Ollama, a hosted API).

One request per prompt, at most `max_concurrency` in flight, temperature 0, top log-probabilities.
llama.cpp servers also take `grammar` / `json_schema`; an endpoint that rejects them (HTTP 400) is
asked again with standard fields only, and from then on only those. Connection errors, timeouts,
429, 5xx and garbage bodies are retried with exponential backoff and jitter; after
`circuit_breaker_failures` failed requests in a row, every request fails fast for the cool-down, then
one probe is let through. A prompt that still fails gets a Completion with `error` set: complete()
never raises, and the tiers keep the small tier's answer for it.

The API key is read from the environment variable named in the configuration, without surrounding
whitespace (a key file's trailing newline is a common slip). It is sent only in the Authorization
header, never in clear text to a host other than loopback unless the tier says `allow_insecure`, and
scrubbed from every message this module produces (processors.privacy.scrub_secret: as is, stripped,
escaped or cut off) before that message is cut to length.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import random
import re
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from processors.models.base import Completion, TokenLogprob
from processors.privacy import scrub_secret
from schemas.config import TierModel, insecure_endpoint_host, insecure_key_message

log = logging.getLogger(__name__)

PLAIN_MAX_LOGPROBS = 5  # what OpenAI-style endpoints accept at most; used once an endpoint rejected more
_MAX_BACKOFF_SECONDS = 30.0
_HEADER_SAFE = re.compile(r"[\x20-\x7e]+")  # what an HTTP header value can carry as is (ASCII, no controls)


def base_url(endpoint: str) -> str:
    """The endpoint without a trailing '/' or '/v1' (both spellings are common in configurations)."""
    url = endpoint.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def http_version(tier: TierModel) -> str:
    """'http:<host[:port]>/<model>': the model version written into rows. Never includes credentials."""
    parts = urlsplit(base_url(tier.endpoint or ""))
    host = parts.hostname or "unknown"
    if parts.port:
        host += f":{parts.port}"
    return f"http:{host}/{tier.model}"


class CircuitBreaker:
    """Opens after `failures` consecutive failures; while open, fails fast for `cooldown` seconds.

    After the cool-down one probe request is let through (half-open): success closes the circuit,
    failure opens it again for another cool-down.
    """

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic,
                 name: str = "endpoint"):
        self._name = name
        self._limit = max(failures, 1)
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._failures >= self._limit and self._clock() < self._open_until

    def allow(self) -> bool:
        with self._lock:
            if self._failures < self._limit:
                return True
            if self._clock() < self._open_until or self._probing:
                return False
            self._probing = True  # cool-down over: this caller is the one probe
            return True

    def record(self, ok: bool) -> None:
        with self._lock:
            self._probing = False
            if ok:
                self._failures, self._open_until = 0, 0.0
                return
            self._failures += 1
            if self._failures >= self._limit:
                if self._clock() >= self._open_until:
                    log.warning("%s failed %d times in a row: circuit open for %.0fs", self._name, self._failures,
                                self._cooldown)
                self._open_until = self._clock() + self._cooldown


class _Failure(Exception):
    """One failed attempt; retryable says whether another attempt may succeed."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class HttpRuntime:
    def __init__(self, tier: TierModel, sleep: Callable[[float], None] = time.sleep):
        if not tier.endpoint:
            raise ValueError("runtime 'http' needs an endpoint")
        self._tier = tier
        self._url = base_url(tier.endpoint) + "/v1/completions"
        self.version = http_version(tier)
        raw = os.environ.get(tier.api_key_env, "") if tier.api_key_env else ""
        key = raw.strip()
        self._secret = raw if key else ""  # scrubbed in every form (raw, stripped, escaped, cut off)
        self._config_error = None
        if tier.api_key_env and not key:
            self._config_error = f"API key missing: environment variable {tier.api_key_env} is not set"
        elif key and not _HEADER_SAFE.fullmatch(key):
            # httpx would fail every request with the key in its message; say what is wrong instead.
            self._config_error = (f"API key in environment variable {tier.api_key_env} has characters an HTTP "
                                  "header cannot carry (a line break, control or non-ASCII character inside it)")
        elif key and (host := insecure_endpoint_host(tier.endpoint)) and not tier.allow_insecure:
            self._config_error = insecure_key_message(host)  # also checked when the config is loaded
        elif key != raw:
            log.warning("%s: the API key in %s has surrounding whitespace (a trailing newline?); sending it "
                        "without", self.version, tier.api_key_env)
        if self._config_error:
            log.error("%s: %s", self.version, self._config_error)
        headers = {"Authorization": f"Bearer {key}"} if key and not self._config_error else {}
        timeout = tier.request_timeout_seconds
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=tier.max_concurrency, max_keepalive_connections=tier.max_concurrency),
        )
        # The pool is the concurrency limit: at most max_concurrency requests in flight per runtime.
        self._pool = ThreadPoolExecutor(max_workers=max(tier.max_concurrency, 1), thread_name_prefix="sluicegate-http")
        self.breaker = CircuitBreaker(tier.circuit_breaker_failures, tier.circuit_breaker_cooldown_seconds,
                                      name=self.version)
        self._plain = False  # set once the endpoint rejected llama.cpp's extras
        self._sleep = sleep
        self._warned_no_logprobs = False

    def complete(self, prompts: list[str], *, max_tokens: int, top_logprobs: int = 0,
                 json_schema: dict | None = None, grammar: str | None = None) -> list[Completion]:
        if not prompts:
            return []
        if self._config_error:
            return [Completion("", [], 0, 0, error=self._config_error) for _ in prompts]
        # Each request runs in the caller's context (a copy each), so its log lines stay with the run.
        futures = [self._pool.submit(contextvars.copy_context().run, self._one, p, max_tokens, top_logprobs,
                                     json_schema, grammar) for p in prompts]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # -- one prompt --------------------------------------------------------------------------------

    def _one(self, prompt: str, max_tokens: int, top_logprobs: int, json_schema: dict | None,
             grammar: str | None) -> Completion:
        try:
            return self._with_retries(prompt, max_tokens, top_logprobs, json_schema, grammar)
        except Exception as e:  # noqa: BLE001 - never raise per prompt; the message is scrubbed
            # Not log.exception: the traceback's message could hold the key; it is scrubbed like the rest.
            log.error("%s: unexpected failure\n%s", self.version, self._scrub("".join(traceback.format_exception(e))))
            return Completion("", [], 0, 0, error=self._scrub(f"http runtime error: {type(e).__name__}: {e}"))

    def _body(self, prompt: str, max_tokens: int, top_logprobs: int, json_schema: dict | None,
              grammar: str | None, plain: bool) -> dict:
        body: dict = {"model": self._tier.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
        if top_logprobs:
            body["logprobs"] = min(top_logprobs, PLAIN_MAX_LOGPROBS) if plain else top_logprobs
        if not plain:  # llama.cpp server extras; others ignore them or answer 400
            if grammar is not None:
                body["grammar"] = grammar
            if json_schema is not None:
                body["json_schema"] = json_schema
            if not self._tier.reuse_prompt_cache:  # llama.cpp server reuses cached prefixes unless told not to
                body["cache_prompt"] = False
        return body

    def _with_retries(self, prompt: str, max_tokens: int, top_logprobs: int, json_schema: dict | None,
                      grammar: str | None) -> Completion:
        last = ""
        attempts = self._tier.max_retries + 1
        for attempt in range(attempts):
            if not self.breaker.allow():
                why = f" (last: {last})" if last else ""
                return Completion("", [], 0, 0, error=f"circuit open: {self._tier.circuit_breaker_failures} "
                                  f"failed requests in a row, failing fast{why}")
            plain = self._plain
            try:
                try:
                    completion = self._post(self._body(prompt, max_tokens, top_logprobs, json_schema, grammar, plain))
                except _Failure as f:
                    if not plain and f.status == 400 and (self._has_extras(top_logprobs, json_schema, grammar)
                                                          or not self._tier.reuse_prompt_cache):
                        # Maybe the endpoint does not take llama.cpp's extras: ask with standard fields only.
                        completion = self._post(self._body(prompt, max_tokens, top_logprobs, json_schema, grammar,
                                                           True))
                        if not self._plain:
                            log.warning("%s rejected grammar/json_schema/%d logprobs; sending standard fields only",
                                        self.version, top_logprobs)
                        self._plain = True
                    else:
                        raise
            except Exception as e:
                self.breaker.record(False)  # always recorded: a granted probe must not stay pending
                if not isinstance(e, _Failure):
                    raise
                f = e
                last = self._scrub(str(f))  # already scrubbed where built; this line goes to logs and rows
                if not f.retryable:
                    return Completion("", [], 0, 0, error=last)
                if attempt + 1 < attempts:
                    delay = self._backoff(attempt, f.retry_after)
                    log.info("%s: %s; retry %d/%d in %.1fs", self.version, last, attempt + 1, attempts - 1, delay)
                    self._sleep(delay)
                continue
            self.breaker.record(True)
            if top_logprobs and not completion.tokens and not self._warned_no_logprobs:
                self._warned_no_logprobs = True
                log.warning("%s returned no logprobs: its answers get no confidence (labels invalid, fields 0)",
                            self.version)
            return completion
        return Completion("", [], 0, 0, error=f"{last} (gave up after {attempts} attempts)")

    @staticmethod
    def _has_extras(top_logprobs: int, json_schema: dict | None, grammar: str | None) -> bool:
        return grammar is not None or json_schema is not None or top_logprobs > PLAIN_MAX_LOGPROBS

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential, with jitter (so many workers do not retry in step); at least Retry-After."""
        delay = min(_MAX_BACKOFF_SECONDS, self._tier.retry_backoff_seconds * 2 ** attempt)
        delay *= 0.5 + random.random() / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, _MAX_BACKOFF_SECONDS))
        return delay

    def _post(self, body: dict) -> Completion:
        timeout = self._tier.request_timeout_seconds
        try:
            response = self._client.post(self._url, json=body)
        except httpx.TimeoutException as e:
            raise _Failure(f"timeout after {timeout:g}s ({type(e).__name__})", True) from None
        except httpx.TransportError as e:
            raise _Failure(self._scrub(f"connection failed: {type(e).__name__}: {e}")[:300], True) from None
        except httpx.HTTPError as e:  # e.g. a malformed redirect; not worth retrying
            raise _Failure(self._scrub(f"request failed: {type(e).__name__}: {e}")[:300], False) from None
        status = response.status_code
        if status != 200:
            detail = self._scrub(_error_detail(response))[:200]  # scrubbed whole: a cut could split the key
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise _Failure(f"HTTP {status} from endpoint: {detail}", status == 429 or status >= 500, retry_after,
                           status)
        try:
            return parse_response(response.json())
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            snippet = self._scrub(response.text)[:120]
            raise _Failure(f"invalid response body ({type(e).__name__}): {snippet!r}", True) from None

    def _scrub(self, message: str) -> str:
        """The message without the API key in any form. Call it before cutting the message to length."""
        return scrub_secret(message, self._secret)


def _error_detail(response: httpx.Response) -> str:
    """The endpoint's error message, whole: the caller scrubs it, then cuts it."""
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)
    except ValueError:
        return response.text or response.reason_phrase


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff applies


def _logprob(value) -> float:
    """A log-probability, or -1e9 for anything that is not a finite number (some servers send null)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return -1e9
    return max(float(value), -1e9)


def parse_response(data: dict) -> Completion:
    """The first choice of a /v1/completions response, in llama.cpp's or OpenAI's logprobs layout.

    Raises ValueError (or TypeError/KeyError) on a body that is not a completion: the caller retries.
    Missing logprobs are not an error: the completion then has no tokens.
    """
    choices = data["choices"]
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices")
    choice = choices[0]
    text = choice.get("text")
    if not isinstance(text, str):
        raise ValueError("choice has no text")
    logprobs = choice.get("logprobs") or {}
    tokens: list[TokenLogprob] = []
    if isinstance(logprobs.get("content"), list):  # llama.cpp (and chat-style) layout
        for item in logprobs["content"]:
            top: dict[str, float] = {}
            for cand in item.get("top_logprobs") or []:
                token = str(cand.get("token", ""))
                top[token] = max(top.get(token, -1e9), _logprob(cand.get("logprob")))
            tokens.append(TokenLogprob(str(item.get("token", "")), _logprob(item.get("logprob")), top))
    elif isinstance(logprobs.get("tokens"), list):  # OpenAI legacy layout (vLLM, hosted APIs)
        lps = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or []
        for i, token in enumerate(logprobs["tokens"]):
            top_i = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            tokens.append(TokenLogprob(str(token), _logprob(lps[i] if i < len(lps) else None),
                                       {str(k): _logprob(v) for k, v in top_i.items()}))
    usage = data.get("usage") or {}
    return Completion(text=text, tokens=tokens, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=len(tokens) or int(usage.get("completion_tokens") or 0))
