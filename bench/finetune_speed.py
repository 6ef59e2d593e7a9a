"""Training speed on the CPU: answer-only LM head (what train.py does) vs full-vocabulary logits (baseline).

    uv run python bench/finetune_speed.py [--steps 6] [--batch-size 8] [--threads 2]

Same pairs (bitext + VADER, built with the run-time prompts), same LoRA, same batches, in one run.
Prints seconds per step and per 100 examples, and peak RSS, for each way of computing the loss.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from processors.datasets import load_examples, sample
from processors.finetune.pairs import build_pairs, training_tasks
from processors.finetune.torch import load_torch_model
from processors.finetune.train import TrainOptions, _collate, add_lora, answer_loss, buckets, tokenize_pairs
from schemas.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def full_vocabulary_loss(model, input_ids, attention, target_mask, targets) -> torch.Tensor:
    """The baseline: logits at every position (262k-word vocabulary), loss still on answer tokens only."""
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    return torch.nn.functional.cross_entropy(logits[target_mask].float(), targets)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "fixtures" / "sluicegate.toml")
    examples = (sample(load_examples(DATA / "tickets/bitext/train.csv"), 60, stratify="intent")
                + sample(load_examples(DATA / "sentiment/vader/tweets.csv"), 30))
    tasks, _ = training_tasks(config, examples)
    pairs = build_pairs(config, tasks, examples)
    model, tokenizer = load_torch_model(config.small.model)
    peft_model = add_lora(model, TrainOptions())
    peft_model.train()
    tokenized = tokenize_pairs(tokenizer, pairs, 512)
    batches = buckets([len(ids) for ids, _ in tokenized], args.batch_size, 0)[: args.steps]
    mean_tokens = sum(len(tokenized[i][0]) for b in batches for i in b) / sum(len(b) for b in batches)
    print(f"{len(pairs)} pairs; {len(batches)} steps of {args.batch_size}; mean {mean_tokens:.0f} tokens per pair;"
          f" {args.threads} threads")
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    for name, loss_fn in (("baseline: full-vocabulary logits", full_vocabulary_loss),
                          ("answer positions only (train.py)", answer_loss)):
        started = time.perf_counter()
        for batch in batches:
            loss = loss_fn(peft_model, *_collate([tokenized[i] for i in batch], tokenizer.pad_token_id or 0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started
        n = sum(len(b) for b in batches)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        print(f"{name:36s} {seconds / len(batches):6.2f} s/step  {100 * seconds / n:6.1f} s per 100 examples"
              f"  peak RSS so far {peak:.1f} GB")


if __name__ == "__main__":
    main()
