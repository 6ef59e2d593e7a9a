"""Fine-tuning a many-label task on the CPU: prompts with the option list (the baseline) against none (how a new
task is learned, `processors/finetune/pairs.py: build_pairs`).

    uv run python bench/finetune_labels.py [--examples 1000] [--labels 77] [--baseline-steps 12] [--eval 200]

Data: bitext training tickets with a 77-label task made for this bench, intent x register (bitext's tags Q,
colloquial, and Z, typos: "slang_typo_cancel_order"), the 77 most frequent combinations; --examples sampled with
the data's class priors. Held out: bitext validation tickets with the same labels (no text is in both files).
Each layout trains in a fresh process (its own peak RSS) through the real code path: load_examples ->
training_tasks -> build_pairs -> add_lora -> train_lora (one epoch, batches of 8, 2 threads).
- No option list: the whole run; the adapter is exported to GGUF and scored with llama.cpp on the held-out tickets
  (accuracy / macro-F1 over exactly the 77 labels, as the small tier scores them), next to tier 0 (TF-IDF) on the
  same split.
- Option list: its first --baseline-steps steps of the same shuffled schedule, and the whole run's time projected
  from their mean (0: train it whole and score it too, about half an hour).
Prints a table and writes bench/finetune_labels.json (--json).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BITEXT = ROOT.parent / "shared" / "data" / "tickets" / "bitext"
TASK = "register_intent"
TARGET_SECONDS, TARGET_GB = 300, 4.0  # issue 13: 1,000 short examples with 77 labels


def _label(intent: str, tags: str) -> str:
    """'slang_typo_cancel_order': the register first, so no label is a prefix of another (the adapter learns no
    end-of-answer token, so it cannot tell 'cancel_order' from a longer label that starts with it)."""
    return "".join(f"{word}_" for tag, word in (("Q", "slang"), ("Z", "typo")) if tag in tags) + intent


def write_data(folder: Path, n_examples: int, n_labels: int, n_eval: int) -> tuple[Path, Path]:
    """The bench's train and held-out CSVs (columns text, register_intent), class priors kept."""
    from processors.datasets import LabelledExample, sample

    def rows(name: str) -> list[tuple[str, str]]:
        with open(BITEXT / name, newline="", encoding="utf-8") as f:
            return [(r["utterance"], _label(r["intent"], r["tags"] or "")) for r in csv.DictReader(f)]
    train = rows("train.csv")
    kept = {lab for lab, _ in collections.Counter(lab for _, lab in train).most_common(n_labels)}
    paths = []
    for name, rows_, n in (("train", train, n_examples), ("heldout", rows("validation.csv"), n_eval)):
        examples = [LabelledExample(str(i), t, labels={TASK: lab}) for i, (t, lab) in enumerate(rows_) if lab in kept]
        chosen = sample(examples, n, 0, stratify=TASK)
        path = folder / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", TASK])
            writer.writerows((ex.text, ex.labels[TASK]) for ex in chosen)
        paths.append(path)
    return paths[0], paths[1]


def child(train_csv: str, heldout_csv: str, listed: bool, steps: int, workdir: str) -> dict:
    """One layout, trained in this fresh process; scored with llama.cpp when trained whole."""
    started = time.perf_counter()
    from processors.datasets import load_examples
    from processors.finetune.pairs import build_pairs, training_tasks
    from processors.finetune.torch import load_torch_model
    from processors.finetune.train import TrainOptions, add_lora, tokenize_pairs, train_lora
    from schemas.config import load_config

    config = load_config(ROOT / "fixtures" / "sluicegate.toml")
    train = load_examples(train_csv)
    tasks, _ = training_tasks(config, train)
    [task] = [t for t in tasks if t.name == TASK]
    pairs = build_pairs(config, tasks, train, listed={TASK} if listed else ())
    model, tokenizer = load_torch_model(config.small.model)
    options = TrainOptions(threads=2, checkpoint_every=0, stop_after_steps=steps or None)
    tokens = [len(ids) for ids, _ in tokenize_pairs(tokenizer, pairs, options.max_length)]
    loaded = time.perf_counter()
    peft_model, report = train_lora(add_lora(model, options), tokenizer, pairs, options, Path(workdir), progress=False)
    out = {"labels": len(task.labels), "pairs": len(pairs), "mean_tokens": sum(tokens) / len(tokens),
           "steps_done": report.steps - report.resumed_from_step, "steps_total": -(-len(pairs) // options.batch_size),
           "train_seconds": report.seconds, "load_seconds": loaded - started, "loss_first": report.loss_first,
           "loss_last": report.loss_last, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if not steps:
        out.update(score(config, task, peft_model, heldout_csv, listed, Path(workdir)))
    return out


def score(config, task, peft_model, heldout_csv: str, listed: bool, workdir: Path) -> dict:
    """Held-out accuracy / macro-F1 of the exported adapter, answered by the small tier's own code (llama.cpp,
    each document one sequence; a version trained without the list is asked without it)."""
    from processors.datasets import load_examples
    from processors.finetune.export import export_gguf_lora
    from processors.models import load_runtime
    from processors.tasks import label
    from processors.tiers import LoadedTier, predict
    from schemas.records import Document

    export_gguf_lora(peft_model, workdir / "adapter.gguf")
    run = config.model_copy(deep=True)
    run.tasks, run.fields, run.linear = [task], {}, {}
    run.small = run.small.model_copy(update={"adapter": str(workdir / "adapter.gguf"), "contextual_calibration": False,
                                             "tasks_without_options": [] if listed else [task.name]})
    runtime = load_runtime(run.small)
    held = load_examples(heldout_csv)
    docs = [Document(doc_id=ex.example_id, source="tickets", uri=f"heldout#{i}", text=ex.text)
            for i, ex in enumerate(held)]
    started = time.perf_counter()
    predict(docs, LoadedTier(runtime), run.small, run, "small")
    seconds = time.perf_counter() - started
    runtime.close()
    metrics = label.label_metrics([ex.labels[TASK] for ex in held], [d.labels[TASK].label for d in docs])
    return {"heldout": len(held), "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1,
            "scoring_docs_per_s": len(held) / seconds}


def tier0(train_csv: Path, heldout_csv: Path) -> dict:
    from processors.datasets import load_examples
    from processors.linear import LinearLabeler
    from processors.tasks import label

    train, held = load_examples(train_csv), load_examples(heldout_csv)
    labeler = LinearLabeler.fit([ex.text for ex in train], [ex.labels[TASK] for ex in train])
    probs = labeler.predict_proba([ex.text for ex in held])
    metrics = label.label_metrics([ex.labels[TASK] for ex in held], [max(p, key=p.get) for p in probs])
    return {"accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1}


def run_child(train_csv: Path, heldout_csv: Path, listed: bool, steps: int, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "listed" if listed else "bare", "--steps", str(steps),
           "--train-csv", str(train_csv), "--heldout-csv", str(heldout_csv), "--workdir", str(workdir)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--labels", type=int, default=77)
    parser.add_argument("--baseline-steps", type=int, default=12, help="0: train the option-list layout whole")
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--json", default=str(ROOT / "bench" / "finetune_labels.json"))
    parser.add_argument("--child", choices=["listed", "bare"])
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--train-csv")
    parser.add_argument("--heldout-csv")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.train_csv, args.heldout_csv, args.child == "listed", args.steps, args.workdir)))
        return
    with tempfile.TemporaryDirectory(prefix="sluicegate-bench-ft-") as tmp:
        folder = Path(tmp)
        train_csv, heldout_csv = write_data(folder, args.examples, args.labels, args.eval)
        bare = run_child(train_csv, heldout_csv, False, 0, folder / "bare")
        listed = run_child(train_csv, heldout_csv, True, args.baseline_steps, folder / "listed")
        linear = tier0(train_csv, heldout_csv)
    for r in (bare, listed):
        r["seconds_per_step"] = r["train_seconds"] / r["steps_done"]
        r["projected_train_seconds"] = r["seconds_per_step"] * r["steps_total"]
    print(f"{bare['labels']} labels ({TASK}: bitext intent x register), {bare['pairs']} training examples, "
          f"{bare['steps_total']} steps of 8, 2 threads; held out: {bare['heldout']} validation tickets")
    print(f"{'prompt layout':16s} {'tokens/pair':>11s} {'s/step':>7s} {'training s':>11s} {'peak RSS':>9s} "
          f"{'accuracy':>9s} {'macro-F1':>9s}")
    for name, r in (("option list", listed), ("no option list", bare)):
        whole = r["steps_done"] == r["steps_total"]
        seconds = (f"{r['train_seconds']:.0f}" if whole else
                   f"~{r['projected_train_seconds']:.0f}*")
        quality = (f"{r['accuracy']:9.3f} {r['macro_f1']:9.3f}" if "accuracy" in r else f"{'-':>9s} {'-':>9s}")
        print(f"{name:16s} {r['mean_tokens']:11.0f} {r['seconds_per_step']:7.2f} {seconds:>11s} "
              f"{r['peak_rss_gb']:7.2f} GB {quality}")
    print(f"{'tier 0 (TF-IDF)':16s} {'':11s} {'':7s} {'':>11s} {'':>9s}    {linear['accuracy']:9.3f} "
          f"{linear['macro_f1']:9.3f}")
    if listed["steps_done"] < listed["steps_total"]:
        print(f"* projected from its first {listed['steps_done']} steps (peak RSS over those steps only)")
    print(f"speed-up {listed['seconds_per_step'] / bare['seconds_per_step']:.1f}x per step; no option list: "
          f"{bare['train_seconds']:.0f} s training (+{bare['load_seconds']:.0f} s loading), peak "
          f"{bare['peak_rss_gb']:.2f} GB (target: <= {TARGET_SECONDS} s and <= {TARGET_GB:.0f} GB); the adapter "
          f"answers {bare['scoring_docs_per_s']:.1f} held-out tickets/s in llama.cpp")
    Path(args.json).write_text(json.dumps({"task": TASK, "examples": args.examples, "no_option_list": bare,
                                           "option_list": listed, "tier0": linear}, indent=2) + "\n")


if __name__ == "__main__":
    main()
