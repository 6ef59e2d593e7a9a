from processors.models.weights import PACKAGED_MODELS, _sha256, model_path


def test_large_model_parts_assemble_to_the_verified_file():
    path = model_path("qwen2.5-coder-1.5b-instruct")
    expected = PACKAGED_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert path.stat().st_size == expected.size
    assert _sha256(path) == expected.sha256
