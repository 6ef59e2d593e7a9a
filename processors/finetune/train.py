"""LoRA training of the small model on the CPU, made practical for 2 cores.

- Loss only on answer tokens, and the LM head (262k-token vocabulary) only at answer positions:
  the full-vocabulary logits at every prompt position would cost most of the step.
- Sequences are bucketed by length, so padding is small; batches are shuffled across buckets.
- A checkpoint (adapter weights, optimizer, step, batch order) is written atomically every N steps;
  a rerun with the same data and options resumes from it.
- Progress lines (steps, rate, ETA, loss) go to the `processors.progress` logger, so to the terminal and
  the Prefect run's logs; seconds per 100 examples is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from processors.finetune.pairs import Pair
from processors.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    epochs: float = 1.0  # passes over the pairs (fractions allowed)
    batch_size: int = 8
    learning_rate: float = 5e-4
    rank: int = 8  # LoRA rank: the adapter is a few MB
    alpha: float = 16.0
    # No dropout on the adapter's inputs: drawing the masks was a fifth of a training step on the CPU (torch
    # profiler, 8 short pairs), and one epoch over the pairs gives it little to regularize.
    dropout: float = 0.0
    # Attention and MLP projections of every layer (llama.cpp maps each to a GGUF tensor name).
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    max_length: int = 512  # tokens; longer pairs keep their answer and lose the middle of the prompt
    checkpoint_every: int = 50  # steps
    seed: int = 0
    threads: int = 0  # 0: torch's default (all cores)
    stop_after_steps: int | None = None  # stop this run early, checkpointed; rerun to resume
    # A GGUF LoRA adapter of the same rank and modules to start from (the promoted version's), so the
    # new adapter keeps what that one learned; None: from zero (the base model).
    start_from: str | None = None


@dataclass
class TrainReport:
    steps: int
    pairs: int
    seconds: float
    seconds_per_100_examples: float
    loss_first: float  # mean loss over the first 10% of steps
    loss_last: float  # mean loss over the last 10% of steps
    resumed_from_step: int = 0
    losses: list[float] = field(default_factory=list)


def tokenize_pairs(tokenizer, pairs: list[Pair], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, index where the answer starts) per pair.

    The answer is tokenized as a continuation of the prompt (prompt + answer together), which is
    how llama.cpp sees it when it scores or generates the answer one token after another.
    """
    out = []
    for pair in pairs:
        prompt_ids = tokenizer(pair.prompt).input_ids
        full = tokenizer(pair.prompt + pair.answer).input_ids
        start = len(prompt_ids)
        if full[:start] != prompt_ids:  # the join merged across the boundary: keep the answer's own tokens
            full = prompt_ids + tokenizer(pair.answer, add_special_tokens=False).input_ids
        if len(full) > max_length:  # keep BOS, the end of the prompt and the answer
            keep_tail = max_length - 1
            cut = len(full) - keep_tail
            full = full[:1] + full[1 + cut:]
            start = max(1, start - cut)
        out.append((full, start))
    return out


def buckets(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of indices with similar lengths, in a shuffled order (deterministic per seed)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def _collate(items: list[tuple[list[int], int]], pad_id: int):
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    # target_mask[b, t]: position t predicts an answer token (the token at t + 1)
    target_mask = torch.zeros((len(items), width), dtype=torch.bool)
    for b, (ids, start) in enumerate(items):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention[b, : len(ids)] = 1
        target_mask[b, start - 1 : len(ids) - 1] = True
    targets = torch.roll(input_ids, shifts=-1, dims=1)[target_mask]
    return input_ids, attention, target_mask, targets


def answer_loss(model, input_ids, attention, target_mask, targets) -> torch.Tensor:
    """Cross-entropy on answer tokens only; the LM head runs only at those positions."""
    hidden = model.base_model.model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state
    logits = model.base_model.model.lm_head(hidden[target_mask])
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def add_lora(model, options: TrainOptions):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _fingerprint(tokenized: list[tuple[list[int], int]], options: TrainOptions) -> str:
    # what changes the result; threads, checkpoints and early stops do not
    ignored = ("threads", "checkpoint_every", "stop_after_steps")
    relevant = {k: v for k, v in asdict(options).items() if k not in ignored}
    if options.start_from:  # the adapter's content, not where it lies: a replaced file is another start
        relevant["start_from"] = hashlib.sha256(Path(options.start_from).read_bytes()).hexdigest()
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    for ids, start in tokenized:
        digest.update(f"{start}:{','.join(map(str, ids))};".encode())
    return digest.hexdigest()[:16]


def train_lora(model, tokenizer, pairs: list[Pair], options: TrainOptions, workdir: Path,
               progress: bool = True):
    """Trains a LoRA adapter on the pairs; returns (peft model, TrainReport). Resumes from workdir.

    progress: log progress lines ('finetune training: 120/300 (40%) 0.4 steps/s, ETA 7m30s, loss 1.234')."""
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    tokenized = tokenize_pairs(tokenizer, pairs, options.max_length)
    batches = buckets([len(ids) for ids, _ in tokenized], options.batch_size, options.seed)
    total_steps = max(1, math.ceil(len(batches) * options.epochs))
    schedule = [batches[i % len(batches)] for i in range(total_steps)]
    peft_model = model if hasattr(model, "peft_config") else add_lora(model, options)
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=0.0)
    warmup = max(1, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / total_steps))
    fingerprint = _fingerprint(tokenized, options)
    checkpoint = workdir / "checkpoint.pt"
    finished = workdir / f"adapter-{fingerprint}.pt"
    start_step, losses = 0, []
    if finished.exists():  # the same data and options were trained to the end before: reuse
        state = _load_state(finished)
        _load_lora_state(peft_model, state["lora"])
        peft_model.eval()
        log.info("reusing the finished adapter %s", finished.name)
        return peft_model, TrainReport(**state["report"])
    if checkpoint.exists():
        state = _load_state(checkpoint)
        if state.get("fingerprint") == fingerprint:
            _load_lora_state(peft_model, state["lora"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_step, losses = state["step"], state["losses"]
            log.info("resuming training at step %d of %d", start_step, total_steps)
        else:
            log.info("checkpoint is for other data or options: starting over")
    if options.start_from and start_step == 0:
        from processors.finetune.export import load_gguf_lora

        log.info("starting from the adapter %s (%d tensors)", options.start_from,
                 load_gguf_lora(peft_model, Path(options.start_from)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    started = time.perf_counter()
    line = Progress("finetune training", total_steps, unit="steps", done=start_step, enabled=progress)
    line.start()
    stop = total_steps if options.stop_after_steps is None else min(total_steps, start_step + options.stop_after_steps)
    for step in range(start_step, stop):
        batch = _collate([tokenized[i] for i in schedule[step]], pad_id)
        loss = answer_loss(peft_model, *batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        line.advance(1, _recent_loss(losses))
        if step + 1 < total_steps and (step + 1 == stop or (
                options.checkpoint_every and (step + 1) % options.checkpoint_every == 0)):
            _save_checkpoint(checkpoint, peft_model, optimizer, scheduler, step + 1, losses, fingerprint)
    line.finish(_recent_loss(losses))  # stopped early (stop_after_steps): the last step's count
    seconds = time.perf_counter() - started
    peft_model.eval()
    n_done = sum(len(schedule[s]) for s in range(start_step, stop))
    tenth = max(1, len(losses) // 10)
    report = TrainReport(
        steps=stop, pairs=len(pairs), seconds=seconds,
        seconds_per_100_examples=100 * seconds / max(n_done, 1),
        loss_first=sum(losses[:tenth]) / tenth, loss_last=sum(losses[-tenth:]) / tenth,
        resumed_from_step=start_step, losses=losses,
    )
    if stop < total_steps:
        return peft_model, report  # stopped early: the checkpoint holds the state
    tmp = finished.with_name(finished.name + ".partial")
    torch.save({"lora": lora_state(peft_model), "report": asdict(report)}, tmp)
    os.replace(tmp, finished)
    checkpoint.unlink(missing_ok=True)  # finished: the adapter is the result
    return peft_model, report


def _recent_loss(losses: list[float]) -> str:
    """The progress line's loss: the mean of the last 20 steps (one step's loss is noisy)."""
    return f"loss {sum(losses[-20:]) / len(losses[-20:]):.3f}" if losses else ""


def lora_state(peft_model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in peft_model.state_dict().items() if "lora_" in k}


def _load_lora_state(peft_model, state: dict[str, torch.Tensor]) -> None:
    missing = peft_model.load_state_dict(state, strict=False)
    if any("lora_" in k for k in missing.missing_keys):
        raise ValueError("checkpoint does not match the adapter's layout")


def _load_state(path: Path) -> dict:
    # weights_only: tensors and plain containers only, so a planted or corrupted .pt file cannot run
    # code; everything _save_checkpoint and the finished adapter hold is of those types.
    return torch.load(path, weights_only=True)


def _save_checkpoint(path: Path, peft_model, optimizer, scheduler, step: int, losses: list[float],
                     fingerprint: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"lora": lora_state(peft_model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
                "fingerprint": fingerprint}, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def mean_answer_loss(peft_model, tokenizer, pairs: list[Pair], batch_size: int = 8, max_length: int = 512) -> float:
    """Mean answer-token loss over pairs (for before/after comparisons)."""
    tokenized = tokenize_pairs(tokenizer, pairs, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for batch in buckets([len(ids) for ids, _ in tokenized], batch_size, 0):
        inputs = _collate([tokenized[i] for i in batch], pad_id)
        n = int(inputs[3].numel())
        total += float(answer_loss(peft_model, *inputs)) * n
        count += n
    return total / max(count, 1)
