"""Cost of parsing PDFs in the deadline-bounded worker process vs in the caller's process.

    uv run python bench/ingest_pdf_worker.py [--repeat 3]

Same files, same run: the bundled fixture PDFs and ../shared/data/pdfs/sample-files. Prints the worker's
start-up (once per calling process, and again after a file hit a limit), the total and per-document
time of both modes, and the overhead per document (pickling the bytes and the Document across a pipe).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from processors.ingest.isolate import run_isolated, shutdown
from processors.ingest.pdf import parse_pdf, read_pdf
from schemas.config import PdfOptions

ROOT = Path(__file__).resolve().parent.parent


def files() -> list[tuple[str, bytes]]:
    paths = sorted((ROOT / "fixtures" / "inbox" / "pdf").rglob("*.pdf"))
    paths += sorted((ROOT.parent / "shared" / "data" / "pdfs" / "sample-files").rglob("*.pdf"))
    return [(str(p), p.read_bytes()) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = files()
    options = PdfOptions()
    starts = []
    for _ in range(3):
        shutdown()
        t = time.perf_counter()
        run_isolated(len, b"", seconds=60, memory_mb=options.max_memory_mb)
        starts.append(time.perf_counter() - t)
    inline, isolated = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        a = [parse_pdf(uri, data, options) for uri, data in docs]
        inline.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = [read_pdf(uri, data, options) for uri, data in docs]
        isolated.append(time.perf_counter() - t)
        assert [type(x).__name__ for x in a] == [type(x).__name__ for x in b], "modes disagree"
    n, mb = len(docs), sum(len(d) for _, d in docs) / 1e6
    best_in, best_iso = min(inline), min(isolated)
    print(f"{n} PDFs, {mb:.1f} MB, best of {args.repeat}")
    print(f"worker start-up: median {statistics.median(starts):.2f} s (once per process, and after a kill)")
    print(f"in-process:      {best_in:.2f} s  ({best_in / n * 1000:.1f} ms/doc)")
    print(f"worker process:  {best_iso:.2f} s  ({best_iso / n * 1000:.1f} ms/doc)")
    print(f"overhead:        {(best_iso - best_in) / n * 1000:+.1f} ms/doc ({(best_iso / best_in - 1) * 100:+.0f}%)")


if __name__ == "__main__":
    main()
