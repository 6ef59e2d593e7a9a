"""The HTTP runtime against a real OpenAI-compatible llama.cpp server on 127.0.0.1 (xllamacpp's listener,
serving the small Gemma model with a known key), and, for faults the real server cannot produce on
demand, against a small local fake endpoint (tests named test_fake_endpoint_*)."""

from __future__ import annotations

import json
import logging
import math
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from processors import privacy
from processors.ingest import ingest
from processors.models import load_runtime, tier_version
from processors.models.http import CircuitBreaker, HttpRuntime, parse_response
from processors.tasks import extract, label
from processors.tiers import LoadedTier, predict
from schemas.config import Config, FieldSpec, LabelTask, TierModel
from schemas.records import Document
from tests.conftest import FIXTURE_DATE, FIXTURES, free_port
from tests.grammar import gbnf_literal

KEY = "sg-test-" + secrets.token_urlsafe(12)
KEY_ENV = "SLUICEGATE_TEST_HTTP_KEY"
TICKETS = FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl"


def start_llama_server(api_key: str, port: int = 0, parallel: int = 4):
    """A real llama.cpp OpenAI-compatible server (xllamacpp) serving Gemma 3 270M on 127.0.0.1."""
    import xllamacpp

    from processors.models.weights import model_path

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path("gemma3-270m"))
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.n_parallel = parallel
    params.n_ctx = 1536 * parallel
    params.swa_full = True
    params.verbosity = 0
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.api_keys = [api_key]
    return xllamacpp.Server(params)


def http_tier(endpoint: str, **kw) -> TierModel:
    options = dict(runtime="http", model="gemma3-270m", endpoint=endpoint, api_key_env=KEY_ENV,
                   max_retries=2, retry_backoff_seconds=0.01, request_timeout_seconds=120.0)
    options.update(kw)
    return TierModel(**options)


# -- a fake endpoint, only for faults -------------------------------------------------------------

def completion_body(text: str, top: dict[str, float] | None = None, layout: str = "llamacpp") -> dict:
    """A /v1/completions response with one generated token (and its top candidates)."""
    top = top if top is not None else {text: -0.1}
    if layout == "openai":
        logprobs = {"tokens": [text], "token_logprobs": [max(top.values())], "top_logprobs": [top],
                    "text_offset": [0]}
    elif layout == "none":
        logprobs = None
    else:
        logprobs = {"content": [{"token": text, "logprob": top.get(text, -0.1),
                                 "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}]}
    return {"choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1}}


class FakeEndpoint:
    """http.server in a thread. `behave(n, body)` gives the n-th request's answer:
    (status, dict | bytes[, headers]) or "drop" (close the connection without an answer, as a dying server)
    or ("sleep", seconds, answer)."""

    def __init__(self, behave, host: str = "127.0.0.1"):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.behave = behave
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.bodies.append(json.loads(raw or b"{}"))
                fake.headers.append(dict(self.headers))
                answer = fake.behave(len(fake.bodies) - 1, fake.bodies[-1])
                if answer == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if answer[0] == "sleep":
                    time.sleep(answer[1])
                    answer = answer[2]
                status, payload, *headers = answer
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers[0] if headers else {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    started = []

    def make(behave, host: str = "127.0.0.1") -> FakeEndpoint:
        started.append(FakeEndpoint(behave, host))
        return started[-1]

    yield make
    for f in started:
        f.close()


OK = (200, completion_body(" positive", {" positive": -0.2, " negative": -2.0, " neutral": -3.0}))


# -- the real server ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    server = start_llama_server(KEY)
    yield server.listening_address
    del server


@pytest.fixture(scope="module")
def http_runtime(server):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        runtime = load_runtime(http_tier(server, max_concurrency=4))
        yield runtime
        runtime.close()


def _tickets(n: int, config: Config) -> list[Document]:
    records = ingest(str(TICKETS), "tickets", TICKETS.read_bytes(), config)
    return [r for r in records if isinstance(r, Document)][:n]


def test_cache_prompt_false_is_sent_only_when_reuse_is_off():
    default, history_free = (load_runtime(http_tier("http://127.0.0.1:9/v1", reuse_prompt_cache=reuse))
                             for reuse in (True, False))
    try:
        assert "cache_prompt" not in default._body("x", 1, 5, None, None, plain=False)
        assert history_free._body("x", 1, 5, None, None, plain=False)["cache_prompt"] is False
        assert "cache_prompt" not in history_free._body("x", 1, 5, None, None, plain=True)  # standard fields only
    finally:
        default.close()
        history_free.close()


def test_version_names_host_and_model_never_credentials():
    tier = http_tier("https://user:pw@api.example.com:8443/v1/", model="big-model")
    assert tier_version(tier) == "http:api.example.com:8443/big-model"


def test_labels_and_fields_over_http_match_in_process(config, server):
    """The same model behind the HTTP runtime and in-process gives the same answers.

    The HTTP side runs with reuse_prompt_cache = false (with reuse, a 3-way sentiment distribution of the
    base model moved by up to 0.4 with what the server served before: CI, 2026-11-23); in-process, each
    document is its own sequence, reusing its own prefix. Both are history-free but computed a little
    differently, so every label probability is compared with a tolerance of 0.05 (a wrong prompt or label
    mapping moves them far more), and labels where the model is not at a near tie."""
    docs_local = [_tickets(7, config)[i] for i in (2, 6)]  # T-1003 (annoyed, refund), T-1007 (late order)
    docs_http = [_tickets(7, config)[i] for i in (2, 6)]
    local_tier = config.small
    local_runtime = load_runtime(local_tier)
    try:
        predict(docs_local, LoadedTier(local_runtime), local_tier, config, "small")
    finally:
        local_runtime.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        remote_tier = http_tier(server, max_concurrency=4).model_copy(update={"reuse_prompt_cache": False})
        http_runtime = load_runtime(remote_tier)
        try:
            tier = config.small.model_copy(update=dict(runtime="http", endpoint="unused", mask_pii=False,
                                                       reuse_prompt_cache=False))
            predict(docs_http, LoadedTier(http_runtime), tier, config, "small")
        finally:
            http_runtime.close()
    for local, remote in zip(docs_local, docs_http, strict=True):
        assert set(local.labels) == set(remote.labels) == {"category", "sentiment"}
        for task, pred in local.labels.items():
            got = remote.labels[task]
            assert got.valid and got.probabilities.keys() == pred.probabilities.keys()
            for option, p in pred.probabilities.items():
                assert got.probabilities[option] == pytest.approx(p, abs=0.05), (local.uri, task, option)
            first, second = sorted(pred.probabilities.values(), reverse=True)[:2]
            if first - second > 0.05:
                assert got.label == pred.label, (local.uri, task)
        assert {k: f.value for k, f in remote.fields.items()} == {k: f.value for k, f in local.fields.items()}
        for name, field in local.fields.items():
            assert remote.fields[name].confidence == pytest.approx(field.confidence, abs=0.1), (local.uri, name)
        assert remote.model_versions["small"].startswith("http:127.0.0.1:")
        assert remote.usage["small"].prompt_tokens > 0


def test_wrong_key_is_a_clear_401_without_the_key(server, monkeypatch, caplog):
    wrong = "sg-wrong-" + secrets.token_urlsafe(12)
    monkeypatch.setenv(KEY_ENV, wrong)
    runtime = HttpRuntime(http_tier(server))
    with caplog.at_level(logging.DEBUG):
        [c] = runtime.complete(["Hello"], max_tokens=1, top_logprobs=3)
    runtime.close()
    assert c.error.startswith("HTTP 401") and "Invalid API Key" in c.error
    assert wrong not in c.error and wrong not in caplog.text and KEY not in caplog.text
    assert runtime.breaker.allow()  # one failure does not open the circuit


def test_missing_key_env_is_an_error_per_prompt(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    runtime = HttpRuntime(http_tier(server))
    out = runtime.complete(["a", "b"], max_tokens=1)
    assert [c.error for c in out] == [f"API key missing: environment variable {KEY_ENV} is not set"] * 2


def test_masked_text_leaves_the_machine_and_values_come_back_real(http_runtime, server):
    """With mask_pii, the prompts the real server gets hold placeholders, and a placeholder the model
    writes comes back as the real value, with its span in the real text."""
    sent: list[str] = []

    class Recording:  # wraps the real runtime, only to see the prompts
        version = http_runtime.version

        def complete(self, prompts, **kw):
            sent.extend(prompts)
            return http_runtime.complete(prompts, **kw)

    email, phone = "maria.lopez@example.com", "+34 612 345 678"
    doc = Document(doc_id="d1", source="tickets", uri="mem#1",
                   text=f"Subject: change my contact\n\nPlease send the invoice to {email} from now on. "
                        f"My phone is {phone}.")
    spec = FieldSpec(name="email", type="email", description="the email address")
    config = Config(tasks=[LabelTask(name="sentiment", labels=["negative", "neutral", "positive"])],
                    fields={"tickets": [spec]})
    tier = http_tier(server)
    assert tier.mask_pii
    predict([doc], LoadedTier(Recording()), tier, config, "small")
    assert sent and all(email not in p and phone not in p for p in sent)
    with_doc = [p for p in sent if "Please send" in p]  # the others are content-free calibration prompts
    assert with_doc and all("[EMAIL_1]" in p and "[PHONE_1]" in p for p in with_doc)
    assert doc.labels["sentiment"].label in {"negative", "neutral", "positive"}
    # the grounded email is scored over null and its placeholder: a value that lands is the real one
    assert doc.fields["email"].value in (None, email)

    # Gemma 270M (base) does not copy placeholders on its own (it invents "email@example.com"), so the
    # restore path is checked with the value pinned by a grammar: real tokens, real log-probabilities.
    masked, masks = privacy.mask(doc.text)
    prompt = extract.build_prompt([spec], spec, "base", "tickets", masked)
    pinned = 'root ::= " "? value end?\nend ::= "," | "}"\nvalue ::= ' + gbnf_literal('"[EMAIL_1]"')
    [completion] = http_runtime.complete([prompt], max_tokens=12, top_logprobs=10, grammar=pinned)
    assert "[EMAIL_1]" in completion.text and len(completion.tokens) > 1
    field = extract.parse(privacy.unmask_completion(completion, masks), spec, doc, "large")
    assert field.value == email and field.valid and field.confidence > 0, field
    assert doc.text[field.span_start:field.span_end] == email


def test_connection_refused_is_retried_then_an_error(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    runtime = HttpRuntime(http_tier(f"http://127.0.0.1:{free_port()}", max_retries=2,
                                    circuit_breaker_failures=100))
    out = runtime.complete(["a", "b"], max_tokens=1)
    runtime.close()
    assert all(c.error.startswith("connection failed: ConnectError") and "after 3 attempts" in c.error for c in out)


# -- faults from a fake endpoint ------------------------------------------------------------------

def test_fake_endpoint_5xx_then_success_is_retried(fake):
    endpoint = fake(lambda n, body: [(500, {"error": {"message": "boom"}}), (503, b"busy"), OK][min(n, 2)])
    runtime = HttpRuntime(http_tier(endpoint.url))
    [c] = runtime.complete(["x"], max_tokens=1, top_logprobs=3)
    assert c.error is None and c.text == " positive" and len(endpoint.bodies) == 3
    assert endpoint.headers[0]["Authorization"] == f"Bearer {KEY}"
    body = endpoint.bodies[0]
    assert body["temperature"] == 0 and body["logprobs"] == 3 and body["model"] == "gemma3-270m"


def test_fake_endpoint_429_waits_at_least_retry_after(fake):
    endpoint = fake(lambda n, body: (429, {"error": "slow down"}, {"Retry-After": "3"}) if n == 0 else OK)
    waits: list[float] = []
    runtime = HttpRuntime(http_tier(endpoint.url), sleep=waits.append)
    [c] = runtime.complete(["x"], max_tokens=1)
    assert c.error is None and waits == [3.0]


def test_fake_endpoint_backoff_grows_exponentially_with_jitter(fake):
    endpoint = fake(lambda n, body: (502, b"bad gateway"))
    waits: list[float] = []
    runtime = HttpRuntime(http_tier(endpoint.url, max_retries=4, retry_backoff_seconds=1.0,
                                    circuit_breaker_failures=100), sleep=waits.append)
    [c] = runtime.complete(["x"], max_tokens=1)
    assert c.error.startswith("HTTP 502") and "after 5 attempts" in c.error and len(endpoint.bodies) == 5
    assert [0.5 * 2**i <= w <= 2**i for i, w in enumerate(waits)] == [True] * 4


@pytest.mark.parametrize("garbage", [b"<html>502 from a proxy</html>", b'{"choices": "none"}', b"{}",
                                     b'{"choices": [{"text": null}]}', b'{"choices": [{"text": "a", '])
def test_fake_endpoint_garbage_bodies_are_retried_then_an_error(fake, garbage):
    endpoint = fake(lambda n, body: (200, garbage))
    runtime = HttpRuntime(http_tier(endpoint.url, max_retries=1))
    [c] = runtime.complete(["x"], max_tokens=1)
    assert c.error.startswith("invalid response body") and len(endpoint.bodies) == 2


def test_fake_endpoint_timeout_is_an_error(fake):
    endpoint = fake(lambda n, body: ("sleep", 1.0, OK))
    runtime = HttpRuntime(http_tier(endpoint.url, request_timeout_seconds=0.2, max_retries=1))
    [c] = runtime.complete(["x"], max_tokens=1)
    assert c.error.startswith("timeout after 0.2s") and len(endpoint.bodies) == 2


def test_fake_endpoint_dies_mid_batch(fake):
    endpoint = fake(lambda n, body: OK if n < 2 else "drop")
    runtime = HttpRuntime(http_tier(endpoint.url, max_concurrency=1, max_retries=1))
    out = runtime.complete([f"p{i}" for i in range(5)], max_tokens=1)
    assert [c.error is None for c in out] == [True, True, False, False, False]
    assert all(c.error.startswith(("connection failed: RemoteProtocolError", "circuit open")) for c in out[2:])


def test_fake_endpoint_circuit_breaker_opens_then_lets_a_probe_through(fake):
    state = {"up": False}
    endpoint = fake(lambda n, body: OK if state["up"] else (500, b"down"))
    runtime = HttpRuntime(http_tier(endpoint.url, max_concurrency=1, max_retries=0, circuit_breaker_failures=3,
                                    circuit_breaker_cooldown_seconds=0.3))
    out = runtime.complete([f"p{i}" for i in range(6)], max_tokens=1)
    assert len(endpoint.bodies) == 3  # then it failed fast, without calling the endpoint
    assert all(c.error.startswith("circuit open") for c in out[3:]) and runtime.breaker.is_open
    state["up"] = True
    time.sleep(0.4)  # the cool-down passes
    out = runtime.complete(["again", "and again"], max_tokens=1)
    assert [c.error for c in out] == [None, None] and not runtime.breaker.is_open


def test_circuit_breaker_states():
    now = [0.0]
    breaker = CircuitBreaker(2, 10.0, clock=lambda: now[0])
    breaker.record(False)
    assert breaker.allow()
    breaker.record(False)
    assert not breaker.allow() and breaker.is_open
    now[0] = 10.5
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record(False)  # the probe failed: open again
    assert not breaker.allow()
    now[0] = 21.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.allow() and breaker.allow() and not breaker.is_open


def test_fake_endpoint_without_llamacpp_extras_gets_standard_fields(fake):
    """An endpoint that rejects grammar / many logprobs (HTTP 400) is asked again with standard fields."""
    def strict(n, body):
        if "grammar" in body or "json_schema" in body or body.get("logprobs", 0) > 5:
            return 400, {"error": {"message": "unknown parameter"}}
        return OK
    endpoint = fake(strict)
    runtime = HttpRuntime(http_tier(endpoint.url))
    [c] = runtime.complete(["x"], max_tokens=5, top_logprobs=40, grammar="start: x")
    assert c.error is None and endpoint.bodies[-1]["logprobs"] == 5 and "grammar" not in endpoint.bodies[-1]
    runtime.complete(["y"], max_tokens=5, top_logprobs=40, grammar="start: x")
    assert len(endpoint.bodies) == 3  # from then on, standard fields at once


def test_fake_endpoint_openai_logprobs_layout_scores_labels(fake):
    top = {" negative": math.log(0.7), " positive": math.log(0.2), " neutral": math.log(0.1)}
    endpoint = fake(lambda n, body: (200, completion_body(" negative", top, layout="openai")))
    runtime = HttpRuntime(http_tier(endpoint.url))
    task = LabelTask(name="sentiment", labels=["negative", "neutral", "positive"])
    [scores] = label.score_labels(runtime, ["Ticket: awful. Answer:"], label.targets_for(task, "base"), 5)
    assert scores.error is None and scores.probabilities["negative"] == pytest.approx(0.7)


def test_fake_endpoint_without_logprobs_gives_an_invalid_label_not_a_crash(fake):
    endpoint = fake(lambda n, body: (200, completion_body(" negative", layout="none")))
    runtime = HttpRuntime(http_tier(endpoint.url))
    task = LabelTask(name="sentiment", labels=["negative", "neutral", "positive"])
    [scores] = label.score_labels(runtime, ["Ticket: awful. Answer:"], label.targets_for(task, "base"), 5)
    pred = label.to_prediction(task, scores, None, "large")
    assert not pred.valid and pred.label is None and pred.confidence == 0.0


def test_parse_response_reads_both_layouts_and_rejects_non_completions():
    c = parse_response(completion_body(" a", {" a": -0.5, " b": None}))
    assert c.text == " a" and c.tokens[0].top == {" a": -0.5, " b": -1e9} and c.prompt_tokens == 7
    for bad in ({}, {"choices": []}, {"choices": [{"text": 3}]}):
        with pytest.raises((ValueError, KeyError, TypeError)):
            parse_response(bad)



# -- the key never leaks, in any form ---------------------------------------------------------------

def leaked(text: str | None, key: str) -> list[str]:
    """Every 8-character piece of the key (stripped) found in `text`: a whole, escaped or cut-off key shows
    at least one."""
    key = key.strip()
    return sorted({key[i:i + 8] for i in range(len(key) - 7) if key[i:i + 8] in (text or "")})


def test_fake_endpoint_key_with_a_trailing_newline_is_sent_stripped_and_never_shown(fake, monkeypatch, caplog):
    """A key file's trailing newline made httpx fail with `Illegal header value b'Bearer sk-...\\n'`; the
    escaped key got past the scrubber into the error (escalation_reasons) and the retry log lines."""
    monkeypatch.setenv(KEY_ENV, KEY + "\n")
    endpoint = fake(lambda n, body: OK)
    with caplog.at_level(logging.DEBUG):
        runtime = HttpRuntime(http_tier(endpoint.url))
        [c] = runtime.complete(["x"], max_tokens=1, top_logprobs=3)
        runtime.close()
    assert not leaked(c.error, KEY) and not leaked(caplog.text, KEY), (c.error, leaked(caplog.text, KEY))
    assert c.error is None and endpoint.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert f"API key in {KEY_ENV} has surrounding whitespace" in caplog.text


def test_fake_endpoint_key_with_a_line_break_inside_is_a_config_error_without_the_key(fake, monkeypatch, caplog):
    broken = KEY[:12] + "\n" + KEY[12:]
    monkeypatch.setenv(KEY_ENV, broken)
    endpoint = fake(lambda n, body: OK)
    with caplog.at_level(logging.DEBUG):
        runtime = HttpRuntime(http_tier(endpoint.url))
        [c] = runtime.complete(["x"], max_tokens=1)
        runtime.close()
    for piece in (broken, KEY[12:]):
        assert not leaked(c.error, piece) and not leaked(caplog.text, piece), c.error
    assert c.error.startswith(f"API key in environment variable {KEY_ENV} has characters an HTTP header cannot")
    assert endpoint.bodies == []  # never sent


@pytest.mark.parametrize("answer", [
    (500, {"error": {"message": "x" * 175 + f" invalid key {KEY} for this model"}}),  # cut at 200 mid-key
    (200, b"<html>" + b"x" * 100 + KEY.encode() + b"</html>"),  # garbage body, cut at 120 mid-key
], ids=["error_detail", "garbage_body"])
def test_fake_endpoint_echoing_the_key_is_scrubbed_before_the_message_is_cut(fake, caplog, answer):
    endpoint = fake(lambda n, body: answer)
    with caplog.at_level(logging.DEBUG):
        runtime = HttpRuntime(http_tier(endpoint.url, max_retries=1))
        [c] = runtime.complete(["x"], max_tokens=1)
        runtime.close()
    assert not leaked(c.error, KEY) and not leaked(caplog.text, KEY), (c.error, leaked(caplog.text, KEY))
    assert "***" in c.error and "retry 1/1" in caplog.text  # scrubbed, and the retry line was logged


def test_unexpected_failure_logs_a_scrubbed_traceback(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    runtime = HttpRuntime(http_tier(f"http://127.0.0.1:{free_port()}"))

    def broken_post(*args, **kwargs):
        raise RuntimeError(f"client state corrupted near Bearer {KEY}")

    monkeypatch.setattr(runtime._client, "post", broken_post)
    with caplog.at_level(logging.DEBUG):
        [c] = runtime.complete(["x"], max_tokens=1)
    runtime.close()
    assert c.error.startswith("http runtime error: RuntimeError") and "Traceback" in caplog.text
    assert not leaked(c.error, KEY) and not leaked(caplog.text, KEY)


# -- no key in clear text over the network ----------------------------------------------------------

def non_loopback_address() -> str:
    """This machine's address on its default route (no packet is sent), or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address on this machine")
    return address


def test_fake_endpoint_plain_http_off_loopback_gets_no_key_unless_allow_insecure(fake, monkeypatch, caplog):
    monkeypatch.setenv("NO_PROXY", "*")  # the request must go straight to the fake endpoint
    address = non_loopback_address()
    endpoint = fake(lambda n, body: OK, host=address)
    # Refused when the configuration is loaded ...
    with pytest.raises(ValidationError, match=f"refusing to send the API key in clear text to {address}"):
        http_tier(endpoint.url)
    with pytest.raises(ValidationError, match="allow_insecure"):
        TierModel(runtime="http", model="m", endpoint=endpoint.url, api_key_secret="large-key")
    # ... and by the runtime, for a tier that skipped validation (model_copy): nothing is sent.
    with caplog.at_level(logging.DEBUG):
        runtime = HttpRuntime(http_tier("http://127.0.0.1:9").model_copy(update={"endpoint": endpoint.url}))
        [c] = runtime.complete(["x"], max_tokens=1)
        runtime.close()
    assert c.error.startswith(f"refusing to send the API key in clear text to {address}") and endpoint.bodies == []
    assert not leaked(c.error, KEY) and not leaked(caplog.text, KEY)
    # Without a key there is nothing to protect; with allow_insecure the operator accepted the risk.
    for tier in (http_tier(endpoint.url, api_key_env=None), http_tier(endpoint.url, allow_insecure=True)):
        runtime = HttpRuntime(tier)
        [c] = runtime.complete(["x"], max_tokens=1)
        runtime.close()
        assert c.error is None
    assert "Authorization" not in endpoint.headers[0] and endpoint.headers[1]["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("endpoint", ["https://api.example.com/v1", "http://127.0.0.1:8080", "http://127.8.9.10",
                                      "http://localhost:8080/v1", "http://[::1]:8080"])
def test_https_and_loopback_endpoints_take_a_key(endpoint):
    assert http_tier(endpoint).api_key_env == KEY_ENV
    assert TierModel(runtime="http", model="m", endpoint=endpoint, api_key_secret="large-key").api_key_secret
