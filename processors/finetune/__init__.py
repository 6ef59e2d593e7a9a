"""Fine-tuning the small tier: a LoRA adapter for Gemma 3 270M trained on the CPU, exported for llama.cpp.

torch.py     loads the PyPI GGUF into PyTorch (dequantized) and checks it agrees with llama.cpp
pairs.py     turns labelled examples into (prompt, answer) pairs built with the run-time prompt builders
train.py     LoRA training: loss on answer tokens only, LM head only at answer positions, resumable
export.py    writes the adapter in llama.cpp's GGUF LoRA format and checks llama.cpp agrees with PyTorch
"""

import importlib.util

# Only fine-tuning needs these; the nightly job, evaluate and serve run without them (pyproject's extra).
TRAINING_PACKAGES = ("torch", "transformers", "peft", "gguf", "safetensors")
INSTALL_HINT = (
    "fine-tuning needs the 'finetune' extra and the CPU build of PyTorch: "
    "uv sync --frozen --extra finetune && uv pip install 'torch==2.13.*' --index-url https://download.pytorch.org/whl/cpu"
)


def require_training_stack() -> None:
    """Raises one clear error naming what to install when a training package is missing."""
    missing = [name for name in TRAINING_PACKAGES if not _installed(name)]
    if missing:
        raise ImportError(f"{', '.join(missing)} not installed: {INSTALL_HINT}")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses the name: as good as not installed
        return False
