import json
import urllib.error
import urllib.request

import pytest

from processors.models.weights import PACKAGED_MODELS, model_path, model_version


def test_packaged_small_model_is_assembled_once_and_verified():
    path = model_path("gemma3-270m")
    assert path.stat().st_size == PACKAGED_MODELS["gemma3-270m"].size
    assert model_path("gemma3-270m") == path
    assert model_version("gemma3-270m", None) == "gemma3-270m@a5fd3b62230a"


def test_unknown_model_and_missing_file_are_clear_errors():
    with pytest.raises(KeyError, match="unknown model"):
        model_path("gpt-17")
    with pytest.raises(FileNotFoundError):
        model_path("/nonexistent/model.gguf")


def test_completion_batch_with_logprobs(small_runtime):
    prompts = ["The capital of France is", "One, two, three,"]
    out = small_runtime.complete(prompts, max_tokens=3, top_logprobs=5)
    assert len(out) == 2 and all(c.error is None for c in out)
    assert all(len(c.tokens) == 3 and len(c.tokens[0].top) == 5 for c in out)
    assert " four" in out[1].tokens[0].top or "four" in out[1].text
    assert all(-50 < t.logprob <= 0 for c in out for t in c.tokens)


def test_json_schema_constrains_output(small_runtime):
    schema = {"type": "object", "properties": {"city": {"type": ["string", "null"], "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    [c] = small_runtime.complete(["Ann lives in Paris. JSON:"], max_tokens=40, json_schema=schema)
    assert set(json.loads(c.text)) == {"city"}


def test_builtin_http_listener_refuses_requests_without_the_key(small_runtime):
    address = small_runtime._server.listening_address
    request = urllib.request.Request(f"{address}/v1/completions", data=b'{"prompt": "hi", "max_tokens": 1}',
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
