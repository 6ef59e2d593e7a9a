"""Small-tier throughput on the bundled fixtures: one document per call (baseline) vs batched decoding.

    uv run python bench/small_tier.py [--config fixtures/sluicegate.toml] [--repeat 2]

Prints documents per second for each mode, measured in the same run on the same documents, and
how many items each mode would escalate (the two must agree closely: batching must not change answers).
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

ROOT = Path(__file__).resolve().parent.parent


def fixture_documents(config) -> list[Document]:
    docs = []
    for source in ("tickets", "pdf"):
        for path in sorted((ROOT / "fixtures" / "inbox" / source).rglob("*")):
            if path.is_file():
                docs += [r for r in ingest(str(path), source, path.read_bytes(), config) if isinstance(r, Document)]
    return docs


def run(docs: list[Document], loaded: LoadedTier, config, batch_size: int) -> tuple[float, int]:
    docs = copy.deepcopy(docs)
    started = time.perf_counter()
    for i in range(0, len(docs), batch_size):
        predict(docs[i:i + batch_size], loaded, config.small, config, "small")
    elapsed = time.perf_counter() - started
    for d in docs:
        apply_route(d, config, "small")
    escalated = sum(1 for d in docs for t in d.decided_by.values() if t != "small")
    return len(docs) / elapsed, escalated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "fixtures" / "sluicegate.toml"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    config = load_config(args.config)
    docs = fixture_documents(config)
    t = time.perf_counter()
    loaded = LoadedTier(load_runtime(config.small))
    print(f"model {loaded.runtime.version} loaded in {time.perf_counter() - t:.1f}s; {len(docs)} documents "
          f"({sum(d.source == 'tickets' for d in docs)} tickets, {sum(d.source == 'pdf' for d in docs)} PDFs)")
    run(docs[:2], loaded, config, 2)  # warm-up: content-free calibration and caches
    batch = config.small.parallel_sequences
    for label, size in (("baseline: one document per call", 1), (f"batched: {batch} documents per call", batch)):
        rates = [run(docs, loaded, config, size) for _ in range(args.repeat)]
        best = max(r for r, _ in rates)
        print(f"{label:40s} {best:6.2f} docs/s (runs: {', '.join(f'{r:.2f}' for r, _ in rates)}); "
              f"escalated items {rates[-1][1]}")


if __name__ == "__main__":
    main()
