"""Fine-tuning the small tier: a LoRA adapter for Gemma 3 270M trained on the CPU, exported for llama.cpp.

torch.py     loads the PyPI GGUF into PyTorch (dequantized) and checks it agrees with llama.cpp
pairs.py     turns labelled examples into (prompt, answer) pairs built with the run-time prompt builders
train.py     LoRA training: loss on answer tokens only, LM head only at answer positions, resumable
export.py    writes the adapter in llama.cpp's GGUF LoRA format and checks llama.cpp agrees with PyTorch
"""
