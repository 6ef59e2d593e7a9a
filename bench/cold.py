"""Cold nightly throughput against the raw bound, peak memory, and whether answers depend on batches.

    uv run python bench/cold.py [--tickets 500] [--repeat 3] [--config fixtures/sluicegate.toml]

In one run, on the same inputs (the shipped configuration, with its promoted model version):
- cold runs: each a fresh process that runs the nightly's Beam graph (processors.pipeline.run_pipeline,
  its batching and order; imports and model loads included) on N bitext validation tickets in one export, and on
  the fixture PDFs; the median of --repeat runs, and the peak RSS of the process;
- the raw bound: one label decision per ticket (the sentiment prompt plus one token) straight through
  llama.cpp, 8 parallel sequences with prompt-cache reuse, the same model and adapter, the same tickets;
  and the same one at a time on one slot, each afresh (the model's own prompt tokens/s);
- tokens: what the prompts hold against what llama.cpp computed (the rest came from the slot's cache);
- determinism: for 24 documents, the largest probability difference between the nightly batch, each
  document alone, shuffled batches, and a rerun;
- PDF text: pages/s of the parser (in-process pypdf) on ../shared/data/pdfs;
- where each cold run's time goes: imports, ingest, each tier's model load and answers, and the rest;
- who decided each label task's and field's answers (tier 0, small, large, review): where the escalations come from;
- the small tier's seconds per item type on the first 120 of the tickets: each label task alone, the fields
  together, and every item together (what tier 0 or a skipped field saves the small model).
Prints a table and writes the figures to bench/cold.json (--json) for comparison across commits.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
DATE = "2026-11-20"


def _config(path: str):
    from schemas.config import load_config
    from schemas.versions import with_model_version

    return with_model_version(load_config(path))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_pipeline(config_path: str, inbox: str, source: str, out: str, small_copies: str = "") -> dict:
    """One cold nightly run of the graph in this (fresh) process: its time from the first import on.
    small_copies: [small] copies set to this instead of the configuration's (the baseline run)."""
    started = time.perf_counter()
    from processors.pipeline import RunSpec, run_pipeline

    imported = time.perf_counter()
    config = _config(config_path)
    if small_copies:
        config = config.model_copy(update={"small": config.small.model_copy(update={"copies": int(small_copies)})})
    inputs = [(str(p), source) for p in sorted(Path(inbox).rglob("*")) if p.is_file()]
    spec = RunSpec(run_id="bench", run_date=DATE, inputs=inputs, sources=[source], config=config,
                   config_hash="bench", out_root=out)
    counters = run_pipeline(spec)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "import_seconds": imported - started, "documents": counters.get("inputs", 0),
            "counters": counters, "peak_rss_mb": _peak_rss_mb(), "decided_by": decided_by_item(out)}


def decided_by_item(out: str) -> dict[str, dict[str, int]]:
    """Per label task and field: how many of its answers each tier decided (where the escalations come from)."""
    from processors.sinks import read_table

    counts: dict[str, dict[str, int]] = {}
    for table, item in (("labels", "task"), ("fields", "field")):
        frame = read_table(out, table, [DATE])
        if not frame.is_empty():
            for name, tier, n in frame.group_by([item, "decided_by"]).len().sort([item, "decided_by"]).iter_rows():
                counts.setdefault(f"{table}:{name}", {})[tier] = n
    return counts


def child_bound(config_path: str, tickets_file: str, sequences: str = "8") -> dict:
    """The raw bound: one label decision per ticket, prompt plus one token, 8 sequences at a time with the
    prompt cache. sequences "1": the same one at a time on one slot, each afresh (the model's own prompt speed,
    without what 8 sequences per decode add), with all of [small] threads. "copies": as the nightly evaluates
    documents, on [small] copies of the model of one slot each, threads split among them, all at once."""
    import threading

    import xllamacpp

    from processors.models.llamacpp import copies_and_threads, server_params
    from processors.tasks import label

    config = _config(config_path)
    task = next(t for t in config.tasks if t.name == "sentiment")
    texts = json.loads(Path(tickets_file).read_text())
    prompts = [label.build_prompt(task, config.small.prompt_style, "tickets", t,
                                  options=label.asks_options(task, config.small)) for t in texts]  # as the tier asks
    copies, threads = copies_and_threads(config.small) if sequences == "copies" else (1, config.small.threads)
    n = 1 if sequences == "copies" else int(sequences)
    params = server_params(config.small.model_copy(update={"threads": threads}))
    if n > 1:
        params.n_parallel = n
        params.n_ctx = config.small.context_per_sequence * n
        params.cache_ram_mib = xllamacpp.CommonParams().cache_ram_mib  # llama.cpp's default host cache (8 GiB)
    started = time.perf_counter()
    servers = [xllamacpp.Server(params) for _ in range(copies)]
    loaded = time.perf_counter()
    counts = [[0.0, 0.0] for _ in servers]  # prompt tokens computed, milliseconds, per copy

    def run(k: int) -> None:
        mine = prompts[k::copies]
        for i in range(0, len(mine), n):
            batch = mine[i:i + n]
            response = servers[k].handle_completions({"prompt": batch if n > 1 else batch[0], "max_tokens": 1,
                                                      "temperature": 0.0, "n_probs": 20, "cache_prompt": n > 1})
            for one in response if isinstance(response, list) else [response]:
                counts[k][0] += (one.get("timings") or {}).get("prompt_n", 0)
                counts[k][1] += (one.get("timings") or {}).get("prompt_ms", 0.0)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(copies)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done = time.perf_counter()
    tokens, milliseconds = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {"tickets": len(prompts), "sequences": n, "copies": copies, "seconds": done - loaded,
            "load_seconds": loaded - started, "per_second": len(prompts) / (done - loaded),
            "peak_rss_mb": _peak_rss_mb(),
            "prompt_tokens_per_second": tokens / (milliseconds / 1000) if n == 1 and milliseconds else None}


def child_determinism(config_path: str, n: int) -> dict:
    """Largest probability difference per document: batch vs alone vs shuffled batches vs a rerun."""
    from processors.ingest import ingest
    from processors.tiers import load_tier, predict
    from schemas.records import Document

    config = _config(config_path)
    docs: list[Document] = []
    for source in ("tickets", "pdf"):
        for path in sorted((ROOT / "fixtures" / "inbox" / source).rglob("*")):
            if path.is_file():
                docs += [r for r in ingest(str(path), source, path.read_bytes(), config) if isinstance(r, Document)]
    docs = docs[:n]
    loaded = load_tier(config, "small")
    batch = config.small.parallel_sequences

    def answers(batches: list[list[int]]) -> dict[str, dict[str, float]]:
        out = {}
        for chunk in batches:
            done = [copy.deepcopy(docs[i]) for i in chunk]
            predict(done, loaded, config.small, config, "small")
            for d in done:
                probs = {f"{k}={lab}": p for k, pred in d.labels.items() for lab, p in pred.probabilities.items()}
                probs |= {f"field:{k}": pred.confidence for k, pred in d.fields.items()}
                out[d.uri + d.doc_id] = probs
        return out

    order = list(range(len(docs)))
    nightly = answers([order[i:i + batch] for i in range(0, len(order), batch)])
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)
    others = [answers([[i] for i in order]), answers([shuffled[i:i + 3] for i in range(0, len(shuffled), 3)]),
              answers([order[i:i + batch] for i in range(0, len(order), batch)])]
    worst = {key: max(abs(other[key].get(k, -1) - v) for other in others for k, v in probs.items())
             for key, probs in nightly.items()}
    return {"documents": len(worst), "max_difference": max(worst.values()),
            "documents_over_1e-6": sum(v > 1e-6 for v in worst.values())}


def child_item_cost(config_path: str, tickets_file: str, n: str = "120") -> dict:
    """The small tier's seconds per item type on the same tickets, asked as the nightly asks them (one sequence
    per document): each label task alone, the fields together, and every item together (a document's text is
    then read once for all of them). Tier 0 is not in front: this is what each item costs the small model."""
    from processors.models import load_runtime
    from processors.tiers import LoadedTier, all_items, predict
    from schemas.records import Document

    config = _config(config_path)
    texts = json.loads(Path(tickets_file).read_text())[:int(n)]

    def documents() -> list[Document]:
        return [Document(doc_id=f"d{i}", source="tickets", uri=f"bench#{i}", text=t) for i, t in enumerate(texts)]

    loaded = LoadedTier(load_runtime(config.small))  # no tier-0 models in front (load_tier would add them)
    items = all_items(documents()[0], config)
    predict(documents()[:8], loaded, config.small, config, "small", [items] * 8)  # the content-free values, once
    fields = tuple(i for i in items if i.startswith("field:"))
    groups = {name: (name,) for name in items if name not in fields} | ({"fields": fields} if fields else {})
    seconds = {}
    for name, asked in (groups | {"all": items}).items():
        docs = documents()
        started = time.perf_counter()
        predict(docs, loaded, config.small, config, "small", [asked] * len(docs))
        seconds[name] = time.perf_counter() - started
    loaded.runtime.close()
    return {"tickets": len(texts), "seconds": seconds}


def child_pdf_pages() -> dict:
    """pypdf's text extraction, pages/s, on the shared sample PDFs (the files it can open)."""
    import pypdf

    pages, started = 0, time.perf_counter()
    for path in sorted((SHARED / "pdfs").rglob("*.pdf")):
        try:
            reader = pypdf.PdfReader(path)
            if reader.is_encrypted:
                continue
            for page in reader.pages:
                page.extract_text()
                pages += 1
        except Exception:  # noqa: BLE001 - a file the parser cannot read is not timed
            continue
    seconds = time.perf_counter() - started
    return {"pages": pages, "seconds": seconds, "pages_per_second": pages / seconds}


def stage_seconds(run: dict) -> dict[str, float]:
    """A pipeline run's time split by stage, from its counters (processors/pipeline.py's ms_* counters)."""
    c = run["counters"]
    stages = {"total": run["seconds"], "imports": run["import_seconds"], "ingest": c.get("ms_ingest", 0) / 1000}
    for tier in ("small", "large"):
        stages[f"{tier}_load"] = c.get(f"ms_{tier}_load", 0) / 1000
        stages[tier] = c.get(f"ms_{tier}_answer", 0) / 1000
    stages["rest"] = stages["total"] - sum(v for k, v in stages.items() if k != "total")
    return stages


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "fixtures" / "sluicegate.toml"))
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--determinism", type=int, default=24, help="documents compared alone/batched/rerun")
    parser.add_argument("--json", default=str(ROOT / "bench" / "cold.json"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = {"pipeline": child_pipeline, "bound": child_bound, "determinism": lambda c, n: child_determinism(
            c, int(n)), "pdf_pages": child_pdf_pages, "item_cost": child_item_cost}[kind](*rest)
        print(json.dumps(result))
        return

    from processors.datasets import load_examples, sample, write_ticket_export
    from schemas.records import TIERS

    work = Path(tempfile.mkdtemp(prefix="sluicegate-bench-"))
    try:
        examples = sample(load_examples(SHARED / "tickets/bitext/validation.csv"), args.tickets, stratify="category")
        write_ticket_export(examples, work / "tickets", files=1)
        (work / "texts.json").write_text(json.dumps([e.text for e in examples]))
        shutil.copytree(ROOT / "fixtures" / "inbox" / "pdf" / DATE, work / "pdf")
        runs: dict[str, list[dict]] = {"tickets": [], "pdf": []}
        for _ in range(args.repeat):
            for source in runs:
                out = work / f"out-{source}-{len(runs[source])}"
                runs[source].append(_child("pipeline", args.config, str(work / source), source, str(out)))
        # The baseline in the same run: the same tickets with one copy of the small model (all its threads)
        one_copy = _child("pipeline", args.config, str(work / "tickets"), "tickets", str(work / "out-one-copy"), "1")
        bound = _child("bound", args.config, str(work / "texts.json"))
        one_sequence = _child("bound", args.config, str(work / "texts.json"), "1")
        copies = _child("bound", args.config, str(work / "texts.json"), "copies")
        determinism = _child("determinism", args.config, str(args.determinism))
        pdf_pages = _child("pdf_pages")
        item_cost = _child("item_cost", args.config, str(work / "texts.json"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures: dict = {"tickets": args.tickets, "repeat": args.repeat, "bound": bound, "one_sequence": one_sequence,
                     "copies": copies, "determinism": determinism,
                     "pdf_pages": pdf_pages, "item_cost": item_cost}
    print(f"{'inputs':10s} {'docs':>5s} {'docs/s (median)':>16s} {'runs':>22s} {'peak RSS MB':>12s} "
          f"{'prompt tok':>11s} {'computed':>9s}")
    for source, results in runs.items():
        rates = [r["documents"] / r["seconds"] for r in results]
        c = results[-1]["counters"]
        prompt = c.get("tokens_small_prompt", 0) + c.get("tokens_large_prompt", 0)
        computed = c.get("tokens_small_computed", 0) + c.get("tokens_large_computed", 0)
        figures[source] = {"documents": results[-1]["documents"], "docs_per_second": statistics.median(rates),
                           "runs": rates, "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                           "prompt_tokens": prompt, "computed_tokens": computed,
                           "escalated_to_large": c.get("decided_large", 0) + c.get("decided_review", 0),
                           "decided_by": results[-1]["decided_by"]}
        print(f"{source:10s} {results[-1]['documents']:5d} {statistics.median(rates):16.2f} "
              f"{', '.join(f'{r:.2f}' for r in rates):>22s} {figures[source]['peak_rss_mb']:12.0f} "
              f"{prompt:11d} {computed:9d}")
    print("where a run's time goes, in seconds (the median run): imports, reading and parsing inputs, each "
          "tier's model load and answers; rest = configuration, graph set-up, routing and writing")
    print(f"{'inputs':10s} {'total':>7s} {'imports':>8s} {'ingest':>7s} {'small load':>11s} {'small':>7s} "
          f"{'large load':>11s} {'large':>7s} {'rest':>7s}")
    for source, results in runs.items():
        median = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
        stages = stage_seconds(median)
        figures[source]["stage_seconds"] = stages
        print(f"{source:10s} " + " ".join(f"{stages[k]:{w}.1f}" for k, w in (
            ("total", 7), ("imports", 8), ("ingest", 7), ("small_load", 11), ("small", 7), ("large_load", 11),
            ("large", 7), ("rest", 7))))
    print("who decided each item's answers (the last run): linear / small / large / review")
    for source in runs:
        print(f"{source:10s} " + "; ".join(f"{item} " + "/".join(str(d.get(t, 0)) for t in TIERS)
                                          for item, d in figures[source]["decided_by"].items()))
    one_copy_stages = stage_seconds(one_copy)
    figures["tickets_one_copy"] = {"docs_per_second": one_copy["documents"] / one_copy["seconds"],
                                   "peak_rss_mb": one_copy["peak_rss_mb"], "stage_seconds": one_copy_stages}
    print(f"baseline, the same tickets with [small] copies = 1 (one run): "
          f"{figures['tickets_one_copy']['docs_per_second']:.2f} docs/s, small tier {one_copy_stages['small']:.1f} s, "
          f"large {one_copy_stages['large']:.1f} s, peak RSS {one_copy['peak_rss_mb']:.0f} MB")
    ratio = figures["tickets"]["docs_per_second"] / bound["per_second"]
    figures["tickets"]["share_of_bound"] = ratio
    print(f"raw bound: {bound['per_second']:.2f} tickets/s (one label, 8 sequences, prompt cache; "
          f"{bound['tickets']} tickets in {bound['seconds']:.1f} s); nightly tickets at {ratio:.1%} of it")
    print(f"the same one at a time on one slot, each afresh: {one_sequence['per_second']:.2f} tickets/s; the small "
          f"model computes {one_sequence['prompt_tokens_per_second']:.0f} prompt tokens/s")
    print(f"the same on {copies['copies']} copies of one slot each ([small] copies, as the nightly): "
          f"{copies['per_second']:.2f} tickets/s ({copies['per_second'] / one_sequence['per_second']:.2f}x one copy)")
    print(f"determinism: {determinism['documents']} documents, largest probability difference "
          f"{determinism['max_difference']:.2e} (batch vs alone vs shuffled vs rerun), "
          f"{determinism['documents_over_1e-6']} over 1e-6")
    print(f"PDF text (pypdf): {pdf_pages['pages_per_second']:.1f} pages/s ({pdf_pages['pages']} pages)")
    print(f"small tier, seconds per item type on {item_cost['tickets']} of the tickets (each alone; 'all' together): "
          + ", ".join(f"{k} {v:.1f}" for k, v in item_cost["seconds"].items()))
    Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
