"""Writes a PEFT LoRA adapter in llama.cpp's GGUF LoRA format, and checks llama.cpp agrees with PyTorch.

The `gguf` package alone is enough: general.type = adapter, adapter.type = lora, adapter.lora.alpha,
and per adapted weight two f32 tensors `blk.N.<name>.weight.lora_a` / `.lora_b`, PEFT's arrays as they
are (lora_A is rank x in, lora_B is out x rank). llama.cpp applies scale * alpha / rank * B @ A.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

# PEFT module name -> llama.cpp tensor name (per block)
GGUF_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$")


def export_gguf_lora(peft_model, path: Path, architecture: str = "gemma3") -> int:
    """Writes the adapter; returns the number of tensors written."""
    import gguf
    import numpy as np

    config = peft_model.peft_config["default"]
    tensors: list[tuple[str, np.ndarray]] = []
    for key, value in peft_model.state_dict().items():
        match = _KEY.search(key)
        if not match:
            continue
        layer, module, which = match.groups()
        if module not in GGUF_NAMES:
            raise ValueError(f"no llama.cpp name for LoRA module {module}")
        name = f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_{which.lower()}"
        tensors.append((name, value.detach().float().contiguous().numpy()))
    if not tensors:
        raise ValueError("the model has no LoRA weights to export")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), arch=architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.lora_alpha))
    for name, array in sorted(tensors):
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return len(tensors)


def compare_runtimes(torch_top: list[dict[str, float]], llama_top: list[dict[str, float]]) -> dict[str, float]:
    """Top-1 agreement and the largest probability difference on shared top-k tokens."""
    from processors.finetune.torch import agreement

    return agreement(torch_top, llama_top)


def llama_top(runtime, prompts: list[str], k: int = 10) -> list[dict[str, float]]:
    """Next-token top-k probabilities from a llama.cpp runtime (with or without an adapter)."""
    out = []
    for completion in runtime.complete(prompts, max_tokens=1, top_logprobs=k):
        out.append({t: math.exp(lp) for t, lp in completion.tokens[0].top.items()} if completion.tokens else {})
    return out
