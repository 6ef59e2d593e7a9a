"""A night on one process ([engine] kind = "local") against a dask.distributed LocalCluster (kind = "dask", 2
workers of 1 thread, llama.cpp 1 thread per model), on the same generated day of bitext tickets.

    uv run python bench/scale_out.py [--tickets 500] [--files 10] [--config fixtures/sluicegate.toml]

Each run is a fresh `sluicegate run` process (cold: models loaded, for dask the cluster started, inside the
measured time), one after another on the same inbox, each into its own empty output root. Prints documents/s
per engine, measured end to end (the command) and inside the flow (discover to read-back check), and writes
bench/scale_out.json beside it. Both runs share this machine's cores: this measures the engine's overhead
and balance, not what more machines add.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processors.datasets import load_examples, sample, write_ticket_export

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-21"


def run_engine(engine: str, config: str, inbox: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "flows.cli", "run", "--config", config, "--date", DAY, "--inbox", str(inbox),
               "--out", str(out), "--sources", "tickets", "--engine", engine, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    docs = summary["n_results"] + summary["n_errors"]
    return {"engine": engine, "documents": docs, "wall_seconds": round(wall, 1), "flow_seconds": summary["seconds"],
            "docs_per_second_wall": round(docs / wall, 3), "docs_per_second_flow": round(docs / summary["seconds"], 3),
            "shards": len(summary["shards"]), "decided_by": summary["decided_by"],
            "escalation_rate": summary["escalation_rate"], "invariant_ok": summary["invariant_ok"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--files", type=int, default=10, help="ticket exports the day is split into")
    parser.add_argument("--config", default=str(ROOT / "fixtures" / "sluicegate.toml"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/tickets/bitext/validation.csv"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "scale_out.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluicegate-scale-") as tmp:
        inbox = Path(tmp) / "inbox"
        examples = sample(load_examples(args.data), args.tickets, stratify="category")
        write_ticket_export(examples, inbox / "tickets" / DAY, files=args.files)
        rows = [run_engine(engine, args.config, inbox, Path(tmp) / f"out-{engine}") for engine in ("local", "dask")]
    local, dask = rows
    print(f"{args.tickets} bitext tickets in {args.files} exports, {os.cpu_count()} cores, config {args.config}\n")
    print("| engine | documents | shards | wall s | docs/s (wall) | flow s | docs/s (flow) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['documents']} | {r['shards']} | {r['wall_seconds']} | "
              f"{r['docs_per_second_wall']} | {r['flow_seconds']} | {r['docs_per_second_flow']} |")
    print(f"\ndask / local (flow): {dask['docs_per_second_flow'] / local['docs_per_second_flow']:.2f}x")
    Path(args.json).write_text(json.dumps({"tickets": args.tickets, "files": args.files, "cores": os.cpu_count(),
                                           "config": args.config, "runs": rows}, indent=2) + "\n")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
