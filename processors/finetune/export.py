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


def _gguf_name(key: str) -> str | None:
    """llama.cpp's tensor name for a PEFT LoRA state-dict key; None for keys that are no LoRA weight."""
    match = _KEY.search(key)
    if not match:
        return None
    layer, module, which = match.groups()
    if module not in GGUF_NAMES:
        raise ValueError(f"no llama.cpp name for LoRA module {module}")
    return f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_{which.lower()}"


def _alpha(reader) -> float | None:
    import gguf

    found = reader.fields.get(gguf.Keys.Adapter.LORA_ALPHA)
    return float(found.parts[found.data[0]][0]) if found else None


def export_gguf_lora(peft_model, path: Path, architecture: str = "gemma3") -> int:
    """Writes the adapter; returns the number of tensors written."""
    import gguf
    import numpy as np

    config = peft_model.peft_config["default"]
    tensors: list[tuple[str, np.ndarray]] = []
    for key, value in peft_model.state_dict().items():
        name = _gguf_name(key)
        if name is None:
            continue
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


def describe_gguf_lora(path: Path) -> tuple[float | None, int | None, set[str]]:
    """(alpha, rank, PEFT module names) of an adapter export_gguf_lora wrote; from its header only."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    alpha = _alpha(reader)
    peft_names = {name: module for module, name in GGUF_NAMES.items()}
    ranks = {int(t.data.shape[0]) for t in reader.tensors if t.name.endswith(".lora_a")}
    modules = {peft_names.get(t.name.split(".")[2], t.name.split(".")[2]) for t in reader.tensors}
    return alpha, (ranks.pop() if len(ranks) == 1 else None), modules


def load_gguf_lora(peft_model, path: Path) -> int:
    """Loads an adapter that export_gguf_lora wrote into a PEFT model, so training starts from it (a new
    version from the promoted one's adapter). Returns the number of tensors loaded. Raises ValueError when
    the adapter does not fit the model: another rank, alpha or set of adapted modules."""
    import gguf
    import numpy as np
    import torch

    reader = gguf.GGUFReader(str(path))
    alpha = _alpha(reader)
    wanted = float(peft_model.peft_config["default"].lora_alpha)
    if alpha != wanted:
        raise ValueError(f"{path}: LoRA alpha {alpha} is not the model's {wanted}")
    stored = {t.name: t.data for t in reader.tensors}
    state = {}
    for key, value in peft_model.state_dict().items():
        name = _gguf_name(key)
        if name is None:
            continue
        array = stored.pop(name, None)
        if array is None:
            raise ValueError(f"{path}: no tensor {name} for the model's {key}")
        if array.dtype != np.float32:  # what export_gguf_lora writes; a converted f16 adapter is not
            raise ValueError(f"{path}: {name} is {array.dtype}, not float32")
        if tuple(array.shape) != tuple(value.shape):
            raise ValueError(f"{path}: {name} has shape {tuple(array.shape)}, the model's {tuple(value.shape)} "
                             "(another LoRA rank)")
        state[key] = torch.from_numpy(array.copy()).to(value.dtype)
    if stored:
        raise ValueError(f"{path}: {len(stored)} tensors adapt modules the model does not (e.g. {min(stored)})")
    missing = peft_model.load_state_dict(state, strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"{path}: unexpected keys {missing.unexpected_keys[:3]}")
    return len(state)


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
