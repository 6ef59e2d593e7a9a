"""Small-tier throughput on the bundled fixtures: one document per call (baseline) vs batched decoding,
and batched without prompt-cache reuse ([small] reuse_prompt_cache = false).

    uv run python bench/small_tier.py [--config fixtures/sluicegate.toml] [--repeat 2]

Prints documents per second for each mode, measured in the same run on the same documents, and
how many items each mode would escalate (the modes must agree closely: batching must not change answers),
and how many labels changed between the repeated runs of a mode (history dependence of the prompt cache).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from processors.ingest import ingest
from processors.models import load_runtime
from processors.tiers import LoadedTier, apply_route, predict
from schemas.config import load_config
from schemas.records import Document
from schemas.versions import with_model_version

ROOT = Path(__file__).resolve().parent.parent


def fixture_documents(config) -> list[Document]:
    docs = []
    for source in ("tickets", "pdf"):
        for path in sorted((ROOT / "fixtures" / "inbox" / source).rglob("*")):
            if path.is_file():
                docs += [r for r in ingest(str(path), source, path.read_bytes(), config) if isinstance(r, Document)]
    return docs


def run(docs: list[Document], loaded: LoadedTier, config, batch_size: int) -> tuple[float, int, list]:
    docs = copy.deepcopy(docs)
    started = time.perf_counter()
    for i in range(0, len(docs), batch_size):
        predict(docs[i:i + batch_size], loaded, config.small, config, "small")
    elapsed = time.perf_counter() - started
    for d in docs:
        apply_route(d, config, "small")
    escalated = sum(1 for d in docs for t in d.decided_by.values() if t != "small")
    labels = [(d.uri, task, p.label) for d in docs for task, p in sorted(d.labels.items())]
    return len(docs) / elapsed, escalated, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "fixtures" / "sluicegate.toml"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    config = with_model_version(load_config(args.config))
    docs = fixture_documents(config)
    t = time.perf_counter()
    loaded = LoadedTier(load_runtime(config.small))
    print(f"model {loaded.runtime.version} loaded in {time.perf_counter() - t:.1f}s; {len(docs)} documents "
          f"({sum(d.source == 'tickets' for d in docs)} tickets, {sum(d.source == 'pdf' for d in docs)} PDFs)")
    fresh_config = config.model_copy(deep=True)
    fresh_config.small.reuse_prompt_cache = False
    fresh = LoadedTier(load_runtime(fresh_config.small))
    for warm in (loaded, fresh):
        run(docs[:2], warm, config, 2)  # warm-up: content-free calibration and caches
    batch = config.small.parallel_sequences
    modes = (("baseline: one document per call", loaded, 1), (f"batched: {batch} documents per call", loaded, batch),
             ("batched, no prompt-cache reuse", fresh, batch))
    for name, tier, size in modes:
        runs = [run(docs, tier, config, size) for _ in range(args.repeat)]
        best = max(r for r, _, _ in runs)
        changed = sum(a != b for a, b in zip(runs[0][2], runs[-1][2], strict=True))
        print(f"{name:40s} {best:6.2f} docs/s (runs: {', '.join(f'{r:.2f}' for r, _, _ in runs)}); "
              f"escalated items {runs[-1][1]}; labels changed between runs {changed}/{len(runs[0][2])}")


if __name__ == "__main__":
    main()
